"""An office in a test: the PBX's `Engine` on a copy of the factory tables, a real
media engine (RTP sockets on 127.0.0.1), the recorded `FakeStack`, a `ClockLoop` the
test moves, and simulated `Phone`s that register, call and answer through the
engine's own request path (digest included).

A phone's behaviour when called is its `mode`: `answer` (180, then 200 with SDP),
`busy` (180, then 486), `ring` (180 and nothing more: it never answers unless the test
calls `pick_up`), `dead` (nothing at all: the INVITE transaction times out after
64*T1, Timer B, and the PBX's callback hears None). The PBX's CANCEL gets 200 and
the INVITE 487; its BYE gets 200; its ACKs are recorded. A caller ACKs every 2xx it gets at once.

Everything happens inside the loop (`Office.run`), nothing between steps; a ring
timeout of 20 s fires in `office.advance(20)` at once.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbx_core.features.api import Feature
from pbx_core.features.registry import FEATURES
from pbx_core.media.engine import MediaEngine
from pbx_core.pbx.call_state import Call
from pbx_core.pbx.engine import Engine
from pbx_core.sip.digest_client import DigestClient
from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.store.feature_schema import register_features
from pbx_core.store.generations import Store
from pbx_core.store.state import StateStore
from tests.harness.clock import ClockLoop
from tests.harness.stack import FakeStack, ResponseCb

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"
DOMAIN = "pbx.local"
RTP_PORTS = (34100, 34399)  # not the range tests/pbx/pbx_harness.py uses
TIMER_B = 32.0  # 64 * T1: an INVITE nobody answers at all times out

# A trunk to a provider the harness plays (not 127.0.0.1: the trunk's address is
# trusted for inbound calls, and the phones live on 127.0.0.1).
PROVIDER = ("127.0.0.2", 5090)
TRUNK_HEADER = (
    "id(int,auto) name(string) enabled(int) host(string) port(int) transport(string) "
    "username(string,null) password(string,null) register(int) caller_id(string,null)"
)
PROVIDER_TRUNK = [TRUNK_HEADER, f"1:provider:1:{PROVIDER[0]}:{PROVIDER[1]}:udp:::0:"]

# Every column the harness's extension table sets (the factory's table has fewer).
EXTENSION_HEADER = (
    "id(int,auto) username(string) domain(string,null) display_name(string,null) "
    "ring_timeout(int) call_class(string) dnd(int) call_waiting(int) "
    "forward_all(string,null) forward_busy(string,null) forward_noanswer(string,null)"
)


def sdp(port: int, host: str = "127.0.0.1") -> bytes:
    lines = (
        "v=0",
        f"o=- 1 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:101 telephone-event/8000",
        "a=ptime:20",
    )
    return ("\r\n".join(lines) + "\r\n").encode()


def message(text: str, body: bytes = b"", ctype: str | None = None) -> Request:
    head = text.strip().replace("\n", "\r\n")
    if ctype:
        head += f"\r\nContent-Type: {ctype}"
    msg = parse_message(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    assert isinstance(msg, Request)
    return msg


def extension_row(
    n: int,
    number: str,
    *,
    ring_timeout: int = 20,
    call_class: str = "national",
    dnd: bool = False,
    call_waiting: bool = True,
    forward_all: str = "",
    forward_busy: str = "",
    forward_noanswer: str = "",
) -> str:
    """One row of the harness's extension table (EXTENSION_HEADER)."""
    cols = (str(n), number, "", f"Phone {number}", str(ring_timeout), call_class)
    cols += (str(int(dnd)), str(int(call_waiting)), forward_all, forward_busy, forward_noanswer)
    return ":".join(cols)


# ---------------------------------------------------------------------- media


