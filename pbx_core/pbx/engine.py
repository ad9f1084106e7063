"""The PBX's transaction user: what happens to each request (RFC 3261 §8.2).

OPTIONS are answered statelessly (§8.2.7); REGISTER goes to the registrar after
digest authentication; INVITE from an authenticated extension, or from a trusted
trunk address, is routed by the dial plan and handed to the B2BUA (calls.py);
an authenticated SUBSCRIBE goes to the notifier (subscriptions.py: message-summary
for now); requests inside a call go to the call, inside a subscription to the
notifier; everything else gets its status.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import secrets
import struct
import types
from collections.abc import Mapping, Sequence
from typing import Any

from pbx_core import paths
from pbx_core.features.api import Feature, Ringing, Talking
from pbx_core.media.audio import Audio
from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.recorder import remove_partial
from pbx_core.memo import Memo
from pbx_core.pbx.auth import Authenticator, Outcome
from pbx_core.pbx.call_originate import Originator
from pbx_core.pbx.call_state import ALLOW, KNOWN_METHODS
from pbx_core.pbx.calls import Call, CallManager
from pbx_core.pbx.cdr import CdrQueue, CdrWriter
from pbx_core.pbx.features import Facts, FeatureHost
from pbx_core.pbx.mwi import EVENT as MWI_EVENT
from pbx_core.pbx.mwi import MessageSummary, notify, summary
from pbx_core.pbx.nat import NatPolicy
from pbx_core.pbx.presence import Lamps
from pbx_core.pbx.registrar import Registrar, ReplyError
from pbx_core.pbx.routing import Router
from pbx_core.pbx.security import Action, SecurityPolicy, SettingsError
from pbx_core.pbx.sipserver import DEFAULT_USER_AGENT, SipServer, header_text, stateless_tag
from pbx_core.pbx.subscriptions import MAX_PER_USER, MAX_TOTAL, Subscriptions
from pbx_core.pbx.trunk import TrunkManager
from pbx_core.sip.errors import ParseError, SipError
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.sip.uri import unescape
from pbx_core.sip.validate import check_request
from pbx_core.store.generations import Store
from pbx_core.store.model import User
from pbx_core.store.snapshot import Snapshot
from pbx_core.store.state import StateStore
from pbx_core.transport.manager import Address

log = logging.getLogger("pbx.engine")

SUPPORTED: frozenset[str] = frozenset({"timer"})  # RFC 4028 session timers (call_timers.py)
SCHEMES = frozenset({"sip", "sips", "tel"})
MAX_ROW_CACHE = 4096  # extension rows kept for features (one per extension)
MAX_CDR_NOTES = 8  # features' notes in one call's CDR (Context.cdr_note)
MAX_CDR_NOTE = 128  # characters of one (cdr.MAX_NAME keeps no more)


def new_tag() -> str:
    return secrets.token_hex(6)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class Engine:
    def __init__(
        self,
        stack: SipServer,
        store: Store,
        media: MediaEngine | None = None,
        cdr: CdrWriter | None = None,
        features: Sequence[Feature] = (),
        state: StateStore | None = None,
    ) -> None:
        self.stack = stack
        self.store = store
        self.loop = stack.loop
        self.allow = ", ".join(ALLOW)
        self.supported = ", ".join(sorted(SUPPORTED))
        self._tag_key = secrets.token_bytes(16)
        self._hosts_snap: Snapshot | None = None
        # Extension rows handed to features, by number: (the settings they were made
        # from, the read-only view); a reload's new records make new views.
        self._ext_rows: dict[str, tuple[object, Mapping[str, Any]]] = {}
        self._ext_numbers: tuple[object, tuple[str, ...]] = (None, ())
        self._our_hosts: Memo[str, bool] = Memo(1024, 255)  # 255: a DNS name's longest
        self.auth = Authenticator()
        settings = self.snap.settings
        self.auth.configure(settings)
        self.registrar = Registrar(
            int(settings.get("reg_min_expires", 60)), int(settings.get("reg_max_expires", 3600))
        )
        self.media = media
        self.cdr = cdr
        self._cdr_queue = CdrQueue(cdr) if cdr is not None else None
        self.calls = CallManager(stack, on_end=self._call_ended, media=media)
        self.calls.configure(settings)  # rtp_timeout, direct media, session timers
        self._configure_nat()
        if media is not None:
            self.calls.music_on_hold = _music_on_hold(media)
        self.trunks = TrunkManager(stack)
        self.router = Router(self)
        self.calls.unanswered = self.router.unanswered
        self.calls.ops.reroute = self.router.reroute
        self.calls.ops.extension_of = self.router.extension_of
        self.calls.ops.transfer_refused = self.router.transfer_refused
        self.features = FeatureHost(
            features,
            Facts(
                now=self.loop.time,
                setting=self._setting,
                extension=self._extension_row,
                group=self._group_row,
                registered=self._registered,
                in_call=self._in_call,
                may_dial=self.router.may_dial,
                domain=lambda: self.domain,
                rows=self._feature_rows,
                ringing=self._ringing,
                talking=self._talking,
                failed_auth=self._feature_failed_auth,
                banned=lambda key: self.security.banned(key, self.loop.time()),
                speed_dial=self._speed_dial,
                notify_mwi=self._notify_mwi,
                originate=Originator(self),
                extensions=self._extension_numbers,
                cdr_note=self._cdr_note,
                lamp_changed=lambda _resource: self.lamps.poke(),
            ),
            state,
            self.loop,
            # Applications' recordings (voicemail …) beside the state LMDB, on /data.
            state.path.parent / "recordings" if state is not None else None,
        )
        if isinstance(self.calls.music_on_hold, Audio):
            self.features.music = self.calls.music_on_hold
        self.calls.app_taken = self.features.stop_app
        keys = self.calls.keys  # in-call codes (call_keys.py)
        keys.codes = lambda: self.features.call_codes
        keys.ask = self.router.in_call
        keys.run_app = self.router.run_in_call_app
        keys.recordings.root = self.features.recordings  # calls recorded on demand
        if self.features.recordings is not None:
            # Nothing records yet: a .part here is one a power cut interrupted.
            remove_partial(self.features.recordings)
        self.subscriptions = Subscriptions(stack, self.loop, self.calls.contact, self._is_our_host)
        self.subscriptions.add_package(
            MessageSummary(self.features.message_summary, lambda: self.domain)
        )
        self._configure_subscriptions()
        self.lamps = Lamps(  # busy lamps and presence (presence.py)
            self.subscriptions,
            self.calls,
            extension_of=self.router.extension_of,
            is_extension=lambda number: self.snap.user(number, self.domain) is not None,
            registered=self._registered,
            dnd=lambda number: bool(self.features.toggle_of(number, "dnd")),
            feature_lamp=self.features.lamp,
            domain=lambda: self.domain,
        )
        self.subscriptions.add_package(self.lamps.dialog)
        self.subscriptions.add_package(self.lamps.presence)
        self.calls.changed = self.lamps.poke
        self.features.toggled = lambda _extension: self.lamps.poke()
        self.security = SecurityPolicy()
        self._configure_security()
        stack.tu = self
        stack.stateless = self._stateless
        stack.gate = self._gate
        stack.transports.set_in_use(self._streams_in_use)
        stack.user_agent = self._user_agent()

    @property
    def snap(self) -> Snapshot:
        return self.store.snapshot

    @property
    def domain(self) -> str:
        return str(self.snap.settings.get("domain", "pbx.local"))

    def reloaded(self) -> None:
        """A new configuration generation is in force."""
        settings = self.snap.settings
        self.auth.configure(settings)
        self.registrar.min_expires = int(settings.get("reg_min_expires", 60))
        self.registrar.max_expires = int(settings.get("reg_max_expires", 3600))
        self.calls.configure(settings)
        self._configure_nat()
        self.trunks.configure(self.snap.trunks())
        self._configure_security()
        self.stack.user_agent = self._user_agent()
        self._configure_subscriptions()
        self.subscriptions.recheck()  # a mailbox gone, an owner changed: noresource
        self.lamps.poke()

    def _configure_subscriptions(self) -> None:
        settings = self.snap.settings
        self.subscriptions.max_per_user = int(settings.get("sub_max_per_extension", MAX_PER_USER))
        self.subscriptions.max_total = int(settings.get("sub_max_total", MAX_TOTAL))

    def _user_agent(self) -> str:
        return header_text(str(self.snap.settings.get("user_agent", DEFAULT_USER_AGENT)))

    # ------------------------------------------------------------------ facts for features
    def _setting(self, name: str) -> Any:
        return self.snap.settings.get(name)  # the snapshot in force (reloads swap it)

    def _extension_row(self, number: str) -> Mapping[str, Any] | None:
        """An extension's row as features see it (read-only), made once per record:
        features ask for it on every call (`dataclasses.asdict` deep-copies, and its
        cost showed in the bench's call set-ups)."""
        user = self.snap.user(number, self.domain)
        if user is None:
            return None
        row = self._ext_rows.get(number)
        if row is None or row[0] != user.settings:
            if len(self._ext_rows) >= MAX_ROW_CACHE:
                self._ext_rows.clear()
            fields = dataclasses.fields(user.settings)
            view = {"username": user.username}
            view.update((f.name, getattr(user.settings, f.name)) for f in fields)
            row = (user.settings, types.MappingProxyType(view))
            self._ext_rows[number] = row
        return row[1]

    def _extension_numbers(self) -> tuple[str, ...]:
        """Our extensions' numbers (the domain's subscribers), sorted, at most
        MAX_ROW_CACHE; read once per configuration (the dial-by-name directory)."""
        snap = self.snap
        if self._ext_numbers[0] is not snap:
            numbers = sorted(u.username for u in snap.users() if u.domain == self.domain)
            self._ext_numbers = (snap, tuple(numbers[:MAX_ROW_CACHE]))
        return self._ext_numbers[1]

    def _group_row(self, number: str) -> Mapping[str, Any] | None:
        group = self.snap.group(number)
        if group is None:
            return None
        return {
            "number": group.number,
            "name": group.name,
            "members": tuple(group.members),
            "strategy": group.strategy,
            "ring_timeout": group.ring_timeout,
            "fallback_type": group.fallback.type,
            "fallback": group.fallback.target,
        }

    def _feature_rows(self, table: str) -> tuple[Mapping[str, Any], ...]:
        return self.snap.rows(table)  # the snapshot in force: a reload is seen at once

    def _speed_dial(self, extension: str, code: str) -> str | None:
        """pbx_speed_dial: the extension's own row for `code`, else everyone's."""
        entry = self.snap.speed_dial(f"{extension}@{self.domain}", code)
        return None if entry is None else entry.number

    def _registered(self, number: str) -> bool:
        return bool(self.registrar.lookup(f"{number}@{self.domain}", self.loop.time()))

    def _in_call(self, number: str) -> bool:
        """Whether the extension is a party of a call now: calling, ringing or talking."""
        aor = f"{number}@{self.domain}"
        for call in self.calls.calls.values():
            if call.caller == aor:
                return True
            if call.answered is not None:
                if call.answered.target.label == aor:
                    return True
            elif any(f.target.label == aor and f.final is None for f in call.forks):
                return True
        return False

    def _streams_in_use(self) -> set[tuple[str, int]]:
        """(host, port) of every TCP peer a live registration or call talks to: the
        transport spares these connections when it evicts or times out."""
        now = self.loop.time()
        used = {
            (b.source[1], b.source[2])
            for found in self.registrar.bindings.values()
            for b in found.values()
            if b.source[0] != "UDP" and b.expires_at > now
        }
        for call in self.calls.calls.values():
            used.add((call.a_source[1], call.a_source[2]))
            for fork in call.forks:
                used.add((fork.target.dest[1], fork.target.dest[2]))
        for st in self.trunks.trunks.values():  # the provider calls in over it
            if st.transport != "UDP" and st.address is not None:
                used.add((st.address, st.trunk.port))
        return used

    def _configure_nat(self) -> None:
        """lan_networks, external addresses and `nat` (nat.py): for the registrar
        (where phones are reached), the SIP stack (our Via and Contact) and calls
        (the SDP address of each leg)."""
        policy = NatPolicy.from_settings(self.snap.settings, self.registrar.nat)
        self.registrar.nat = policy
        self.calls.nat = policy
        self.stack.nat = policy

    def _configure_security(self) -> None:
        trusted = [t.host for t in self.snap.trunks() if t.enabled and _is_ip(t.host)]
        try:
            self.security.configure(self.snap.settings, trusted)
        except SettingsError as exc:
            log.error("security settings rejected, keeping the old ones: %s", exc)  # noqa: TRY400  # one line says it

    def _gate(self, msg: Request | Response, source: Address) -> bool:
        """The security policy first (bans, scanners, rate limits): a dropped
        message costs nothing more and tells the sender nothing."""
        verdict = self.security.check(source[1], msg, self.loop.time())
        if verdict.action is Action.ALLOW:
            return True
        (log.debug if verdict.quiet else log.warning)("security: %s", verdict.reason)
        if verdict.action is Action.REJECT and isinstance(msg, Request) and msg.method != "ACK":
            resp = msg.reply(verdict.status or 503, to_tag=new_tag())
            for name, value in verdict.headers:
                resp.headers.add(name, value)
            self.stack.send(resp, source)
        return False

    def _authenticate(
        self, req: Request, source: Address, key: AnyServerKey, now: float
    ) -> User | None:
        """The authenticated subscriber, or None after answering with a challenge
        (401/407; stale=true for an old nonce) and counting a real failure."""
        snap = self.snap
        realm = self.auth.realm(req, snap, self.domain)
        result = self.auth.check(req, snap, realm, now)
        if result.outcome is Outcome.OK and result.user is not None:
            self.security.auth_succeeded(source[1], now)
            return result.user
        if result.outcome is Outcome.FAILED:
            self._auth_failed(req, source, result.reason, result.counts)
        stale = result.outcome is Outcome.STALE
        self.stack.respond(key, self.auth.challenge(req, realm, now, snap=snap, stale=stale))
        return None

    def _auth_failed(self, req: Request, source: Address, reason: str, counts: bool) -> None:
        log.info("%s auth failed from %s:%s (%s)", req.method, source[1], source[2], reason)
        if counts:
            verdict = self.security.auth_failed(source[1], self.loop.time())
            if verdict.action is not Action.ALLOW:
                log.warning("security: %s", verdict.reason)

    def _feature_failed_auth(self, key: str) -> bool:
        """A feature's failed authentication (a wrong DISA PIN), counted as a failed
        login is; True when it banned `key`."""
        verdict = self.security.auth_failed(key, self.loop.time())
        if verdict.action is Action.ALLOW:
            return False
        log.warning("security: %s", verdict.reason)
        return True

    def start(self) -> None:
        self.trunks.configure(self.snap.trunks())

    def close(self) -> None:
        self.trunks.close()
        self.subscriptions.close()
        self.lamps.close()
        self.features.close()
        if self._cdr_queue is not None:
            self._cdr_queue.close()  # the last calls' records reach the disk

    # ------------------------------------------------------------------ OPTIONS
    def _stateless(self, req: Request, source: Address) -> bool:
        """Answer without a transaction (RFC 3261 §8.2.7) what needs no state: OPTIONS
        pings (as Kamailio's options module does) and the challenge to a REGISTER,
        INVITE or SUBSCRIBE that carries no credentials (§8.2.7's own example). Neither
        costs 32 s of memory; a lost answer is simply sent again for the retransmission."""
        method = req.method
        if method not in ("OPTIONS", "REGISTER", "INVITE", "SUBSCRIBE") or "tag=" in (
            req.headers.get("to") or ""
        ):
            return False
        if method == "OPTIONS":
            self.stack.send(self._options(req, source), source)
            return True
        header = "authorization" if method == "REGISTER" else "proxy-authorization"
        if header in req.headers or (method == "INVITE" and self.trunks.trusted(source[1])):
            return False
        err = check_request(req, SUPPORTED, SCHEMES)
        if err is not None:
            return False  # the transaction path answers it with its status
        if method == "REGISTER" and not (
            self._is_our_host(req.uri.host) and self._is_our_host(req.to.uri.host)
        ):
            return False
        tag = self.stateless_tag(req)
        snap = self.snap
        realm = self.auth.realm(req, snap, self.domain)
        resp = self.auth.challenge(req, realm, self.loop.time(), snap=snap, to_tag=tag)
        self.stack.send(resp, source)
        return True

    def stateless_tag(self, req: Request) -> str:
        """The same To tag for every retransmission of a request (RFC 3261 §8.2.7)."""
        return stateless_tag(req, self._tag_key)

    def _options(self, req: Request, source: Address) -> Response:
        tag = self.stateless_tag(req)
        err = check_request(req, SUPPORTED, SCHEMES)
        if err is not None:
            self._refused(req, source, err)
            return self._error(req, err, tag)
        resp = req.reply(200, to_tag=tag)
        h = resp.headers
        h.add("Allow", self.allow)
        h.add("Accept", "application/sdp")
        h.add("Accept-Encoding", "identity")
        h.add("Accept-Language", "en")
        h.add("Supported", self.supported)
        h.add("Server", self.stack.user_agent)
        return resp

    @staticmethod
    def _refused(req: Request, source: Address, err: SipError) -> None:
        peer = f"{source[1]}:{source[2]}"
        log.info("%s from %s refused with %d: %s", req.method, peer, err.status, err.reason)

    def _error(self, req: Request, err: SipError, tag: str | None = None) -> Response:
        resp = req.reply(err.status, to_tag=tag or new_tag())
        for name, value in err.headers:
            resp.headers.add(name, value)
        if err.status in (400, 403, 406, 415, 416, 420, 483, 505, 513):  # refusals: say why
            reason = err.reason.replace('"', "'").replace("\\", "/")
            resp.headers.add("Warning", f'399 pbx "{reason[:120]}"')
        if err.status in (405, 501):
            resp.headers.add("Allow", self.allow)
        return resp

    # ------------------------------------------------------------------ requests
    def on_request(
        self, req: Request, source: Address, key: AnyServerKey | None, cancels: object
    ) -> None:
        try:
            self._on_request(req, source, key, cancels)
        except Exception as exc:  # noqa: BLE001  # every request gets an answer, see _failed
            self._failed(req, key, cancels, exc)
        if req.method not in ("OPTIONS", "SUBSCRIBE"):  # phones' keep-alives, lamp keys
            self.lamps.poke()  # a call or registration may have changed a lamp (coalesced)

    def _failed(
        self, req: Request, key: AnyServerKey | None, cancels: object, exc: Exception
    ) -> None:
        """Handling `req` raised: the call it set up (or cancels) ends with a final
        response and frees its media (CallManager.abort); any other request gets a
        500. One warning line; the traceback at debug level."""
        call = self.calls.by_key.get(key) if key is not None else None
        if call is None and req.method == "CANCEL" and cancels is not None:
            call = self.calls.by_key.get(cancels)  # type: ignore[call-overload]
        if call is not None:
            self.calls.abort(call, req.method, exc)
            return
        text = str(exc)[:200].replace("\n", " ")
        log.warning("%s failed: %s: %s", req.method, type(exc).__name__, text)
        log.debug("%s failed", req.method, exc_info=exc)
        if key is not None:
            try:
                self.stack.respond(key, req.reply(500, to_tag=req.to.tag or new_tag()))
            except Exception as again:  # noqa: BLE001  # nothing more to do than say so
                log.warning("no 500 for the failed %s: %s", req.method, again)

    def _on_request(
        self, req: Request, source: Address, key: AnyServerKey | None, cancels: object
    ) -> None:
        if req.method == "ACK":
            self.calls.in_dialog(req, source, None)
            return
        if key is None:
            return
        err = check_request(req, SUPPORTED, SCHEMES)
        if err is not None:
            self._refused(req, source, err)
            self.stack.respond(key, self._error(req, err))
            return
        if req.method == "CANCEL":
            call = self.calls.by_key.get(cancels) if cancels is not None else None  # type: ignore[call-overload]
            self.stack.respond(key, req.reply(200 if call is not None else 481))
            if call is not None:
                self.calls.cancel(call)
            return
        if req.to.tag is not None:
            if not (
                self.subscriptions.in_dialog(req, source, key)
                or self.calls.in_dialog(req, source, key)
            ):
                self.stack.respond(key, req.reply(481))
            return
        try:
            if req.method == "REGISTER":
                self._register(req, source, key)
            elif req.method == "INVITE":
                self._invite(req, source, key)
            elif req.method == "SUBSCRIBE":
                self._subscribe(req, source, key)
            elif req.method in KNOWN_METHODS:
                self.stack.respond(key, self._error(req, SipError("not here", 405)))
            else:
                self.stack.respond(key, self._error(req, SipError("unknown method", 501)))
        except ParseError as exc:
            self._refused(req, source, exc)
            self.stack.respond(key, self._error(req, exc))

    def on_stray_response(self, resp: Response, source: Address) -> None:
        """A 2xx to an INVITE whose transaction is gone: the ACK was lost (§13.2.2.4)."""
        log.debug("stray %s from %s", resp.status, source)

    # ------------------------------------------------------------------ REGISTER
    def _is_our_host(self, host: str) -> bool:
        # Asked twice per REGISTER about the same few names: answers are kept per
        # snapshot (the domain and hostname are settings).
        snap = self.snap
        if snap is not self._hosts_snap:
            self._hosts_snap = snap
            self._our_hosts.clear()
        ours = self._our_hosts.get(host)
        if ours is None:
            name = host.lower()
            ours = name in (self.domain.lower(), str(snap.settings.get("hostname", "pbx"))) or (
                _is_ip(name) or name == "localhost" or name in self.auth.domains(snap, self.domain)
            )
            self._our_hosts.keep(host, ours, len(host))
        return ours

    def _register(self, req: Request, source: Address, key: AnyServerKey) -> None:
        now = self.loop.time()
        to_uri = req.to.uri
        if not self._is_our_host(req.uri.host) or not self._is_our_host(to_uri.host):
            self.stack.respond(key, self._error(req, SipError("not our domain", 403)))
            return
        user = self._authenticate(req, source, key, now)
        if user is None:
            return
        if unescape(to_uri.user or "") != user.username:
            self.stack.respond(key, self._error(req, SipError("may only register yourself", 403)))
            return
        known = {(str(b.uri), b.call_id) for b in self.registrar.lookup(user.aor, now)}
        try:
            resp = self.registrar.register(req, user.aor, source, now, user.settings.max_contacts)
        except ReplyError as ans:
            resp = ans.response
        except SipError as exc:
            resp = self._error(req, exc)
        self.stack.respond(key, resp)
        live = self.registrar.lookup(user.aor, now)
        fresh = any((str(b.uri), b.call_id) not in known for b in live)
        if resp.status == 200 and fresh and user.domain == self.domain:
            # A phone registered anew (booted): the features tell it what it missed
            # (voicemail's lamp), after the 200.
            self.loop.call_soon(self.features.registered, user.username)

    # ------------------------------------------------------------------ INVITE
    def _invite(self, req: Request, source: Address, key: AnyServerKey) -> None:
        now = self.loop.time()
        number = unescape(req.uri.user or "")
        trunk = self.trunks.trusted(source[1])
        if trunk is not None:
            if req.headers.get("replaces") is not None:  # a provider takes none of our legs
                self.stack.respond(key, self._error(req, SipError("Replaces from a trunk", 403)))
                return
            self.router.from_trunk(req, source, key, trunk, number)
            return
        caller = self._authenticate(req, source, key, now)
        if caller is None:
            return
        if unescape(req.from_.uri.user or "") != caller.username:
            self.stack.respond(key, self._error(req, SipError("From is not you", 403)))
            return
        if not caller.settings.enabled:
            self.stack.respond(key, self._error(req, SipError("extension disabled", 403)))
            return
        if req.headers.get("replaces") is not None:  # RFC 3891: take a leg of a call
            self.calls.pickup.replaces(req, source=source, key=key, label=caller.aor)
            return
        self.router.from_extension(req, source, key, caller, number)

    # ------------------------------------------------------------------ SUBSCRIBE
    def _subscribe(self, req: Request, source: Address, key: AnyServerKey) -> None:
        """An out-of-dialog SUBSCRIBE: the digest as for INVITE (407), From must be
        the subscriber, then the notifier (subscriptions.py) answers."""
        caller = self._authenticate(req, source, key, self.loop.time())
        if caller is None:
            return
        if unescape(req.from_.uri.user or "") != caller.username:
            self.stack.respond(key, self._error(req, SipError("From is not you", 403)))
            return
        if not caller.settings.enabled or caller.domain != self.domain:
            self.stack.respond(key, self._error(req, SipError("extension disabled", 403)))
            return
        self.subscriptions.subscribe(req, source, key, caller.username)

    def _cdr_note(self, call_id: str, note: str) -> bool:
        """A feature's note in the CDR of a call not yet ended (`Context.cdr_note`):
        at most MAX_CDR_NOTES per call, MAX_CDR_NOTE characters each."""
        call = self.calls.calls.get(call_id)
        if call is None or len(call.notes) >= MAX_CDR_NOTES or not note:
            return False
        call.notes.append(note[:MAX_CDR_NOTE])
        return True

    def _talking(self) -> tuple[Talking, ...]:
        """Our extensions in answered, anchored calls (the features' `Context.talking`)."""
        out = []
        for call, side, label in self.calls.barge.talking():
            number = self.router.extension_of(label)
            if number is None:
                continue
            other = call.answered.target.label if side == "a" and call.answered else call.caller
            shown = other.partition(":")[2] if ":" in other else other.partition("@")[0]
            since = call.answered_at if call.answered_at is not None else call.started
            out.append(Talking(call.id, number, shown, since))
        return tuple(out)

    def _notify_mwi(self, extension: str, new: int, old: int) -> int:
        """The features' `Context.notify_mwi`: message-summary to each subscription
        to `extension` (subscriptions.py), and unsolicited to each registered
        contact of it that holds none (mwi.py)."""
        body = summary(new, old, f"sip:{extension}@{self.domain}")
        sent = self.subscriptions.notify_all(MWI_EVENT, extension, body)
        subs = self.subscriptions
        bindings = [
            b
            for b in self.registrar.lookup(f"{extension}@{self.domain}", self.loop.time())
            if not subs.watching(MWI_EVENT, extension, str(b.uri), b.source)
        ]
        return sent + notify(self.stack, bindings, extension, self.domain, new, old)

    def _ringing(self) -> tuple[Ringing, ...]:
        """The calls ringing our extensions (the features' `Context.ringing`)."""
        out = []
        for call, label in self.calls.pickup.ringing():
            number = self.router.extension_of(label)
            if number is not None:
                plan = call.routing
                shown = getattr(getattr(plan, "info", None), "caller_number", call.caller)
                out.append(Ringing(call.id, number, str(shown), call.started))
        return tuple(out)

    # ------------------------------------------------------------------ status
    def _call_ended(self, call: Call) -> None:
        log.info(
            "call %s %s -> %s ended: %s (%s)",
            call.id,
            call.caller,
            call.callee,
            call.disposition,
            call.cause,
        )
        self.lamps.poke()
        self.features.call_ended(
            call.id,
            {
                "call_id": call.id,  # as Session.call_id names it (features/queue)
                "caller": call.caller,
                "callee": call.callee,
                "disposition": call.disposition,
                "cause": call.cause,
            },
        )
        if self._cdr_queue is not None:
            # A synced LMDB commit takes milliseconds on a CF card: not in the event
            # loop (CdrQueue: one writer thread, records in order, batched under load).
            self._cdr_queue.call_ended(call)

    def status(self) -> dict[str, Any]:
        now = self.loop.time()
        return {
            "registrations": self.registrar.status(now),
            "calls": self.calls.status(),
            "trunks": self.trunks.status(),
            "bans": self.security.bans(now),
            "media": self.media.stats() if self.media is not None else {},
            "features": self.features.status(),
            "subscriptions": self.subscriptions.status(),
            "recordings": self.calls.keys.recordings.status(),  # calls recorded on demand
        }


def _music_on_hold(media: MediaEngine) -> Audio:
    """The installer's /data/moh.wav, else the tune the image build synthesised
    (prompts/music-on-hold.wav), else a built-in one: a slow arpeggio of soft sine
    notes, royalty-free by construction."""
    for path in (paths.DATA_DIR / "moh.wav", paths.asset("prompts/music-on-hold.wav")):
        if path.exists():
            try:
                return media.load(path)
            except MediaError as exc:
                log.warning("music on hold %s unusable (%s)", path, exc.reason)
    rate, frames = 8000, []
    notes = (261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 293.66, 349.23, 440.00, 349.23)
    for freq in notes:
        n = int(rate * 0.45)
        for i in range(n):
            env = math.sin(math.pi * i / n)  # fade in and out: no clicks
            frames.append(int(6000 * env * math.sin(2 * math.pi * freq * i / rate)))
    return Audio(struct.pack(f"<{len(frames)}h", *frames), "built-in music on hold")
