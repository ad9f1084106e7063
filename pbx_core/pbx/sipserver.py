"""Glue between the transport (asyncio), the sans-IO transaction layer and the
engine: messages up, events out, one timer handle following `next_timer()`."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pbx_core.pbx.engine import Engine
from pbx_core.sip import events as ev
from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction_layer import TransactionLayer
from pbx_core.transport.manager import Address, TransportManager
from pbx_core.transport.trace import Trace

log = logging.getLogger("pbx.sip")


class SipServer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        tasks: asyncio.TaskGroup | None = None,
        trace: Trace | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.loop = loop
        self.layer = TransactionLayer()
        self.engine = engine or Engine()
        self.transports = TransportManager(loop, self._on_message, trace, tasks)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    def _on_message(self, msg: Request | Response, source: Address) -> None:
        if isinstance(msg, Request) and self.engine.is_stateless(msg):
            resp = self.engine.handle_request(msg)
            if resp is not None:
                self.transports.send(resp, source)
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

    def _reject(self, req: Request, source: Address, exc: ParseError) -> None:
        # Without even a Via or CSeq to answer with, the request is dropped.
        with contextlib.suppress(ParseError):
            self.transports.send(req.reply(exc.status), source)

    def _process(self, events: list[ev.Event], now: float) -> None:
        while events:
            more: list[ev.Event] = []
            for event in events:
                if isinstance(event, ev.Send):
                    self.transports.send(event.message, event.dest)
                elif isinstance(event, ev.RequestReceived):
                    resp = self.engine.handle_request(event.request)
                    if resp is not None and event.key is not None:
                        more.extend(self.layer.send_response(event.key, resp, now))
                elif isinstance(event, ev.BadRequest) and event.request.method != "ACK":
                    self._reject(event.request, event.source, event.error)
                elif isinstance(event, ev.Overloaded) and event.request.method != "ACK":
                    self._reject(event.request, event.source, ParseError("overloaded", 503))
            events = more
        self._schedule()

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