class RtpSocket:
    """A phone's RTP port: a real UDP socket on 127.0.0.1 whose port the phone's SDP
    names; the test sends RTP (audio, RFC 4733 key presses) and reads what came back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.ssrc = 0x1234_0000 + self.port
        self.seq = 1
        self.ts = 160

    def send(self, port: int, pt: int, payload: bytes, marker: bool = False) -> None:
        head = struct.pack(
            "!BBHII", 0x80, pt | (0x80 if marker else 0), self.seq, self.ts, self.ssrc
        )
        self.sock.sendto(head + payload, ("127.0.0.1", port))
        self.seq = (self.seq + 1) & 0xFFFF

    def audio(self, port: int, payload: bytes) -> None:
        """One 20 ms PCMU frame."""
        self.send(port, 0, payload)
        self.ts += 160

    def key(self, port: int, digit: str) -> None:
        """One key press as RFC 4733 telephone-events (start, then three end packets)."""
        event = "0123456789*#ABCD".index(digit)
        self.send(port, 101, struct.pack("!BBH", event, 10, 160), marker=True)
        for _ in range(3):
            self.send(port, 101, struct.pack("!BBH", event, 0x80 | 10, 800))
        self.ts += 800

    def received(self) -> list[bytes]:
        got = []
        while True:
            try:
                got.append(self.sock.recv(2048))
            except BlockingIOError:
                return got

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- calls as phones see them


@dataclass
class Incoming:
    """A call the PBX offers a phone (one INVITE of a fork)."""

    phone: Phone
    invite: Request
    cb: ResponseCb
    tag: str
    at: float  # when it reached the phone (the office's clock)
    state: str = "ringing"  # ringing, answered, busy, cancelled, ended, dead
    acked: bool = False
    final: int | None = None  # the final status this phone sent

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    def header(self, name: str) -> list[str]:
        return self.invite.headers.getall(name)

    def reply(self, status: int, body: bytes = b"") -> None:
        if status >= 200:
            self.final = status
        resp = self.invite.reply(status, to_tag=self.tag)
        resp.headers.add("Contact", f"<sip:{self.phone.number}@127.0.0.1:{self.phone.port}>")
        if body:
            resp.body = body
            resp.headers.add("Content-Type", "application/sdp")
        self.cb(resp)

    def bye(self) -> None:
        """The callee hangs up an answered call."""
        self.phone.office.run(self.phone.send_bye, self.invite, self.tag, False)
        self.state = "ended"


@dataclass
class Outgoing:
    """A call a phone places: the INVITE's server key at the PBX and what came back."""

    phone: Phone
    number: str
    call_id: str
    from_tag: str
    key: object
    invite: Request
    rtp: RtpSocket | None = None
    state: str = "calling"  # calling, answered, failed, ended

    @property
    def office(self) -> Office:
        return self.phone.office

    @property
    def status(self) -> int | None:
        """The final status the PBX gave this call (None: still ringing)."""
        return self.office.stack.final(self.key)

    @property
    def final(self) -> Response:
        (resp,) = self.office.stack.finals[self.key]
        return resp

    @property
    def provisionals(self) -> list[int]:
        return [r.status for r in self.office.stack.provisionals.get(self.key, [])]

    @property
    def pbx_call(self) -> Call | None:
        return self.office.engine.calls.by_key.get(self.key)  # type: ignore[call-overload]

    def cancel(self) -> None:
        req = message(
            f"""CANCEL {self.invite.uri} SIP/2.0
Via: {self.invite.headers.get("via")}
From: {self.invite.headers.get("from")}
To: <sip:{self.number}@{DOMAIN}>
Call-ID: {self.call_id}
CSeq: {self.invite.cseq.seq} CANCEL
Max-Forwards: 70"""
        )
        cancel_key = ("CANCEL", self.call_id, self.invite.cseq.seq)
        self.office.run(
            self.office.engine.on_request, req, self.phone.address, cancel_key, self.key
        )
        assert self.office.stack.final(cancel_key) == 200

    def hang_up(self) -> None:
        """The caller hangs up an answered call (BYE)."""
        resp = self.final
        assert resp.status == 200, resp.status
        self.office.run(self.phone.send_bye, self.invite, resp.to.tag, True)
        self.state = "ended"

    @property
    def pbx_port(self) -> int:
        """The RTP port the PBX's answer names."""
        for line in self.final.body.decode().splitlines():
            if line.startswith("m=audio "):
                return int(line.split()[1])
        raise AssertionError("no audio in the answer")

    def keys(self, digits: str) -> None:
        """Press keys: RFC 4733 packets to the PBX's RTP port, each read by the loop."""
        assert self.rtp is not None
        for d in digits:
            self.rtp.key(self.pbx_port, d)
            self.office.settle_io()


# ---------------------------------------------------------------------- phones


