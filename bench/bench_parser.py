"""SIP parser throughput on one core: parse + serialize of typical messages.

    python bench/bench_parser.py [--seconds S]

For each message: parse only, parse + the headers a server reads (Via, From, To,
Call-ID, CSeq), parse + validate() of every known header, and serialize. The
baseline in the same run is `bytes.split` of the same message into lines (the least
any parser must do), so the ratios travel between machines.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbx_core.sip.message import parse_message  # after the path fix above

REGISTER = (
    b"REGISTER sip:pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK-524287-1---4b3c3f1e;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:1001@192.168.1.23:5060;rinstance=6f8e1c2a;transport=UDP>\r\n"
    b'To: "1001" <sip:1001@pbx.example.com>\r\n'
    b'From: "1001" <sip:1001@pbx.example.com>;tag=8a4f2c1b\r\n'
    b"Call-ID: YjM4ZjE2ZTQ5NWQ1OGE3NjQ1ZjNjN2E5YzI1ZDA.\r\n"
    b"CSeq: 2 REGISTER\r\nExpires: 3600\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b'Authorization: Digest username="1001",realm="pbx.example.com",'
    b'nonce="Z2l2ZW4tbm9uY2U",uri="sip:pbx.example.com",response="0123456789abcdef0123456789abcdef",'
    b'algorithm=MD5,cnonce="abc",nc=00000001,qop=auth\r\n'
    b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n"
)
SDP = (
    b"v=0\r\no=- 3840119123 3840119123 IN IP4 192.168.1.23\r\ns=-\r\nc=IN IP4 192.168.1.23\r\n"
    b"t=0 0\r\nm=audio 11780 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)
INVITE = (
    b"INVITE sip:1002@pbx.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK-524287-1---77ac1e2b;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"Contact: <sip:1001@192.168.1.23:5060;transport=UDP>\r\n"
    b"To: <sip:1002@pbx.example.com>\r\n"
    b'From: "Alice" <sip:1001@pbx.example.com>;tag=9b1c7d2e\r\n'
    b"Call-ID: NjQ0ZDJjNzE4MmI3MzFjNTk0ZWE0Y2M2NWU4NmQ.\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE\r\n"
    b"Content-Type: application/sdp\r\nSupported: replaces, norefersub, timer\r\n"
    b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP
OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKpbx1a2b3c"
    b";received=192.168.1.10;rport=5060\r\n"
    b"Record-Route: <sip:192.168.1.10;lr>\r\n"
    b"Contact: <sip:1002@192.168.1.24:5060>\r\n"
    b"To: <sip:1002@pbx.example.com>;tag=3f2a1b\r\n"
    b'From: "Alice" <sip:1001@pbx.example.com>;tag=9b1c7d2e\r\n'
    b"Call-ID: NjQ0ZDJjNzE4MmI3MzFjNTk0ZWE0Y2M2NWU4NmQ.\r\n"
    b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP


def rate(fn: Callable[[], object], seconds: float) -> float:
    n = 0
    batch = 200
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    s = ap.parse_args().seconds
    print(
        f"{'message':<10} {'split lines':>12} {'parse':>10} {'+core hdrs':>11} "
        f"{'+validate':>10} {'serialize':>10}   (messages/s, one core)"
    )
    for name, data in (("REGISTER", REGISTER), ("INVITE", INVITE), ("200 OK", OK200)):
        msg = parse_message(data)

        def core(d: bytes = data) -> object:
            m = parse_message(d)
            return m.top_via, m.from_, m.to, m.call_id, m.cseq

        def full(d: bytes = data) -> None:
            parse_message(d).validate()

        base = rate(lambda d=data: d.split(b"\r\n"), s)
        p = rate(lambda d=data: parse_message(d), s)
        c = rate(core, s)
        v = rate(full, s)
        w = rate(lambda m=msg: bytes(m), s)
        print(f"{name:<10} {base:>12.0f} {p:>10.0f} {c:>11.0f} {v:>10.0f} {w:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
