"""SIP-specific event notification (RFC 6665), the notifier side, shared by every
event package the PBX serves (`message-summary`: mwi.py; `dialog` and `presence`
for busy lamp fields and presence: presence.py).

An authenticated SUBSCRIBE (the engine checks the digest as for INVITE) names an
event package (`Event`) and a resource (the Request-URI's user: a mailbox, an
extension). The package says whether the subscriber may watch it and what its state
is now (`Package.state`: the body, or the SipError to answer). Then:

- no Event, or one we do not serve: 489 Bad Event with Allow-Events;
- Expires: absent -> the package's default; above MAX_EXPIRES -> lowered to it;
  below MIN_EXPIRES (and not 0) -> 423 Interval Too Brief with Min-Expires;
  0 -> a fetch: 200, one NOTIFY with the state and `terminated;reason=timeout`;
- else 200 (RFC 6665 §4.2.1.1: not 202) with Expires and Contact, then at once a
  NOTIFY with the state (`Subscription-State: active;expires=N`), and one on every
  change (`notify_all`); a refresh (an in-dialog SUBSCRIBE) sets a new expiry and
  is answered the same way (Expires: 0 ends the subscription);
- at expiry: a last NOTIFY `terminated;reason=timeout`; a resource that is gone
  (a reload took the mailbox away, `recheck`): `terminated;reason=noresource`;
- a NOTIFY answered 408 or 481, or not at all (Timer F), ends the subscription
  (§4.2.2); one NOTIFY in flight per subscription: a change meanwhile is sent when
  it is answered (the latest state only);
- an in-dialog SUBSCRIBE for a dialog we do not have: 481 (the engine).

The dialog is a UAS dialog as the calls keep (dialog.py): the route set from
Record-Route (copied into the 200), the remote target from Contact, requests sent
to the address the SUBSCRIBE came from (the NAT-side one) or the first loose route.
A refresh is not challenged again: its dialog identifiers (Call-ID, both tags) are
known only to the subscriber, as for the calls' in-dialog requests.

Bounded: `max_per_user` subscriptions per subscriber (403 beyond) and `max_total`
in all (503 with Retry-After beyond; the settings `sub_max_per_extension` and
`sub_max_total`, MAX_PER_USER and MAX_TOTAL by default); a new SUBSCRIBE from the
same contact for the same event and resource replaces the old one (a phone that
rebooted). RAM only: after a restart the phones subscribe again (they refresh well
before expiry, and an unknown dialog's 481 makes them start over).

A package whose bodies carry a per-subscription counter (dialog-info's `version`,
RFC 4235 §4.1: 0 in the first NOTIFY, one more in each next) sets `versioned` and
writes VERSION where the number goes: the same body serves every subscription of a
resource, each NOTIFY gets its subscription's own number.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from pbx_core.pbx.dialog import Dialog
from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip.errors import ParseError, SipError
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import unescape
from pbx_core.transport.manager import Address

log = logging.getLogger("pbx.subscriptions")

MIN_EXPIRES = 60  # seconds: shorter asks get 423 with Min-Expires
MAX_EXPIRES = 3600  # longer asks are lowered to it
MAX_PER_USER = 64  # subscriptions one subscriber may hold (a phone's lamps and keys)
MAX_TOTAL = 6000  # subscriptions in all (RAM: about 1.6 kB each, bench_presence.py)
MAX_RESOURCE = 64  # characters of a resource name (the Request-URI's user)
RETRY_AFTER = 60  # seconds, with the 503 when MAX_TOTAL is reached
ENDING = frozenset({408, 481})  # a NOTIFY answered so ends the subscription (§4.2.2)
VERSION = b"{version}"  # a versioned package's body: each subscription's own counter


class Package(Protocol):
    """An event package the notifier serves."""

    event: str  # the Event token (`message-summary`)
    content_type: str  # of the NOTIFY bodies
    default_expires: int  # when the SUBSCRIBE has no Expires

    def state(self, username: str, resource: str) -> bytes:
        """The resource's state now, as a NOTIFY body, for subscriber `username`;
        SipError (403 not yours, 404 no such resource) when it may not watch it."""
        ...


@dataclass(eq=False)
class Subscription:
    id: int
    username: str  # the authenticated subscriber
    package: Package
    resource: str
    dialog: Dialog
    source: Address  # where the SUBSCRIBE came from
    expires_at: float
    timer: asyncio.TimerHandle | None = None
    in_flight: bool = False  # a NOTIFY awaits its answer
    pending: bytes | None = None  # the state to send when it is answered
    ended: bool = False
    notifies: int = field(default=0)
    version: int = 0  # the next body's version (a `versioned` package's)

    def contact_key(self) -> tuple[str, str, str, str]:
        return (self.username, self.package.event, self.resource, str(self.dialog.remote_target))


class Subscriptions:
    def __init__(
        self,
        stack: SipServer,
        loop: asyncio.AbstractEventLoop,
        contact: Callable[[Address], str],
        is_our_host: Callable[[str], bool],
    ) -> None:
        self.stack = stack
        self.loop = loop
        self.contact = contact  # our Contact for a peer (calls.py's)
        self.is_our_host = is_our_host
        self.packages: dict[str, Package] = {}
        self.subs: dict[tuple[str, str], Subscription] = {}  # (Call-ID, our tag)
        # (event, resource) -> its subscriptions: a change reaches its watchers without
        # a walk over all of them (6000 lamp keys).
        self.watchers: dict[tuple[str, str], dict[int, Subscription]] = {}
        self.by_user: dict[str, dict[int, Subscription]] = {}  # the caps, a replaced one
        self._ids = itertools.count(1)
        self.max_per_user = MAX_PER_USER  # the settings (engine.py), these by default
        self.max_total = MAX_TOTAL

    def add_package(self, package: Package) -> None:
        self.packages[package.event] = package

    # ------------------------------------------------------------------ SUBSCRIBE
    def subscribe(self, req: Request, source: Address, key: AnyServerKey, username: str) -> None:
        """An out-of-dialog SUBSCRIBE from authenticated `username`."""
        try:
            package = self._package(req)
            resource = self._resource(req)
            expires = self._expires(req, package)
            body = package.state(username, resource)
            self._accepts(req, package)
        except SipError as err:  # ParseError is one
            self._refuse(req, key, err)
            return
        tag = secrets.token_hex(6)
        dialog = Dialog.as_uas(req, tag, source, self.contact(source))
        sub = Subscription(next(self._ids), username, package, resource, dialog, source, 0.0)
        if expires:
            refusal = self._room(sub)
            if refusal is not None:
                self._refuse(req, key, refusal)
                return
        self.stack.respond(key, self._ok(req, sub, expires, tag))
        if not expires:  # a fetch (RFC 6665 §4.4.3): the state once, then terminated
            sub.ended = True
            self._send(sub, body, "terminated;reason=timeout")
            return
        self.subs[(dialog.call_id, tag)] = sub
        self.watchers.setdefault((package.event, resource), {})[sub.id] = sub
        self.by_user.setdefault(username, {})[sub.id] = sub
        self._arm(sub, expires)
        self._send(sub, body, self._active(sub))

    def in_dialog(self, req: Request, source: Address, key: AnyServerKey) -> bool:
        """A request within one of our subscription dialogs (a refresh or an
        unsubscribe); False when it belongs to none."""
        try:
            sub = self.subs.get((req.call_id, req.to.tag or ""))
        except ParseError:
            return False
        if sub is None or sub.dialog.remote_tag != req.from_.tag:
            return False
        if req.method != "SUBSCRIBE":
            resp = req.reply(405)
            resp.headers.add("Allow", "SUBSCRIBE")
            self.stack.respond(key, resp)
            return True
        if req.cseq.seq <= sub.dialog.remote_cseq:
            self.stack.respond(key, self._reply(req, 500, "CSeq out of order"))
            return True
        try:
            self._same_event(req, sub)
            expires = self._expires(req, sub.package)
            body = sub.package.state(sub.username, sub.resource)
        except SipError as err:
            if err.status in (403, 404):  # the resource went away, or is no longer theirs
                self.stack.respond(key, self._reply(req, 481, err.reason))
                self._end(sub, "noresource", None)
                return True
            self._refuse(req, key, err)
            return True
        sub.dialog.remote_cseq = req.cseq.seq
        sub.source = source
        sub.dialog.peer = source  # the phone's NAT binding may have moved
        self.stack.respond(key, self._ok(req, sub, expires, sub.dialog.local_tag))
        if not expires:
            self._end(sub, "timeout", body)
            return True
        self._arm(sub, expires)
        self._queue(sub, body)
        return True

    # ------------------------------------------------------------------ changes
    def notify_all(self, event: str, resource: str, body: bytes) -> int:
        """The resource's state changed: a NOTIFY to each of its subscriptions (or
        queued behind the one in flight); how many subscriptions there were."""
        found = list(self.watchers.get((event, resource), {}).values())
        for sub in found:
            self._queue(sub, body)
        return len(found)

    def watching(self, event: str, username: str, uri: str, source: Address) -> bool:
        """Whether `username` holds a subscription to `event` on its own resource
        from this contact (its URI, or the address it registered from): such a phone
        gets no unsolicited NOTIFY (mwi.py)."""
        return any(
            s.package.event == event
            and s.resource == username
            and (str(s.dialog.remote_target) == uri or s.source == source)
            for s in self.of(username)
        )

    def recheck(self) -> int:
        """After a reload: end (noresource) every subscription whose resource is gone
        or no longer the subscriber's; how many ended."""
        gone = 0
        for sub in list(self.subs.values()):
            try:
                sub.package.state(sub.username, sub.resource)
            except SipError:
                self._end(sub, "noresource", None)
                gone += 1
        return gone

    def close(self) -> None:
        for sub in self.subs.values():
            if sub.timer is not None:
                sub.timer.cancel()
        self.subs.clear()
        self.watchers.clear()
        self.by_user.clear()

    def status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sub in self.subs.values():
            counts[sub.package.event] = counts.get(sub.package.event, 0) + 1
        return counts

    def of(self, username: str) -> Iterator[Subscription]:
        return iter(list(self.by_user.get(username, {}).values()))

    # ------------------------------------------------------------------ the parts
    def _event(self, req: Request) -> str:
        values = req.headers.getall("event")
        if len(values) != 1:
            raise SipError("one Event header is required" if not values else "one Event only", 489)
        # RFC 6665 §8.2.1: event-type [; id=...]; the id is not used by our packages.
        return values[0].partition(";")[0].strip().lower()

    def _same_event(self, req: Request, sub: Subscription) -> None:
        if self._event(req) != sub.package.event:
            raise SipError(f"this dialog's event is {sub.package.event}", 489)

    def _package(self, req: Request) -> Package:
        event = self._event(req)
        package = self.packages.get(event)
        if package is None:
            raise SipError(f"event package {event[:40]!r} not served", 489)
        return package

    def _resource(self, req: Request) -> str:
        if req.uri.scheme not in ("sip", "sips") or not self.is_our_host(req.uri.host):
            raise SipError("not our domain", 404)
        resource = unescape(req.uri.user or "")
        if not resource or len(resource) > MAX_RESOURCE:
            raise SipError("no resource to watch", 404)
        if req.from_.tag is None:
            raise SipError("From has no tag", 400)
        return resource

    @staticmethod
    def _expires(req: Request, package: Package) -> int:
        asked = req.expires
        if asked is None:
            return min(package.default_expires, MAX_EXPIRES)
        if 0 < asked < MIN_EXPIRES:
            raise SipError("Interval Too Brief", 423, (("Min-Expires", str(MIN_EXPIRES)),))
        return min(asked, MAX_EXPIRES)

    @staticmethod
    def _accepts(req: Request, package: Package) -> None:
        accept = req.headers.getall("accept")
        if not accept:
            return
        offered = {t.split(";")[0].strip().lower() for v in accept for t in v.split(",")}
        if package.content_type not in offered and "*/*" not in offered:
            raise SipError(
                f"{package.event} is sent as {package.content_type}",
                406,
                (("Accept", package.content_type),),
            )

    def _room(self, new: Subscription) -> SipError | None:
        """Make room for `new`: a subscription it replaces goes; None when it fits."""
        same = [s for s in self.of(new.username) if s.contact_key() == new.contact_key()]
        for old in same:
            self._drop(old)
        if len(self.by_user.get(new.username, ())) >= self.max_per_user:
            return SipError(f"at most {self.max_per_user} subscriptions per extension", 403)
        if len(self.subs) >= self.max_total:
            return SipError("too many subscriptions", 503, (("Retry-After", str(RETRY_AFTER)),))
        return None

    def _allow_events(self) -> str:
        return ", ".join(sorted(self.packages))

    def _reply(self, req: Request, status: int, reason: str | None = None) -> Response:
        return req.reply(status, reason, to_tag=req.to.tag or secrets.token_hex(6))

    def _refuse(self, req: Request, key: AnyServerKey, err: SipError) -> None:
        log.info("SUBSCRIBE %s refused with %d: %s", req.uri, err.status, err.reason)
        resp = self._reply(req, err.status)
        for name, value in err.headers:
            resp.headers.add(name, value)
        if err.status == 489:
            resp.headers.add("Allow-Events", self._allow_events())
        if err.status in (400, 403, 404, 489):
            reason = err.reason.replace('"', "'").replace("\\", "/")
            resp.headers.add("Warning", f'399 pbx "{reason[:120]}"')
        self.stack.respond(key, resp)

    def _ok(self, req: Request, sub: Subscription, expires: int, tag: str) -> Response:
        resp = req.reply(200, to_tag=tag)
        for route in req.headers.getall("record-route"):  # RFC 3261 §12.1.1
            resp.headers.add("Record-Route", route)
        resp.headers.add("Contact", sub.dialog.contact)
        resp.headers.add("Expires", str(expires))
        resp.headers.add("Allow-Events", self._allow_events())
        return resp

    def _active(self, sub: Subscription) -> str:
        left = max(0, int(sub.expires_at - self.loop.time() + 0.5))
        return f"active;expires={left}"

    def _arm(self, sub: Subscription, expires: int) -> None:
        if sub.timer is not None:
            sub.timer.cancel()
        sub.expires_at = self.loop.time() + expires
        sub.timer = self.loop.call_at(sub.expires_at, self._expired, sub)

    def _expired(self, sub: Subscription) -> None:
        sub.timer = None
        if not sub.ended:
            log.debug("subscription %s of %s expired", sub.id, sub.username)
            with contextlib.suppress(SipError):
                self._end(sub, "timeout", sub.package.state(sub.username, sub.resource))
                return
            self._end(sub, "noresource", None)

    def _drop(self, sub: Subscription) -> None:
        """Forget a subscription at once (no NOTIFY)."""
        sub.ended = True
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None
        if self.subs.pop((sub.dialog.call_id, sub.dialog.local_tag), None) is sub:
            key = (sub.package.event, sub.resource)
            subs = self.watchers.get(key)
            if subs is not None:
                subs.pop(sub.id, None)
                if not subs:
                    del self.watchers[key]
            mine = self.by_user.get(sub.username)
            if mine is not None:
                mine.pop(sub.id, None)
                if not mine:
                    del self.by_user[sub.username]

    def _end(self, sub: Subscription, reason: str, body: bytes | None) -> None:
        """The last NOTIFY (terminated), then forgotten."""
        self._drop(sub)
        self._send(sub, body or b"", f"terminated;reason={reason}")

    def _queue(self, sub: Subscription, body: bytes) -> None:
        if sub.in_flight:
            sub.pending = body  # the latest state goes when the NOTIFY is answered
            return
        self._send(sub, body, self._active(sub))

    def _send(self, sub: Subscription, body: bytes, state: str) -> None:
        if body and getattr(sub.package, "versioned", False):
            body = body.replace(VERSION, str(sub.version).encode(), 1)
            sub.version += 1
        req = sub.dialog.request("NOTIFY", body, sub.package.content_type if body else None)
        dest = sub.dialog.destination()
        req.headers.insert(0, "Via", str(self.stack.via_for(dest)))
        req.headers.add("Event", sub.package.event)
        req.headers.add("Subscription-State", state)
        req.headers.add("User-Agent", self.stack.user_agent)
        sub.in_flight = True
        sub.notifies += 1
        try:
            self.stack.request(req, dest, lambda resp: self._answered(sub, resp))
        except Exception as exc:  # noqa: BLE001  # a lamp is never worth more than a line
            log.warning("NOTIFY %s to %s not sent: %s", sub.package.event, sub.username, exc)
            sub.in_flight = False
            if not sub.ended:
                self._drop(sub)

    def _answered(self, sub: Subscription, resp: Response | None) -> None:
        if resp is not None and resp.status < 200:
            return
        sub.in_flight = False
        if resp is None or resp.status in ENDING:
            if not sub.ended:
                log.info(
                    "subscription %s of %s ended: NOTIFY %s",
                    sub.id,
                    sub.username,
                    "unanswered" if resp is None else resp.status,
                )
                self._drop(sub)
            return
        if resp.status >= 300:
            log.debug("NOTIFY to %s answered %s", sub.username, resp.status)
        if sub.pending is not None and not sub.ended:
            body, sub.pending = sub.pending, None
            self._send(sub, body, self._active(sub))
