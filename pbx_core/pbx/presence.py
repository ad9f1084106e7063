"""Busy lamp fields and presence: the `dialog` (RFC 4235) and `presence` (RFC 3856,
PIDF RFC 3863 with RPID RFC 4480) event packages of the notifier (subscriptions.py).

Who may watch what: any extension of ours may watch any extension (its colleagues'
lamps) and, for `dialog`, a resource a feature lights (`Feature.lamp`: park's slots
71-78); anything else is 404.

`dialog` bodies (application/dialog-info+xml, `state="full"`, `version` counted per
subscription): one `<dialog>` per call the extension is in (at most MAX_DIALOGS),
`early` while it rings (once the phone said so, 180/183; direction `recipient`, the
caller's identity and display name in `<remote><identity>`, which Yealink, Polycom, Snom
and Grandstream lamp keys show) or while it calls out (`initiator`), `confirmed` once
answered; with no call, one `<dialog>` in state `terminated` (as Asterisk sends an idle
lamp). The `call-id`, `local-tag` (the watched phone's tag) and `remote-tag` (ours)
attributes name our dialog with that phone: a lamp key's INVITE with `Replaces:
call-id;to-tag=..;from-tag=..` (either way round) finds it (call_ops `_replaced_dialog`)
and picks the ringing call up (call_pickup.py). A feature's resource (a park slot):
`confirmed` while busy, else `terminated`.

`presence` bodies (application/pidf+xml): `open` while the extension has a live
registration, else `closed`; `<rpid:on-the-phone/>` while it is in a call, `<rpid:busy/>`
while do not disturb is on (the dnd feature's toggle, read through the feature host).

Changes: the engine and the call manager `poke()` on anything that may change a lamp
(a request handled but OPTIONS and SUBSCRIBE, a callee's response, an INVITE sent, a
call ended, a toggle set, a feature's `lamp_changed`); the pokes of one burst are
coalesced (COALESCE seconds), then each watched resource's state (`state_key`: its
dialogs; registered, in a call, DND) is compared with the last one sent: only a
changed resource's body is rendered, once, and sent to all its subscriptions
(`notify_all` through the notifier's index by resource: queued per subscription,
never waiting on a phone). Registrations
that expire say nothing: while presence is watched a poke comes every RECHECK seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pbx_core.features.api import Lamp
from pbx_core.pbx.call_state import Call, State
from pbx_core.pbx.subscriptions import VERSION, Subscriptions
from pbx_core.sip.errors import SipError

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.presence")

DIALOG = "dialog"
# XML text and attribute values. Not xml.sax.saxutils: the firmware's frozen `pbx`
# leaves the xml package out (firmware/build-image.sh). Characters XML 1.0 does not
# allow (C0 controls but tab, LF, CR: a display name from the network may hold them)
# are dropped, so a body is always well-formed.
_XML_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_XML_ATTR = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
    | {"\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}
)
_NOT_XML = dict.fromkeys(c for c in range(32) if c not in (9, 10, 13))


def escape(text: str) -> str:
    return text.translate(_NOT_XML).translate(_XML_TEXT)


def quoteattr(text: str) -> str:
    return '"' + text.translate(_NOT_XML).translate(_XML_ATTR) + '"'


DIALOG_TYPE = "application/dialog-info+xml"
PRESENCE = "presence"
PIDF_TYPE = "application/pidf+xml"
DEFAULT_EXPIRES = 3600  # RFC 4235 §3.3, RFC 3856 §6.4
COALESCE = 0.02  # seconds: the pokes of one burst make one round of NOTIFYs
RECHECK = 30.0  # seconds between rounds while presence is watched (registrations expire)
MAX_DIALOGS = 8  # <dialog> elements in one body
MAX_NAME = 64  # characters of a display name or number shown


@dataclass(frozen=True, slots=True)
class Line:
    """One dialog of a watched extension, as its lamp shows it."""

    id: str
    state: str  # early | confirmed
    direction: str  # initiator | recipient
    call_id: str
    local_tag: str  # the watched phone's tag ("" before it answered anything)
    remote_tag: str  # ours
    other: str  # the other party's number
    other_name: str  # and display name ("" when none)


def _user(label: str) -> str:
    """The number of a leg's label: `100@pbx.local` or `trunk:0301234`."""
    if ":" in label and "@" not in label:
        return label.partition(":")[2]
    return label.partition("@")[0]