class Phone:
    def __init__(
        self, office: Office, number: str, port: int, password: str, host: str = "127.0.0.1"
    ) -> None:
        self.office = office
        self.number = number
        self.port = port
        self.password = password
        self.address = ("UDP", host, port)
        self.mode = "answer"
        self.incoming: list[Incoming] = []
        self.outgoing: list[Outgoing] = []
        self.byes: list[Request] = []  # BYEs the PBX sent this phone
        self._cseq = itertools.count(10)

    # the phone as a UAC --------------------------------------------------------
    def register(self, expires: int = 3600) -> int:
        """REGISTER, answer the 401 with digest; the final status."""
        office = self.office
        client = DigestClient(self.number, self.password)
        status = 0
        for attempt in (1, 2):
            auth = ""
            if attempt == 2:
                creds = client.authorization("REGISTER", f"sip:{DOMAIN}", f"rc{self.port}")
                auth = f"\nAuthorization: {creds}"
            cseq = next(self._cseq)
            req = message(
                f"""REGISTER sip:{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKreg{self.port}x{cseq}
From: <sip:{self.number}@{DOMAIN}>;tag=r{self.port}
To: <sip:{self.number}@{DOMAIN}>
Call-ID: reg-{self.number}-{self.port}
CSeq: {cseq} REGISTER
Max-Forwards: 70
Contact: <sip:{self.number}@127.0.0.1:{self.port}>
Expires: {expires}{auth}"""
            )
            key = ("REGISTER", self.port, cseq)
            office.run(office.engine.on_request, req, self.address, key, None)
            resp = office.stack.finals[key][0]
            status = resp.status
            if attempt == 1:
                assert status == 401, status
                assert client.on_challenge(resp.headers.getall("www-authenticate"))
        return status

    def call(self, number: str, body: bytes | None = None, *, auth: bool = True) -> Outgoing:
        """INVITE `number` with SDP, answering the PBX's 407 once (`auth`: a trunk's
        provider is trusted by its address and sends one INVITE)."""
        office = self.office
        n = next(office.ids)
        call_id = f"call{n}@{self.port}"
        rtp = None
        if body is None:
            rtp = RtpSocket()
            self.office.sockets.append(rtp)
            body = sdp(rtp.port)
        client = DigestClient(self.number, self.password)
        key: object = None
        req: Request | None = None
        for cseq in (1, 2) if auth else (2,):
            creds_line = ""
            if cseq == 2 and auth:
                creds = client.authorization("INVITE", f"sip:{number}@{DOMAIN}", f"cn{n}")
                creds_line = f"\nProxy-Authorization: {creds}"
            req = message(
                f"""INVITE sip:{number}@{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP {self.address[1]}:{self.port};branch=z9hG4bKinv{n}x{cseq}
From: <sip:{self.number}@{DOMAIN}>;tag=from{n}
To: <sip:{number}@{DOMAIN}>
Call-ID: {call_id}
CSeq: {cseq} INVITE
Max-Forwards: 70
Contact: <sip:{self.number}@{self.address[1]}:{self.port}>{creds_line}""",
                body,
                "application/sdp" if body else None,
            )
            key = ("INVITE", call_id, cseq)
            out = Outgoing(self, number, call_id, f"from{n}", key, req, rtp)
            if cseq == 2:
                self.outgoing.append(out)
                office.outgoing[key] = out
            office.run(office.engine.on_request, req, self.address, key, None)
            if cseq == 1:
                (challenge,) = office.stack.finals[key]
                assert challenge.status == 407, challenge.status
                assert client.on_challenge(challenge.headers.getall("proxy-authenticate"))
        return self.outgoing[-1]

    def send_bye(self, invite: Request, remote_tag: str, as_caller: bool) -> None:
        """BYE on the dialog of `invite` (ours as caller, the PBX's as callee)."""
        cseq = invite.cseq.seq + 100
        ours, theirs = invite.from_.tag, remote_tag
        if not as_caller:  # the PBX was the caller: its From tag is the remote one
            ours, theirs = remote_tag, invite.from_.tag
        req = message(
            f"""BYE sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKbye{self.port}x{cseq}{ours}
From: <sip:{self.number}@{DOMAIN}>;tag={ours}
To: <sip:x@{DOMAIN}>;tag={theirs}
Call-ID: {invite.call_id}
CSeq: {cseq} BYE
Max-Forwards: 70"""
        )
        key = ("BYE", invite.call_id, ours)
        self.office.engine.on_request(req, self.address, key, None)
        self.office.bye_status[key] = self.office.stack.final(key)

    def ack(self, out: Outgoing, resp: Response) -> None:
        inv = out.invite
        req = message(
            f"""ACK sip:pbx@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKack{out.call_id.replace("@", "")}
From: {inv.headers.get("from")}
To: <sip:{out.number}@{DOMAIN}>;tag={resp.to.tag}
Call-ID: {out.call_id}
CSeq: {inv.cseq.seq} ACK
Max-Forwards: 70"""
        )
        self.office.engine.on_request(req, self.address, None, None)

    # the phone as a UAS --------------------------------------------------------
    def on_request(self, req: Request, cb: ResponseCb) -> None:
        if req.method == "INVITE" and req.to.tag is None:
            tag = f"t{self.port}x{len(self.incoming)}"
            inc = Incoming(self, req, cb, tag, self.office.loop.time())
            self.incoming.append(inc)
            if self.mode == "dead":  # a stale registration: nothing ever comes back
                inc.state = "dead"
                self.office.loop.call_later(TIMER_B, self._timer_b, inc)
                return
            inc.reply(180)
            if self.mode == "answer":
                inc.state = "answered"
                inc.reply(200, sdp(41000 + self.port % 1000))
            elif self.mode == "busy":
                inc.state = "busy"
                inc.reply(486)
            return
        cb(req.reply(200))
        if req.method == "CANCEL":
            for inc in self.incoming:
                if inc.call_id == req.call_id and inc.state == "ringing":
                    inc.state = "cancelled"
                    inc.reply(487)
        elif req.method == "BYE":
            self.byes.append(req)
            for inc in self.incoming:
                if inc.call_id == req.call_id:
                    inc.state = "ended"
            for out in self.outgoing:
                if out.call_id == req.call_id:
                    out.state = "ended"

    @staticmethod
    def _timer_b(inc: Incoming) -> None:
        """The INVITE client transaction gives up (RFC 3261 §17.1.1.2): the TU hears
        a timeout, once, unless a final response came."""
        if inc.final is None:
            inc.final = 408
            inc.cb(None)

    def on_ack(self, req: Request) -> None:
        for inc in self.incoming:
            if inc.call_id == req.call_id:
                inc.acked = True

    def ringing(self) -> list[Incoming]:
        return [i for i in self.incoming if i.state == "ringing"]

    def pick_up(self) -> Incoming:
        """Answer the call ringing here (mode `ring`)."""
        (inc,) = self.ringing()
        inc.state = "answered"
        self.office.run(inc.reply, 200, sdp(41000 + self.port % 1000))
        return inc


