"""The SIP stack as the transaction user (Engine, CallManager) sees it, recorded.

It does what the transaction layer promises the TU: one final response per server
transaction (a second one is an error the test sees); the requests the PBX sends are
kept with their response callback, and handed to `on_request` (the simulated phones)
when one listens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pbx_core.sip.headers import Via
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction import new_branch


@dataclass
class FakeTransports:
    """What the engine hands the transport: which TCP peers live calls and registrations use."""

    in_use: Callable[[], object] | None = None

    def set_in_use(self, in_use: Callable[[], object]) -> None:
        self.in_use = in_use


@dataclass
class Sent:
    how: str  # "respond" (on its transaction) or "send" (outside any)
    data: bytes
    dest: object
    at: float


ResponseCb = Callable[[Response | None], None]


@dataclass
class FakeStack:
    loop: Any  # FakeLoop or ClockLoop (anything with time/call_later)
    host: str = "127.0.0.1"
    transports: FakeTransports = field(default_factory=FakeTransports)
    out: list[Sent] = field(default_factory=list)  # every byte we sent, in order
    finals: dict[object, list[Response]] = field(default_factory=dict)
    provisionals: dict[object, list[Response]] = field(default_factory=dict)
    sent: list[Request | Response] = field(default_factory=list)  # outside transactions
    requests: list[tuple[Request, object, ResponseCb]] = field(default_factory=list)
    on_request: Callable[[Request, object, ResponseCb], None] | None = None
    on_send: Callable[[Request | Response, object], None] | None = None
    on_respond: Callable[[object, Response], None] | None = None
    tu: object = None
    stateless: object = None
    gate: object = None
    user_agent: str = ""
    nat: object = None

    def respond(self, key: object, resp: Response) -> None:
        self.out.append(Sent("respond", bytes(resp), key, self.loop.time()))
        if resp.status < 200:
            self.provisionals.setdefault(key, []).append(resp)
        else:
            assert not self.finals.get(key), f"a second final response {resp.status} for {key}"
            self.finals.setdefault(key, []).append(resp)
            resp.invalidate()  # as the real stack does once a final response is sent
        if self.on_respond is not None:
            self.on_respond(key, resp)

    def send(self, msg: Request | Response, dest: object) -> None:
        self.out.append(Sent("send", bytes(msg), dest, self.loop.time()))
        self.sent.append(msg)
        if self.on_send is not None:
            self.on_send(msg, dest)

    def request(self, req: Request, dest: object, cb: ResponseCb) -> tuple[str, str]:
        self.requests.append((req, dest, cb))
        if self.on_request is not None:
            self.on_request(req, dest, cb)
        return (req.top_via.branch or "", req.method)

    def via_for(self, dest: object) -> Via:
        return Via("UDP", self.host, 5060, (("branch", new_branch()), ("rport", None)))

    def local_address(self, dest: object) -> tuple[str, int]:
        return (self.host, 5060)

    def forget(self, key: object) -> None:
        pass

    def sent_requests(self, method: str) -> list[Request]:
        return [r for r, _d, _cb in self.requests if r.method == method]

    def final(self, key: object) -> int | None:
        got = self.finals.get(key)
        return got[0].status if got else None