class Lamps:
    """Both packages over one view of the calls; `poke()` when something changed."""

    def __init__(
        self,
        subs: Subscriptions,
        calls: CallManager,
        *,
        extension_of: Callable[[str], str | None],
        is_extension: Callable[[str], bool],
        registered: Callable[[str], bool],
        dnd: Callable[[str], bool],
        feature_lamp: Callable[[str], Lamp | None],
        domain: Callable[[], str],
    ) -> None:
        self.subs = subs
        self.calls = calls
        self.loop: asyncio.AbstractEventLoop = subs.loop
        self.extension_of = extension_of
        self.is_extension = is_extension
        self.registered = registered
        self.dnd = dnd
        self.feature_lamp = feature_lamp
        self.domain = domain
        self.dialog = DialogPackage(self)
        self.presence = PresencePackage(self)
        # (event, resource) -> what its last body said (a `state_key`): a round renders
        # and sends only the resources whose key changed.
        self._last: dict[tuple[str, str], object] = {}
        self._round: asyncio.TimerHandle | None = None
        self._recheck: asyncio.TimerHandle | None = None
        self.rounds = 0  # rounds that notified something (status, tests)

    # ------------------------------------------------------------------ changes
    def poke(self) -> None:
        """Something may have changed a lamp: a round soon (one per burst)."""
        if self._round is None and self.subs.subs:
            self._round = self.loop.call_later(COALESCE, self._flush)

    def close(self) -> None:
        for handle in (self._round, self._recheck):
            if handle is not None:
                handle.cancel()
        self._round = self._recheck = None

    def _flush(self) -> None:
        self._round = None
        watched = [k for k in self.subs.watchers if k[0] in (DIALOG, PRESENCE)]
        if len(self._last) > len(watched):
            keep = set(watched)
            for gone in [k for k in self._last if k not in keep]:
                del self._last[gone]
        lines = self.lines() if watched else {}
        changed = 0
        for event, resource in watched:
            package = self.dialog if event == DIALOG else self.presence
            try:
                key = package.state_key(resource, lines)
            except SipError:
                continue  # gone: the subscription ends at its refresh or a reload's recheck
            if self._last.get((event, resource)) != key:
                self._last[(event, resource)] = key
                self.subs.notify_all(event, resource, package.render(resource, key))
                changed += 1
        if changed:
            self.rounds += 1
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        if any(event == PRESENCE for event, _r in watched):
            self._recheck = self.loop.call_later(RECHECK, self.poke)

    def remember(self, event: str, resource: str, key: object) -> None:
        """A subscription's first NOTIFY says `key`: later rounds compare with it."""
        self._last[(event, resource)] = key

    # ------------------------------------------------------------------ the calls
    def lines(self) -> dict[str, list[Line]]:
        """Each extension's dialogs now."""
        out: dict[str, list[Line]] = {}
        for call in self.calls.calls.values():
            self._call_lines(call, out)
        return out

    def _call_lines(self, call: Call, out: dict[str, list[Line]]) -> None:
        if call.state is State.ENDED:
            return
        answered = call.answered
        a = call.a_dialog
        caller = self.extension_of(call.caller)
        if caller is not None:
            out.setdefault(caller, []).append(
                Line(
                    f"{call.id}-a",
                    "confirmed" if answered is not None or call.endpoint else "early",
                    "initiator",
                    a.call_id if a is not None else call.a_req.call_id,
                    a.remote_tag or "" if a is not None else call.a_req.from_.tag or "",
                    call.a_tag,
                    _user(call.callee)[:MAX_NAME],
                    "",
                )
            )
        name = (call.a_req.from_.display or "")[:MAX_NAME]
        shown = getattr(getattr(call.routing, "info", None), "caller_number", None)
        number = str(shown or _user(call.caller))[:MAX_NAME]
        if answered is not None:
            callee = self.extension_of(answered.target.label)
            if callee is not None:
                d = answered.dialog
                out.setdefault(callee, []).append(
                    Line(
                        f"{call.id}-b",
                        "confirmed",
                        "recipient",
                        d.call_id,
                        d.remote_tag or "",
                        d.local_tag,
                        number,
                        name,
                    )
                )
            return
        if call.a_final_sent or call.state not in (State.ROUTING, State.RINGING):
            return
        for n, fork in enumerate(call.forks):
            if fork.final is not None or fork.cancelled or fork.step != call.step:
                continue
            if not fork.provisional:  # not ringing yet: its tag is not known either
                continue
            callee = self.extension_of(fork.target.label)
            if callee is None:
                continue
            d = fork.dialog
            out.setdefault(callee, []).append(
                Line(
                    f"{call.id}-{n}",
                    "early",
                    "recipient",
                    d.call_id,
                    d.remote_tag or "",
                    d.local_tag,
                    number,
                    name,
                )
            )

    # ------------------------------------------------------------------ who may watch
    def check(self, event: str, resource: str) -> Lamp | None:
        """A feature's lamp for `resource`, None for an extension; SipError 404 else."""
        if self.is_extension(resource):
            return None
        lamp = self.feature_lamp(resource) if event == DIALOG else None
        if lamp is None:
            raise SipError(f"no {event} to watch at {resource[:16]}", 404)
        return lamp