# ---------------------------------------------------------------------- the office


class Office:
    def __init__(
        self,
        tmp: Path,
        *,
        tables: dict[str, list[str]] | None = None,
        features: tuple[Feature, ...] = FEATURES,
    ) -> None:
        self.tmp = tmp
        register_features(features)  # as app.py does, before the store is read
        self.config = tmp / "etc"
        shutil.copytree(FACTORY, self.config)
        for name, lines in (tables or {}).items():
            self.write_table(name, lines)
        self.features = features
        self.loop = ClockLoop()
        self.stack = FakeStack(self.loop)
        self.stack.on_request = self._to_phone
        self.stack.on_send = self._sent
        self.stack.on_respond = self._responded
        self.ids = itertools.count(1)
        self.outgoing: dict[object, Outgoing] = {}
        self.bye_status: dict[object, int | None] = {}
        self.phones: dict[tuple[str, str, int], Phone] = {}
        self.sockets: list[RtpSocket] = []
        self._ports = itertools.count(5100)
        self.store = Store(self.config, runtime_dir=tmp / "run")
        self.media = MediaEngine(self.loop, "127.0.0.1", *RTP_PORTS)
        self.state_path = tmp / "state" / "state.mdb"
        self.state: StateStore | None = StateStore(self.state_path)
        self.engine = self._engine()

    def _engine(self) -> Engine:
        engine = Engine(
            self.stack, self.store, self.media, features=self.features, state=self.state
        )  # type: ignore[arg-type]
        engine.start()  # trunks (an IP host needs no lookup)
        return engine

    # tables --------------------------------------------------------------------
    def write_table(self, name: str, lines: list[str]) -> None:
        """Replace a table: its header line then its rows (dbtext)."""
        path = self.config / name
        path.write_text("\n".join(lines) + "\n")

    def reload(self, name: str, lines: list[str]) -> None:
        """Change a table and have the daemon reload it (as `pbx db` does)."""
        before = (self.config / name).stat().st_mtime_ns
        self.write_table(name, lines)
        path = self.config / name
        if path.stat().st_mtime_ns == before:  # a coarse file system clock
            os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
        assert self.store.reload()
        self.engine.reloaded()

    # time ----------------------------------------------------------------------
    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.loop.run(fn, *args)

    def advance(self, seconds: float) -> None:
        self.loop.advance(seconds)

    def settle_io(self, rounds: int = 20) -> None:
        """Let the loop read what reached its sockets (loopback UDP is there at once;
        a few rounds in case the kernel is slower), no time passing."""
        for _ in range(rounds):
            self.loop.settle()
            self.loop._round()  # one poll even when nothing is ready

    # phones --------------------------------------------------------------------
    def phone(self, number: str, *, register: bool = True, mode: str = "answer") -> Phone:
        p = Phone(self, number, next(self._ports), f"change-me-{number}")
        p.mode = mode
        self.phones[p.address] = p
        if register:
            assert p.register() == 200
        return p

    def provider(self, host: str = PROVIDER[0], port: int = PROVIDER[1]) -> Phone:
        """The provider's side of the trunk of PROVIDER_TRUNK: a peer that answers."""
        p = Phone(self, "provider", port, "", host=host)
        self.phones[p.address] = p
        return p

    def _to_phone(self, req: Request, dest: object, cb: ResponseCb) -> None:
        phone = self.phones.get(dest)  # type: ignore[call-overload]
        if phone is not None:
            self.loop.call_soon(phone.on_request, req, cb)

    def _sent(self, msg: Request | Response, dest: object) -> None:
        phone = self.phones.get(dest)  # type: ignore[call-overload]
        if phone is not None and isinstance(msg, Request) and msg.method == "ACK":
            phone.on_ack(msg)

    def _responded(self, key: object, resp: Response) -> None:
        out = self.outgoing.get(key)
        if out is None or resp.status < 200:
            return
        if resp.status < 300:
            if out.state == "calling":
                out.state = "answered"
                self.loop.call_soon(out.phone.ack, out, resp)
        else:
            out.state = "failed"

    # the end -------------------------------------------------------------------
    def restart(self) -> None:
        """Stop the engine (its writer flushes the toggles) and start a new one on
        the same tables and state database, as a daemon restart does. Phones must
        register again (registrations live in RAM)."""
        self.engine.close()
        self.loop.settle()
        assert self.state is not None
        self.state.close()
        self.state = StateStore(self.state_path)
        self.engine = self._engine()

    def left_behind(self) -> list[str]:
        """What finished calls must not leave: calls, INVITE keys, legs, ports, apps."""
        out = []
        calls = self.engine.calls
        if calls.calls:
            out.append(f"calls {[c.state.value for c in calls.calls.values()]}")
        if calls.by_key:
            out.append(f"{len(calls.by_key)} INVITE keys")
        if self.media.legs or self.media.calls:
            out.append(f"{len(self.media.legs)} legs, {len(self.media.calls)} media calls")
        if self.media.ports.in_use:
            out.append(f"{self.media.ports.in_use} port pairs")
        if self.engine.features.running_apps:
            out.append(f"{self.engine.features.running_apps} applications")
        return out

    def close(self) -> None:
        self.engine.close()
        self.loop.settle()  # the cancelled applications finish
        self.media.close()
        for rtp in self.sockets:
            rtp.close()
        self.store.close()
        if self.state is not None:
            self.state.close()
        self.loop.close()


