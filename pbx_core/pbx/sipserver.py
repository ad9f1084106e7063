"""Glue between the transport (asyncio), the sans-IO transaction layer and the
transaction user (the engine): messages up, events out, one timer handle following
`next_timer()`.

What the engine may do through it (`Stack`): answer a server transaction, start a
client transaction with a callback for its responses, send an ACK or a stateless
message, and build Via headers for what it sends.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pbx_core.sip import events as ev
from pbx_core.sip.errors import ParseError, SipError
from pbx_core.sip.headers import Via
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction import State, TransactionError, new_branch
from pbx_core.sip.transaction_layer import TransactionLayer
from pbx_core.transport.manager import Address, TransportManager
from pbx_core.transport.trace import Trace

if TYPE_CHECKING:
    from pbx_core.pbx.nat import NatPolicy

log = logging.getLogger("pbx.sip")

# What Server and User-Agent say unless the `user_agent` setting says otherwise: the
# product, never its exact version (that tells an attacker which holes to try).
DEFAULT_USER_AGENT = "Wafer PBX"
_UA_MAX = 100
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f]+")
# Server transactions not yet answered with a final response.
_UNANSWERED = frozenset({State.TRYING, State.PROCEEDING})


def header_text(value: str, default: str = DEFAULT_USER_AGENT) -> str:
    """A setting's text made safe for a header value: control characters (CR, LF …)
    become spaces, at most 100 characters; empty gives `default`."""
    text = " ".join(_NOT_TEXT.sub(" ", value).split())[:_UA_MAX].strip()
    return text or default


# A client transaction's outcome: a response, or None when it timed out or the
# transport failed (the TU acts as if a 408/503 came, RFC 3261 §8.1.3.1).
ResponseCallback = Callable[[Response | None], None]


class TransactionUser(Protocol):
    def on_request(
        self, req: Request, source: Address, key: ev.AnyServerKey | None, cancels: object
    ) -> None: ...

    def on_stray_response(self, resp: Response, source: Address) -> None: ...


def stateless_tag(req: Request, key: bytes) -> str:
    """The same To tag for every retransmission of a request (RFC 3261 §8.2.7): one
    keyed BLAKE2s over the headers a retransmission repeats."""
    get = req.headers.get
    text = f"{get('call-id') or ''}\0{get('from') or ''}\0{get('via') or ''}\0"
    data = text.encode("utf-8", "surrogateescape")
    return hashlib.blake2s(data, key=key, digest_size=6).hexdigest()


class SipServer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tasks: asyncio.TaskGroup | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.loop = loop
        self.layer = TransactionLayer()
        self.tu: TransactionUser | None = None
        self.transports = TransportManager(loop, self._on_message, trace, tasks)
        self._callbacks: dict[ev.ClientKey, ResponseCallback] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Requests answered without a transaction (OPTIONS pings); set by the engine.
        self.stateless: Callable[[Request, Address], bool] | None = None
        # The security policy's say before anything else is spent on a message:
        # False drops it (the gate answers itself when it rejects).
        self.gate: Callable[[Request | Response, Address], bool] | None = None
        # Server and User-Agent of what the PBX sends (the `user_agent` setting).
        self.user_agent = DEFAULT_USER_AGENT
        self._tag_key = secrets.token_bytes(16)
        # Our address towards peers outside the LAN (external_signaling_address).
        self.nat: NatPolicy | None = None

    # -- what the TU calls ----------------------------------------------------------
    def respond(self, key: ev.AnyServerKey, resp: Response) -> None:
        now = self.loop.time()
        try:
            events = self.layer.send_response(key, resp, now)
        except TransactionError as exc:
            log.warning("response %s dropped: %s", resp.status, exc.reason)
            return
        self._process(events, now)
        if resp.status >= 200:
            # Sent. The transaction keeps it up to 32 s for retransmissions, which
            # need only its text: the parsed Via, From, To, CSeq go, so the collector
            # has fewer long-lived objects to walk (they come back if asked for).
            resp.invalidate()

    def request(self, req: Request, dest: Address, on_response: ResponseCallback) -> ev.ClientKey:
        now = self.loop.time()
        key, events = self.layer.send_request(req, dest, now)
        self._callbacks[key] = on_response
        self._process(events, now)
        return key

    def forget(self, key: ev.ClientKey) -> None:
        """Stop passing responses of a client transaction to its callback: for an
        INVITE whose call is over (RFC 6026 keeps the transaction 32 s for 2xx
        retransmissions, and the callback would keep the whole call alive)."""
        self._callbacks.pop(key, None)

    def send(self, msg: Request | Response, dest: Address) -> None:
        """Outside any transaction: ACK for a 2xx, 2xx retransmissions, stateless."""
        self.transports.send(msg, dest)

    def via_for(self, dest: Address) -> Via:
        """A Via for a request we send towards dest: our address, a fresh branch."""
        transport = dest[0]
        host, port = self.local_address(dest)
        host = f"[{host}]" if ":" in host else host  # sent-by takes an IPv6reference
        return Via(transport, host, port, (("branch", new_branch()), ("rport", None)))

    def local_address(self, dest: Address) -> tuple[str, int]:
        """The address a peer at dest reaches us on (for Via and Contact): for a
        peer outside lan_networks, external_signaling_address when set (nat.py)."""
        local = self.transports.local_address_for(dest[1])
        return local if self.nat is None else self.nat.signaling_address_for(dest[1], local)

    # -- what the transport calls ---------------------------------------------------
    def _on_message(self, msg: Request | Response, source: Address) -> None:
        """Every request that parses but cannot be served gets its status here, with
        one log line (never a traceback): whatever the gate, the core checks
        (RFC 3261 §8.1.1: Via, From, To, Call-ID, CSeq matching the method,
        Max-Forwards) or the stateless answerer find wrong."""
        try:
            if self.gate is not None and not self.gate(msg, source):
                return
            if isinstance(msg, Request):
                msg.check_core()
                if self.stateless is not None and self.stateless(msg, source):
                    return
        except SipError as exc:
            self._refuse(msg, source, exc)
            return
        now = self.loop.time()
        self._process(self.layer.receive(msg, source, now), now)

    def _refuse(
        self, msg: Request | Response, source: Address, exc: SipError, level: int = logging.INFO
    ) -> None:
        """One log line, and for a request other than ACK its error status, sent
        statelessly (there is no transaction). Without a Via it cannot be routed."""
        peer = f"{source[1]}:{source[2]}"
        if not isinstance(msg, Request) or msg.method == "ACK":
            what = msg.method if isinstance(msg, Request) else f"{msg.status} response"
            log.log(level, "%s from %s dropped: %s", what, peer, exc.reason)
            return
        try:
            self.transports.send(self.error_response(msg, exc), source)
        except ParseError as err:
            log.log(level, "%s from %s dropped: %s (%s)", msg.method, peer, exc.reason, err.reason)
            return
        log.log(level, "%s from %s refused with %d: %s", msg.method, peer, exc.status, exc.reason)

    def error_response(self, req: Request, exc: SipError) -> Response:
        """The response to a request that failed `exc`: its status, its headers (Accept,
        Unsupported …), a Warning with the reason, and the same To tag for every
        retransmission (RFC 3261 §8.2.7). Raises ParseError when there is no Via."""
        _ = req.top_via  # nothing to route the answer with: nothing to answer
        resp = req.reply(exc.status, to_tag=self.stateless_tag(req))
        for name, value in exc.headers:
            resp.headers.add(name, value)
        reason = exc.reason.replace('"', "'").replace("\\", "/")
        resp.headers.add("Warning", f'399 pbx "{header_text(reason, "error")}"')
        return resp

    def stateless_tag(self, req: Request) -> str:
        """A To tag that is the same for every retransmission of a request."""
        return stateless_tag(req, self._tag_key)

    def _process(self, events: list[ev.Event], now: float) -> None:
        for event in events:
            try:
                self._dispatch(event)
            except Exception:
                # A bug in handling one message must not take the PBX down.
                log.exception("error handling %s", type(event).__name__)
        self._schedule()

    def _dispatch(self, event: ev.Event) -> None:
        if isinstance(event, ev.Send):
            self.transports.send(event.message, event.dest)
        elif isinstance(event, ev.RequestReceived):
            if self.tu is not None:
                try:
                    self.tu.on_request(event.request, event.source, event.key, event.cancels)
                except SipError as exc:  # a header the TU needed is malformed
                    self._tu_refused(event.request, event.source, event.key, exc)
        elif isinstance(event, ev.ResponseReceived):
            cb = self._callbacks.get(event.handle)
            if cb is not None:
                if event.response.status >= 200 and event.handle.method != "INVITE":
                    del self._callbacks[event.handle]
                cb(event.response)
        elif isinstance(event, ev.TransactionTimeout | ev.TransportError):
            cb = self._callbacks.pop(event.key, None)  # type: ignore[arg-type]
            if cb is not None:
                cb(None)
        elif isinstance(event, ev.TransactionTerminated):
            self._callbacks.pop(event.key, None)  # type: ignore[arg-type]
        elif isinstance(event, ev.StrayResponse):
            if self.tu is not None:
                self.tu.on_stray_response(event.response, event.source)
        elif isinstance(event, ev.BadRequest):
            self._refuse(event.request, event.source, event.error)
        elif isinstance(event, ev.Overloaded) and event.request.method != "ACK":
            # Quietly: under overload a line per request would add to the load.
            self._refuse(event.request, event.source, SipError("overloaded", 503), logging.DEBUG)

    def _tu_refused(
        self, req: Request, source: Address, key: ev.AnyServerKey | None, exc: SipError
    ) -> None:
        """The TU raised on a header it read: answer in the transaction if nobody has
        yet (else it would hang until the peer gives up), one log line either way."""
        peer = f"{source[1]}:{source[2]}"
        if key is None or self.layer.state(key) not in _UNANSWERED:
            log.info("%s from %s: %s", req.method, peer, exc.reason)
            return
        log.info("%s from %s refused with %d: %s", req.method, peer, exc.status, exc.reason)
        try:
            resp = self.error_response(req, exc)
        except ParseError:
            return
        self.respond(key, resp)

    def _schedule(self) -> None:
        when = self.layer.next_timer()
        if when is None or (self._timer_at is not None and self._timer_at <= when):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        self._process(self.layer.handle_timer(now), now)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transports.close()