class DialogPackage:
    """`dialog` (RFC 4235): busy lamp fields."""

    event = DIALOG
    content_type = DIALOG_TYPE
    default_expires = DEFAULT_EXPIRES
    versioned = True

    def __init__(self, lamps: Lamps) -> None:
        self.lamps = lamps

    def state(self, username: str, resource: str) -> bytes:
        key = self.state_key(resource, self.lamps.lines())
        self.lamps.remember(DIALOG, resource, key)
        return self.render(resource, key)

    def state_key(self, resource: str, lines: dict[str, list[Line]]) -> tuple[Line, ...]:
        """The resource's dialogs now (SipError 404: nothing to watch there)."""
        lamp = self.lamps.check(DIALOG, resource)
        if lamp is not None:  # a feature's resource (a park slot)
            if not lamp.busy:
                return ()
            return (Line(resource, "confirmed", "recipient", "", "", "", lamp.other_number, ""),)
        return tuple(lines.get(resource, ())[:MAX_DIALOGS])

    def render(self, resource: str, key: object) -> bytes:
        domain = self.lamps.domain()
        assert isinstance(key, tuple)  # noqa: S101  # state_key's
        return _dialog_info(f"sip:{resource}@{domain}", domain, key)


def _dialog_info(entity: str, domain: str, lines: Iterable[Line]) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="'
        + VERSION.decode()
        + f'" state="full" entity={quoteattr(entity)}>',
    ]
    any_line = False
    for line in lines:
        any_line = True
        attrs = f"id={quoteattr(line.id)}"
        if line.call_id:
            attrs += f" call-id={quoteattr(line.call_id)}"
            if line.local_tag:
                attrs += f" local-tag={quoteattr(line.local_tag)}"
            attrs += f" remote-tag={quoteattr(line.remote_tag)}"
        attrs += f' direction="{line.direction}"'
        out.append(f"<dialog {attrs}>")
        out.append(f"<state>{line.state}</state>")
        out.append(f"<local><identity>{escape(entity)}</identity>")
        out.append(f"<target uri={quoteattr(entity)}/></local>")
        if line.other:
            other = escape(f"sip:{line.other}@{domain}")
            display = f" display={quoteattr(line.other_name)}" if line.other_name else ""
            out.append(f"<remote><identity{display}>{other}</identity>")
            out.append(f'<target uri="{other}"/></remote>')
        out.append("</dialog>")
    if not any_line:  # idle: as Asterisk says it, one dialog terminated
        ident = quoteattr(entity.partition(":")[2].partition("@")[0])
        out.append(f'<dialog id={ident} direction="recipient"><state>terminated</state></dialog>')
    out.append("</dialog-info>")
    return ("\n".join(out) + "\n").encode()


class PresencePackage:
    """`presence` (RFC 3856): open/closed, on the phone, busy (DND)."""

    event = PRESENCE
    content_type = PIDF_TYPE
    default_expires = DEFAULT_EXPIRES

    def __init__(self, lamps: Lamps) -> None:
        self.lamps = lamps

    def state(self, username: str, resource: str) -> bytes:
        key = self.state_key(resource, self.lamps.lines())
        self.lamps.remember(PRESENCE, resource, key)
        return self.render(resource, key)

    def state_key(self, resource: str, lines: dict[str, list[Line]]) -> tuple[bool, bool, bool]:
        """(registered, in a call, DND) now (SipError 404: no such extension)."""
        lamps = self.lamps
        lamps.check(PRESENCE, resource)
        return (lamps.registered(resource), bool(lines.get(resource)), lamps.dnd(resource))

    def render(self, resource: str, key: object) -> bytes:
        assert isinstance(key, tuple)  # noqa: S101  # state_key's
        registered, on_the_phone, dnd = key
        entity = quoteattr(f"sip:{resource}@{self.lamps.domain()}")
        basic = "open" if registered else "closed"
        activity, note = "", "Available" if registered else "Offline"
        if dnd:
            activity, note = "<rpid:busy/>", "Do not disturb"
        if on_the_phone:
            activity, note = "<rpid:on-the-phone/>", "On the phone"
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
            ' xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"'
            f' xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity={entity}>',
            f'<tuple id="t{escape(resource)}"><status><basic>{basic}</basic></status>'
            f"<contact>{escape(entity[1:-1])}</contact></tuple>",
        ]
        if activity:
            out.append(
                f'<dm:person id="p{escape(resource)}"><rpid:activities>{activity}'
                "</rpid:activities></dm:person>"
            )
        out.append(f"<note>{note}</note>")
        out.append("</presence>")
        return ("\n".join(out) + "\n").encode()