def offices(tmp: Path, **kw: Any) -> Iterator[Office]:
    """A fixture body: an office, closed after the test."""
    office = Office(tmp, **kw)
    try:
        yield office
    finally:
        office.close()


@dataclass
class Tables:
    """Table contents for an office: the extension rows (EXTENSION_HEADER) and any
    other table's lines."""

    extensions: list[str] = field(default_factory=list)
    other: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, list[str]]:
        out = dict(self.other)
        if self.extensions:
            out["pbx_extension"] = [EXTENSION_HEADER, *self.extensions]
        return out


SUBSCRIBER_HEADER = (
    "id(int,auto) username(string) domain(string) password(string,null) ha1(string,null) "
    "ha1b(string,null)"
)


def subscribers(*numbers: str) -> list[str]:
    """A subscriber table with these extensions (password change-me-<number>)."""
    rows = [f"{i}:{n}:{DOMAIN}:change-me-{n}::" for i, n in enumerate(numbers, 1)]
    return [SUBSCRIBER_HEADER, *rows]


GROUP_HEADER = (
    "id(int,auto) number(string) name(string) strategy(string) members(string) "
    "ring_timeout(int) fallback_type(string) fallback(string,null)"
)


def groups(*rows: str) -> list[str]:
    """A ring group table: rows `number:strategy:members:ring_timeout:type:dest`."""
    out = [GROUP_HEADER]
    for i, row in enumerate(rows, 1):
        number, rest = row.split(":", 1)
        out.append(f"{i}:{number}:group {number}:{rest}")
    return out


def extensions(*rows: str) -> list[str]:
    """An extension table (EXTENSION_HEADER) with these rows (`extension_row`)."""
    return [EXTENSION_HEADER, *rows]
