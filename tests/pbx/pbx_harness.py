"""The whole PBX transaction user in-process: `Engine` on the factory configuration
with a real media engine (real RTP sockets on a real asyncio loop) and a fake SIP
stack that records what the PBX sends. Tests write the phones' messages.

The fake stack is the shared one (tests/harness/stack.py); tests/harness/office.py
adds simulated phones and a clock the test moves, for the features' rules.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

from pbx_core.features.registry import FEATURES
from pbx_core.media.engine import MediaEngine
from pbx_core.pbx.engine import Engine
from pbx_core.sip.digest_client import DigestClient
from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.store.generations import Store
from tests.harness.stack import FakeStack, FakeTransports

__all__ = ["CALLEE_SRC", "CALLER_SRC", "GOOD_SDP", "FakeStack", "FakeTransports", "Pbx", "sdp"]

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"
CALLER_SRC = ("UDP", "127.0.0.1", 5062)
CALLEE_SRC = ("UDP", "127.0.0.1", 5064)
PASSWORDS = {"100": "change-me-100", "101": "change-me-101"}


def sdp(body: str) -> bytes:
    return body.strip().replace("\n", "\r\n").encode() + b"\r\n"


GOOD_SDP = sdp("""v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 40000 RTP/AVP 0 8 101
a=rtpmap:101 telephone-event/8000
a=ptime:20""")


class Pbx:
    """The Engine plus helpers to place calls into it."""

    def __init__(self, tmp: Path, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stack = FakeStack(loop)
        self.store = Store(FACTORY, runtime_dir=tmp / "run")
        self.media = MediaEngine(loop, "127.0.0.1", 33000, 33099)
        self.engine = Engine(self.stack, self.store, self.media, features=FEATURES)  # type: ignore[arg-type]
        self._n = itertools.count(1)
        self._register("101", CALLEE_SRC)

    def close(self) -> None:
        self.engine.close()
        # The loop never ran: let the applications the engine cancelled (an echo test
        # answered in set-up) see their cancellation, or they die unawaited.
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.run_until_complete(asyncio.sleep(0))
        self.media.close()
        self.store.close()  # tests/store counts open snapshots: nothing may leak

    def _register(self, user: str, source: tuple[str, str, int]) -> None:
        req = self.message(
            f"""REGISTER sip:pbx.local SIP/2.0
Via: SIP/2.0/UDP {source[1]}:{source[2]};branch=z9hG4bKreg{user}
From: <sip:{user}@pbx.local>;tag=r{user}
To: <sip:{user}@pbx.local>
Call-ID: reg-{user}
CSeq: 1 REGISTER
Contact: <sip:{user}@{source[1]}:{source[2]}>
Expires: 3600"""
        )
        self.engine.registrar.register(req, f"{user}@pbx.local", source, self.loop.time(), 5)

    @staticmethod
    def message(text: str, body: bytes = b"", ctype: str | None = None) -> Request:
        head = text.strip().replace("\n", "\r\n")
        if ctype:
            head += f"\r\nContent-Type: {ctype}"
        msg = parse_message(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert isinstance(msg, Request)
        return msg

    def invite(self, number: str, body: bytes, user: str = "100") -> object:
        """Send an INVITE from `user` (answering the PBX's 407 once); the server key
        of the authenticated INVITE, whose final response `final` gives."""
        n = next(self._n)
        call_id = f"call{n}@test"
        client = DigestClient(user, PASSWORDS[user])
        for cseq in (1, 2):
            auth = ""
            if cseq == 2:
                creds = client.authorization("INVITE", f"sip:{number}@pbx.local", f"cn{n}")
                auth = f"\nProxy-Authorization: {creds}"
            req = self.message(
                f"""INVITE sip:{number}@pbx.local SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv{n}x{cseq}
From: <sip:{user}@pbx.local>;tag=from{n}
To: <sip:{number}@pbx.local>
Call-ID: {call_id}
CSeq: {cseq} INVITE
Max-Forwards: 70
Contact: <sip:{user}@127.0.0.1:5062>{auth}""",
                body,
                "application/sdp" if body else None,
            )
            key = ("server", call_id, cseq)
            self.engine.on_request(req, CALLER_SRC, key, None)
            if cseq == 1:
                (challenge,) = self.finals[key]
                assert challenge.status == 407, challenge.status
                assert client.on_challenge(challenge.headers.getall("proxy-authenticate"))
        return key

    @property
    def finals(self) -> dict[object, list[Response]]:
        return self.stack.finals

    def final(self, key: object) -> int | None:
        got = self.stack.finals.get(key)
        return got[0].status if got else None

    def forks(self) -> list[tuple[Request, Callable[[Response | None], None]]]:
        return [(r, cb) for r, _d, cb in self.stack.requests if r.method == "INVITE"]

    def answer(self, req: Request, status: int, body: bytes = b"", tag: str = "callee") -> None:
        """The callee's response to one of the PBX's INVITEs."""
        cb = next(cb for r, _d, cb in self.stack.requests if r is req)
        resp = req.reply(status, to_tag=tag)
        resp.headers.add("Contact", "<sip:101@127.0.0.1:5064>")
        if body:
            resp.body = body
            resp.headers.add("Content-Type", "application/sdp")
        cb(resp)

    def left_behind(self) -> list[str]:
        """What a finished call must not leave: calls, legs, taken ports."""
        out = []
        if self.engine.calls.calls:
            out.append(f"calls {[c.state.value for c in self.engine.calls.calls.values()]}")
        if self.engine.calls.by_key:
            out.append(f"{len(self.engine.calls.by_key)} INVITE keys")
        if self.media.legs or self.media.calls:
            out.append(f"{len(self.media.legs)} legs, {len(self.media.calls)} media calls")
        if self.media.ports.in_use:
            out.append(f"{self.media.ports.in_use} port pairs")
        return out
