"""Conference mixing benchmark: the CPU one 20 ms tick of a MixBridge costs, against
relaying the same packets as two-party calls, measured in the same run.

    python bench/bench_mixer.py [--members 3,8,32] [--ticks 500] [--repeat 3]

For each size N, fake phones (UDP sockets on loopback, in this process) each send
one 20 ms µ-law packet per tick, and we time only the PBX's side of the tick:

* ``relay``   — N/2 anchored calls (today's AnchoredCall): every leg reads its
  packet and forwards it to its partner (N packets in, N out);
* ``mix 2``   — one bridge of N members, two of them talking (a tone), the others
  sending faint line noise (below the bridge's QUIET level): every leg reads and
  decodes its packet into its jitter buffer, then ``mix_once`` mixes and encodes
  and sends a frame to each member (N in, N out);
* ``mix all`` — the same with everyone talking (at most ``max_speakers`` = 8 are
  mixed; the others still cost their decode and jitter buffer).

Figures are µs per tick: the median over a run (time.perf_counter around the PBX's
work only; sending and draining the fake phones are outside), the least of
``--repeat`` runs done in turn (a shared machine only ever adds time); the share of
one core that is (µs / 20,000), and the ratio to relay.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pbx_core.media.bridge import MixBridge  # noqa: E402
from pbx_core.media.codecs import g711  # noqa: E402
from pbx_core.media.engine import MediaEngine  # noqa: E402
from pbx_core.media.leg import MediaLeg  # noqa: E402

HDR = struct.Struct("!BBHII")


def _sdp(port: int) -> bytes:
    return (
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
    ).encode()


def _frames(hz: float, amplitude: float, count: int) -> list[bytes]:
    n = 160 * count
    pcm = struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
    )
    enc = g711.ulaw_encode(pcm)
    return [enc[i : i + 160] for i in range(0, n, 160)]


class Phones:
    """One UDP socket per phone, sending to its leg's port."""

    def __init__(self, n: int) -> None:
        self.socks = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.socks.append(s)
        self.ports = [s.getsockname()[1] for s in self.socks]
        self.targets: list[int] = [0] * n
        self.seq = 0

    def send(self, payloads: list[bytes]) -> None:
        self.seq += 1
        for i, s in enumerate(self.socks):
            pkt = HDR.pack(0x80, 0, self.seq & 0xFFFF, self.seq * 160, 1000 + i) + payloads[i]
            s.sendto(pkt, ("127.0.0.1", self.targets[i]))

    def drain(self) -> int:
        got = 0
        for s in self.socks:
            while True:
                try:
                    s.recv(2048)
                except BlockingIOError:
                    break
                got += 1
        return got

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _port_of(body: bytes) -> int:
    for line in body.decode().split("\r\n"):
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError("no m=audio")


def _payloads(n: int, talkers: int, ticks: int) -> list[list[bytes]]:
    tones = [_frames(300 + 170 * i, 6000, 50) for i in range(min(talkers, n))]
    noise = _frames(1234, 20, 50)  # about -64 dBFS: line noise
    return [
        [tones[i][k % 50] if i < talkers else noise[(k + i) % 50] for i in range(n)]
        for k in range(ticks)
    ]


def bench_relay(n: int, ticks: int) -> float:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(loop, "127.0.0.1", 36000, 36999)
    phones = Phones(n)
    legs: list[MediaLeg] = []
    for i in range(0, n - 1, 2):
        call, offer = engine.anchor(_sdp(phones.ports[i]))
        answer = call.answer(_sdp(phones.ports[i + 1]))
        phones.targets[i] = _port_of(answer)
        phones.targets[i + 1] = _port_of(offer)
        legs += [call.caller, call.callee]
    if n % 2:  # an odd one out: an echo leg, so every packet is still in and out
        leg, answer = engine.endpoint(_sdp(phones.ports[n - 1]))
        leg.echo()
        phones.targets[n - 1] = _port_of(answer)
        legs.append(leg)
    times = _run(phones, legs, None, _payloads(n, 2, ticks))
    phones.close()
    engine.close()
    loop.close()
    return times


def bench_mix(n: int, talkers: int, ticks: int) -> float:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(loop, "127.0.0.1", 36000, 36999)
    phones = Phones(n)
    bridge = MixBridge(engine)
    legs = []
    for i in range(n):
        leg, answer = engine.endpoint(_sdp(phones.ports[i]))
        phones.targets[i] = _port_of(answer)
        bridge.add(leg)
        legs.append(leg)
    times = _run(phones, legs, bridge, _payloads(n, talkers, ticks))
    bridge.close()
    phones.close()
    engine.close()
    loop.close()
    return times


def _run(
    phones: Phones, legs: list[MediaLeg], bridge: MixBridge | None, payloads: list[list[bytes]]
) -> float:
    samples = []
    out = 0
    for k, tick in enumerate(payloads):
        phones.send(tick)
        time.sleep(0.0002)  # let loopback deliver
        t0 = time.perf_counter()
        for leg in legs:
            leg._rtp_readable()
        if bridge is not None:
            bridge.mix_once(time.monotonic())
        elapsed = time.perf_counter() - t0
        got = phones.drain()
        if k >= 10:  # warm-up: jitter buffers prefilling
            samples.append(elapsed)
            out += got
    if out < len(samples) * len(legs) * 0.95:
        raise SystemExit(f"only {out} packets out for {len(samples)} ticks x {len(legs)} legs")
    return statistics.median(samples) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", default="3,8,32")
    ap.add_argument("--ticks", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(
        f"{'members':>7}  {'relay µs':>9}  {'mix 2 µs':>9}  {'mix all µs':>10}  "
        f"{'mix 2/relay':>11}  {'all/relay':>9}  {'mix all % core':>14}"
    )
    for n in (int(x) for x in args.members.split(",")):
        runs = [
            (bench_relay(n, args.ticks), bench_mix(n, 2, args.ticks), bench_mix(n, n, args.ticks))
            for _ in range(max(1, args.repeat))
        ]
        relay, two, everyone = (min(r[i] for r in runs) for i in range(3))
        print(
            f"{n:>7}  {relay:>9.0f}  {two:>9.0f}  {everyone:>10.0f}  "
            f"{two / relay:>11.1f}  {everyone / relay:>9.1f}  {everyone / 200:>13.1f}%"
        )


if __name__ == "__main__":
    main()
