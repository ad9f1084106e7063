"""Conference rooms on one core: the jitter a room's mixer adds and the CPU it takes,
against the anchored relay of the same number of legs, measured in the same run.

    python bench/bench_conference.py [--members 50,100] [--seconds 10] [--room 5]

The PBX side runs in one process on a real asyncio loop (the daemon's media engine:
legs read by ``add_reader``, each room's MixBridge ticking on its own 20 ms timer,
``level`` on as conference rooms have it); the phones run in another process: every
phone sends one 20 ms G.711 µ-law packet per tick on a paced schedule (two talkers
per room with tones, the others faint line noise) and time-stamps what comes back.

* ``relay`` — members/2 anchored calls (AnchoredCall): each packet relayed to the
  partner;
* ``rooms`` — members/room rooms of ``--room`` members.

Per leg, the added jitter is |inter-arrival - 20 ms| of the packets a phone
receives (the phones' own send pacing is in both, so the ratio compares the PBX's
part); we print p50/p99 over all legs, the PBX process's CPU (share of one core),
packets received per packet sent (relay: 1.00 unless lost; a room sends every tick,
before the first and after the last packet in too, so it may exceed 1), and the
ratios rooms/relay. No assertion: a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_mixer import _frames, _port_of, _sdp  # noqa: E402

from pbx_core.media.bridge import MixBridge  # noqa: E402
from pbx_core.media.engine import MediaEngine  # noqa: E402

HDR = struct.Struct("!BBHII")
PTIME = 0.02


def _server(kind: str, n: int, room: int, ports: list[int], seconds: float, q: mp.Queue) -> None:  # type: ignore[type-arg]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    engine = MediaEngine(loop, "127.0.0.1", 40000, 44999)
    targets = [0] * n
    bridges = []
    if kind == "relay":
        for i in range(0, n - 1, 2):
            call, offer = engine.anchor(_sdp(ports[i]))
            answer = call.answer(_sdp(ports[i + 1]))
            targets[i], targets[i + 1] = _port_of(answer), _port_of(offer)
        if n % 2:  # an odd one out: an echo leg, so every packet is still in and out
            leg, answer = engine.endpoint(_sdp(ports[n - 1]))
            leg.echo()
            targets[n - 1] = _port_of(answer)
    else:
        for start in range(0, n, room):
            bridge = MixBridge(engine, max_members=64, level=True)
            for i in range(start, min(n, start + room)):
                leg, answer = engine.endpoint(_sdp(ports[i]))
                targets[i] = _port_of(answer)
                bridge.add(leg)
            bridges.append(bridge)
    q.put(targets)
    c0 = time.process_time()
    loop.run_until_complete(asyncio.sleep(seconds))
    q.put((time.process_time() - c0) / seconds)
    for b in bridges:
        b.close()
    engine.close()
    loop.close()


def _phones(n: int, room: int, seconds: float) -> tuple[list[socket.socket], list[int]]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        socks.append(s)
    return socks, [s.getsockname()[1] for s in socks]


def run(kind: str, n: int, room: int, seconds: float) -> dict[str, float]:
    socks, ports = _phones(n, room, seconds)
    q: mp.Queue = mp.Queue()  # type: ignore[type-arg]
    proc = mp.Process(target=_server, args=(kind, n, room, ports, seconds + 1.0, q))
    proc.start()
    targets = q.get(timeout=30)
    tones = [_frames(300 + 170 * i, 6000, 50) for i in range(2)]
    noise = _frames(1234, 20, 50)
    arrivals: list[list[float]] = [[] for _ in range(n)]
    t0 = time.perf_counter() + 0.1
    ticks = int(seconds / PTIME)
    for k in range(ticks):
        due = t0 + k * PTIME
        while True:  # receive until it is time to send the next tick
            now = time.perf_counter()
            for i, s in enumerate(socks):
                while True:
                    try:
                        s.recv(2048)
                    except BlockingIOError:
                        break
                    arrivals[i].append(now)
            if now >= due:
                break
            time.sleep(min(0.0005, due - now))
        for i, s in enumerate(socks):
            talker = i % room if kind == "rooms" else i % 2
            payload = (
                tones[talker][k % 50]
                if talker < 2 and (kind == "rooms" or i < 2 * room)
                else noise[k % 50]
            )
            s.sendto(
                HDR.pack(0x80, 0, k & 0xFFFF, k * 160, 1000 + i) + payload,
                ("127.0.0.1", targets[i]),
            )
    cpu = q.get(timeout=30)
    proc.join(timeout=10)
    for s in socks:
        s.close()
    jit: list[float] = []
    got = 0
    for arr in arrivals:
        got += len(arr)
        tail = arr[25:]  # warm-up: prefill
        jit += [abs((b - a) - PTIME) * 1000 for a, b in itertools.pairwise(tail)]
    jit.sort()

    def pct(p: float) -> float:
        return jit[min(len(jit) - 1, int(p * len(jit)))] if jit else float("nan")

    return {"p50": pct(0.5), "p99": pct(0.99), "cpu": cpu * 100, "out": got / (n * ticks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", default="50,100")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--room", type=int, default=5)
    args = ap.parse_args()
    print(
        f"{'legs':>5}  {'relay p50/p99 ms':>16}  {'rooms p50/p99 ms':>16}  {'relay cpu':>9}  "
        f"{'rooms cpu':>9}  {'out/in r/m':>10}  {'p99 ratio':>9}  {'cpu ratio':>9}"
    )
    for n in (int(x) for x in args.members.split(",")):
        relay = run("relay", n, args.room, args.seconds)
        rooms = run("rooms", n, args.room, args.seconds)
        r, m = relay, rooms
        print(
            f"{n:>5}  {r['p50']:>7.2f}/{r['p99']:<8.2f}  {m['p50']:>7.2f}/{m['p99']:<8.2f}  "
            f"{r['cpu']:>8.1f}%  {m['cpu']:>8.1f}%  {r['out']:>4.2f}/{m['out']:<5.2f}  "
            f"{m['p99'] / max(r['p99'], 1e-3):>9.2f}  {m['cpu'] / max(r['cpu'], 1e-3):>9.2f}"
        )


if __name__ == "__main__":
    main()
