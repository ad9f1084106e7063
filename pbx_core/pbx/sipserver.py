"""Glue between the transport (asyncio), the sans-IO transaction layer and the
transaction user (the engine): messages up, events out, one timer handle following
`next_timer()`.

What the engine may do through it (`Stack`): answer a server transaction, start a
client transaction with a callback for its responses, send an ACK or a stateless
message, and build Via headers for what it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pbx_core.sip import events as ev
from pbx_core.sip.errors import ParseError, SipError
from pbx_core.sip.headers import Via
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction import TransactionError, new_branch
from pbx_core.sip.transaction_layer import TransactionLayer
from pbx_core.transport.manager import Address, TransportManager
from pbx_core.transport.trace import Trace

if TYPE_CHECKING:
    from pbx_core.pbx.nat import NatPolicy

log = logging.getLogger("pbx.sip")

# A client transaction's outcome: a response, or None when it timed out or the
# transport failed (the TU acts as if a 408/503 came, RFC 3261 §8.1.3.1).
ResponseCallback = Callable[[Response | None], None]


class TransactionUser(Protocol):
    def on_request(
        self, req: Request, source: Address, key: ev.AnyServerKey | None, cancels: object
    ) -> None: ...

    def on_stray_response(self, resp: Response, source: Address) -> None: ...


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
        return Via(transport, host, port, (("branch", new_branch()), ("rport", None)))

    def local_address(self, dest: Address) -> tuple[str, int]:
        """The address a peer at dest reaches us on (for Via and Contact): for a
        peer outside lan_networks, external_signaling_address when set (nat.py)."""
        local = self.transports.local_address_for(dest[1])
        return local if self.nat is None else self.nat.signaling_address_for(dest[1], local)

    # -- what the transport calls ---------------------------------------------------
    def _on_message(self, msg: Request | Response, source: Address) -> None:
        if self.gate is not None and not self.gate(msg, source):
            return
        if isinstance(msg, Request) and self.stateless is not None and self.stateless(msg, source):
            return
        now = self.loop.time()
        try:
            events = self.layer.receive(msg, source, now)
        except ParseError as exc:
            log.info("dropping malformed message from %s: %s", source, exc.reason)
            if isinstance(msg, Request) and msg.method != "ACK":
                self._reject(msg, source, exc)
            return
        self._process(events, now)

    def _reject(self, req: Request, source: Address, exc: SipError) -> None:
        # Without even a Via or CSeq to answer with, the request is dropped.
        with contextlib.suppress(ParseError):
            self.transports.send(req.reply(exc.status), source)

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
                self.tu.on_request(event.request, event.source, event.key, event.cancels)
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
        elif isinstance(event, ev.BadRequest) and event.request.method != "ACK":
            self._reject(event.request, event.source, event.error)
        elif isinstance(event, ev.Overloaded) and event.request.method != "ACK":
            self._reject(event.request, event.source, SipError("overloaded", 503))

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
