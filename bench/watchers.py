"""A farm of lamp keys: `--phones` phones on loopback, each subscribing (RFC 6665,
digest auth) to the `dialog` state of `--keys` extensions and answering every NOTIFY
200, until SIGTERM. bench/bench_lamps.py runs it against `pbx run`.

Phone i is user FIRST+i (password pw-FIRST+i, as bench_calls.write_tables makes
them), on a UDP socket of its own; key k of phone i watches extension
FIRST + (i + 1 + k) % phones, and the first --keys phones watch `--callee` too (so a
call to it lights that many lamps). Prints "subscribed N failed M" once all answered,
then "notifies N" each second.

    python bench/watchers.py --port PORT [--phones 200] [--keys 30] [--first 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import re
import secrets
import signal
import sys
from typing import cast

DOMAIN = "pbx.local"
PACE = 400  # SUBSCRIBEs sent a second (the set-up; the load measured is afterwards)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324  # SIP digest is MD5


def _param(header: str, name: str) -> str:
    m = re.search(rf'{name}="?([^",]*)"?', header)
    return m.group(1) if m else ""


class Phone(asyncio.DatagramProtocol):
    def __init__(self, farm: Farm, user: str) -> None:
        self.farm, self.user = farm, user
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.pending: dict[str, tuple[str, asyncio.Future[int]]] = {}  # call-id -> target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def subscribe(self, target: str, auth: str = "", cseq: int = 1, call_id: str = "") -> None:
        call_id = call_id or secrets.token_hex(8)
        tag = call_id[:8]
        lines = [
            f"SUBSCRIBE sip:{target}@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            f"From: <sip:{self.user}@{DOMAIN}>;tag={tag}",
            f"To: <sip:{target}@{DOMAIN}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} SUBSCRIBE",
            f"Contact: <sip:{self.user}@127.0.0.1:{self.port}>",
            "Event: dialog",
            "Accept: application/dialog-info+xml",
            "Expires: 3600",
            "Max-Forwards: 70",
        ]
        if auth:
            lines.append(auth)
        assert self.transport is not None  # noqa: S101
        self.transport.sendto(
            ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode(), self.farm.pbx
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        text = data.decode(errors="replace")
        head, _, _ = text.partition("\r\n\r\n")
        first, *rest = head.split("\r\n")
        headers: dict[str, str] = {}
        for line in rest:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        if first.startswith("NOTIFY"):
            self.farm.notifies += 1
            keep = [ln for ln in rest if ln.split(":", 1)[0].strip().lower() in _ECHO]
            reply = "\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""])
            assert self.transport is not None  # noqa: S101
            self.transport.sendto(reply.encode(), addr)
            return
        if not first.startswith("SIP/2.0"):
            return
        status = int(first.split()[1])
        call_id = headers.get("call-id", "")
        entry = self.pending.get(call_id)
        if entry is None or status < 200:
            return
        target, done = entry
        cseq = int(headers.get("cseq", "1").split()[0])
        challenge = headers.get("www-authenticate") or headers.get("proxy-authenticate")
        if status in (401, 407) and challenge and cseq == 1:
            realm, nonce = _param(challenge, "realm"), _param(challenge, "nonce")
            uri = f"sip:{target}@{DOMAIN}"
            ha1 = _md5(f"{self.user}:{realm}:pw-{self.user}")
            ha2 = _md5(f"SUBSCRIBE:{uri}")
            nc, cnonce = "00000001", secrets.token_hex(4)
            if "auth" in _param(challenge, "qop"):
                resp = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
                extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
            else:
                resp = _md5(f"{ha1}:{nonce}:{ha2}")
                extra = ""
            name = "Authorization" if status == 401 else "Proxy-Authorization"
            auth = (
                f'{name}: Digest username="{self.user}", realm="{realm}", nonce="{nonce}", '
                f'uri="{uri}", response="{resp}", algorithm=MD5{extra}'
            )
            self.subscribe(target, auth, 2, call_id)
            return
        del self.pending[call_id]
        if not done.done():
            done.set_result(status)


_ECHO = ("via", "from", "to", "call-id", "cseq")


class Farm:
    def __init__(self, port: int) -> None:
        self.pbx = ("127.0.0.1", port)
        self.notifies = 0


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    farm = Farm(args.port)
    phones: list[Phone] = []
    for i in range(args.phones):
        _, proto = await loop.create_datagram_endpoint(
            lambda i=i: Phone(farm, str(args.first + i)), local_addr=("127.0.0.1", 0)
        )
        phones.append(proto)
    jobs: list[asyncio.Future[int]] = []
    pairs = [
        (p, str(args.first + (i + 1 + k) % args.phones))
        for i, p in enumerate(phones)
        for k in range(args.keys)
    ]
    pairs += [(phones[i], args.callee) for i in range(min(args.keys, args.phones))]
    for n, (phone, target) in enumerate(pairs):
        done: asyncio.Future[int] = loop.create_future()
        call_id = secrets.token_hex(8)
        phone.pending[call_id] = (target, done)
        phone.subscribe(target, call_id=call_id)
        jobs.append(done)
        if n % 40 == 39:
            await asyncio.sleep(40 / PACE)
    statuses = await asyncio.gather(
        *(asyncio.wait_for(j, 30) for j in jobs), return_exceptions=True
    )
    ok = sum(1 for s in statuses if s == 200)
    print(f"subscribed {ok} failed {len(statuses) - ok}", flush=True)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    for _ in itertools.count():
        try:
            await asyncio.wait_for(asyncio.shield(stop), 1.0)
            break
        except TimeoutError:
            print(f"notifies {farm.notifies}", flush=True)
    return 0 if ok == len(statuses) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--phones", type=int, default=200)
    ap.add_argument("--keys", type=int, default=30)
    ap.add_argument("--first", type=int, default=2000)
    ap.add_argument("--callee", default="101")
    return asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
