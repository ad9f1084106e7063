"""Media relay benchmark: concurrent relayed G.711 calls on one core.

    python bench/bench_media.py [--calls 100,200,300,400,500] [--seconds 4]

Each call is two fake phones (UDP sockets on loopback, in this process: the load
generator, pinned to core 1) sending 20 ms RTP packets (50/s each way) to a server
process pinned to core 0.  Calls are spread evenly over the 20 ms period, as real
phones are.  The server is, in turn:

* ``forwarder`` — the ceiling: a plain Python UDP forwarder (non-blocking sockets
  under loop.add_reader, one reused buffer, two sockets per call, no RTP work);
* ``relay``     — pbx_core.media anchoring every call (PCMU both sides);
* ``transcode`` — the same with the caller on PCMU and the callee on PCMA.

For each load we report loss, one-way transit through the server (p50/p99), the
jitter it adds (|difference of consecutive packets' transit|, p50/p99, the RFC 3550
D(i,j)) and the server's CPU use; then the most calls each server carried with
< 0.1 % loss and the ratios.  The generator's own noise is in every figure alike,
which is why the forwarder runs in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HDR = struct.Struct("!BBHII")
PERIOD = 0.020
LOSS_LIMIT = 0.001


# ---------------------------------------------------------------------------
# Server side (runs in a child process pinned to core 0)


def _offer(port: int, pt: int) -> bytes:
    name = "PCMU" if pt == 0 else "PCMA"
    return (
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt} 101\r\na=rtpmap:{pt} {name}/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
    ).encode()


class Forwarder:
    """The ceiling: forward datagrams between two sockets per call, latching."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.buf = bytearray(65536)
        self.view = memoryview(self.buf)
        self.socks: list[socket.socket] = []

    def setup(self, phones: list[list[int]]) -> list[list[int]]:
        out = []
        for pa, pb in phones:
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for s in (a, b):
                s.setblocking(False)
                s.bind(("127.0.0.1", 0))
                self.socks.append(s)
            dest = {a: [("127.0.0.1", pb)], b: [("127.0.0.1", pa)]}
            latch = {a: [("127.0.0.1", pa)], b: [("127.0.0.1", pb)]}
            for s, other in ((a, b), (b, a)):
                self.loop.add_reader(s.fileno(), self._readable, s, other, latch[s], dest[s])
            out.append([a.getsockname()[1], b.getsockname()[1]])
        return out

    def _readable(self, s: socket.socket, other: socket.socket, src: list, dst: list) -> None:
        buf, view = self.buf, self.view
        for _ in range(64):
            try:
                n, addr = s.recvfrom_into(buf)
            except BlockingIOError:
                return
            src[0] = addr
            other.sendto(view[:n], dst[0])

    def teardown(self) -> None:
        for s in self.socks:
            self.loop.remove_reader(s.fileno())
            s.close()
        self.socks = []


class Relay:
    def __init__(self, loop: asyncio.AbstractEventLoop, transcode: bool) -> None:
        from pbx_core.media.engine import MediaEngine, MediaSettings

        # In-band detection off: the load is not DTMF (it would be on only for
        # legs without telephone-event, which these have).
        self.engine = MediaEngine(loop, "127.0.0.1", 20000, 29999, MediaSettings(inband_dtmf=False))
        self.transcode = transcode
        self.calls: list = []

    def setup(self, phones: list[list[int]]) -> list[list[int]]:
        out = []
        for pa, pb in phones:
            call, offer = self.engine.anchor(_offer(pa, 0))
            call.answer(_offer(pb, 8 if self.transcode else 0))
            self.calls.append(call)
            out.append([call.caller.port, call.callee.port])
            del offer
        return out

    def teardown(self) -> None:
        for c in self.calls:
            c.close()
        self.calls = []


async def serve(kind: str) -> None:
    loop = asyncio.get_running_loop()
    server: Forwarder | Relay
    server = Forwarder(loop) if kind == "forwarder" else Relay(loop, kind == "transcode")
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"ready": True}), flush=True)
    while line := await reader.readline():
        msg = json.loads(line)
        if msg["cmd"] == "setup":
            legs = server.setup(msg["phones"])
            print(json.dumps({"legs": legs}), flush=True)
        elif msg["cmd"] == "teardown":
            server.teardown()
            print(json.dumps({"ok": True}), flush=True)


# ---------------------------------------------------------------------------
# Load generator


def _symbols() -> tuple[list[int], dict[int, int], list[int], dict[int, int]]:
    """16 byte values that survive µ-law -> A-law -> µ-law unchanged: the generator
    writes a packet counter with them, so a transcoded packet still says which
    packet it is.  Returns (µ-law symbols, decode of A-law, A-law symbols, decode of
    µ-law)."""
    from pbx_core.media.codecs.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW

    good = [v for v in range(256) if ALAW_TO_ULAW[ULAW_TO_ALAW[v]] == v]
    picked: list[int] = []
    seen: set[int] = set()
    for v in good:
        if ULAW_TO_ALAW[v] not in seen:
            picked.append(v)
            seen.add(ULAW_TO_ALAW[v])
        if len(picked) == 16:
            break
    mu = picked
    al = [ULAW_TO_ALAW[v] for v in mu]
    return mu, {a: i for i, a in enumerate(al)}, al, {m: i for i, m in enumerate(mu)}


def _check(ok: bool) -> None:
    if not ok:
        raise RuntimeError("the load generator or the server broke the protocol")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Load:
    def __init__(self, calls: int, transcode: bool) -> None:
        self.calls = calls
        self.socks: list[socket.socket] = []
        for _ in range(2 * calls):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            self.socks.append(s)
        self.ports = [s.getsockname()[1] for s in self.socks]
        mu, dec_al, al, dec_mu = _symbols()
        # Socket 2i is the caller (sends µ-law), 2i+1 the callee.
        self.send_sym = [mu, (al if transcode else mu)]
        self.recv_dec = [dec_mu, (dec_al if transcode else dec_mu)]
        self.pt = [0, 8 if transcode else 0]

    def run(self, legs: list[list[int]], seconds: float, pid: int) -> dict[str, float]:
        n = len(self.socks)
        dest = []
        for a, b in legs:
            dest += [("127.0.0.1", a), ("127.0.0.1", b)]
        ring = 4096
        sent_at = [[0.0] * ring for _ in range(n)]
        counter = [0] * n
        last_transit: list[float | None] = [None] * n
        transits: list[float] = []
        jitters: list[float] = []
        received = 0
        ep = select.epoll()
        fd_index = {}
        for i, s in enumerate(self.socks):
            ep.register(s.fileno(), select.EPOLLIN)
            fd_index[s.fileno()] = i
        slots = 20
        per_slot = [[i for i in range(n) if (i // 2) % slots == k] for k in range(slots)]
        ssrc = [0x10000 + i for i in range(n)]
        filler = [bytes([self.send_sym[i % 2][0]]) * 156 for i in range(n)]
        warm = 0.5
        t0 = time.monotonic()
        end = t0 + warm + seconds
        measure_from = t0 + warm
        sent = 0
        cpu0 = None
        tick = 0
        mono = time.monotonic
        socks = self.socks
        while True:
            due = t0 + tick * (PERIOD / slots)
            now = mono()
            if now >= due:
                if due >= end:
                    break
                if cpu0 is None and now >= measure_from:
                    cpu0, wall0 = _cpu(pid), now
                for i in per_slot[tick % slots]:
                    k = counter[i]
                    counter[i] = k + 1
                    sym = self.send_sym[i % 2]
                    tag = bytes(
                        (sym[(k >> 12) & 15], sym[(k >> 8) & 15], sym[(k >> 4) & 15], sym[k & 15])
                    )
                    pkt = (
                        HDR.pack(0x80, self.pt[i % 2], k & 0xFFFF, (k * 160) & 0xFFFFFFFF, ssrc[i])
                        + tag
                        + filler[i]
                    )
                    t = mono()
                    sent_at[i][k % ring] = t
                    with contextlib.suppress(BlockingIOError):  # a full buffer is loss
                        socks[i].sendto(pkt, dest[i])
                    if t >= measure_from:
                        sent += 1
                tick += 1
                continue
            timeout = max(0.0, due - now)
            for fd, _ in ep.poll(timeout):
                i = fd_index[fd]
                s = socks[i]
                dec = self.recv_dec[i % 2]
                src = i ^ 1
                while True:
                    try:
                        data = s.recv(2048)
                    except BlockingIOError:
                        break
                    t = mono()
                    p = data[12:16]
                    try:
                        k = dec[p[0]] << 12 | dec[p[1]] << 8 | dec[p[2]] << 4 | dec[p[3]]
                    except KeyError:
                        continue
                    sent_t = sent_at[src][k % ring]
                    if sent_t < measure_from:
                        continue
                    received += 1
                    tr = t - sent_t
                    transits.append(tr)
                    prev = last_transit[i]
                    if prev is not None:
                        jitters.append(abs(tr - prev))
                    last_transit[i] = tr
        cpu1, wall1 = _cpu(pid), mono()
        # Drain what is still in flight.
        drain_end = mono() + 0.2
        while mono() < drain_end:
            for fd, _ in ep.poll(0.02):
                i = fd_index[fd]
                while True:
                    try:
                        data = socks[i].recv(2048)
                    except BlockingIOError:
                        break
                    p = data[12:16]
                    dec = self.recv_dec[i % 2]
                    try:
                        k = dec[p[0]] << 12 | dec[p[1]] << 8 | dec[p[2]] << 4 | dec[p[3]]
                    except KeyError:
                        continue
                    if sent_at[i ^ 1][k % ring] >= measure_from:
                        received += 1
        ep.close()
        return {
            "sent": sent,
            "received": received,
            "loss": max(0.0, 1 - received / sent) if sent else 1.0,
            "transit_p50": _pct(transits, 0.5) * 1000,
            "transit_p99": _pct(transits, 0.99) * 1000,
            "jitter_p50": _pct(jitters, 0.5) * 1000,
            "jitter_p99": _pct(jitters, 0.99) * 1000,
            "cpu": (cpu1 - (cpu0 or cpu1)) / max(1e-9, wall1 - (wall0 if cpu0 else wall1)),
        }

    def close(self) -> None:
        for s in self.socks:
            s.close()


def _pin(cpu: int) -> list[str]:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


def build_generator() -> Path | None:
    """Compile rtp_load.c (a Python generator cannot keep 40,000 packets/s on time)."""
    import shutil
    import tempfile

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = Path(tempfile.mkdtemp(prefix="bench-media-")) / "rtp_load"
    src = Path(__file__).with_name("rtp_load.c")
    subprocess.run([cc, "-O2", "-o", str(out), str(src)], check=True)
    return out


def run_c(
    gen: Path, proc: subprocess.Popen[str], calls: int, kind: str, seconds: float
) -> dict[str, float]:
    _check(proc.stdin is not None and proc.stdout is not None)
    mu, _, al, _ = _symbols()
    callee = al if kind == "transcode" else mu
    g = subprocess.Popen(
        [
            *_pin(1),
            str(gen),
            str(calls),
            str(seconds),
            "0.5",
            bytes(mu).hex(),
            bytes(callee).hex(),
            "0",
            "8" if kind == "transcode" else "0",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    _check(g.stdin is not None and g.stdout is not None)
    ports = [int(x) for x in g.stdout.readline().split()]
    phones = [[ports[2 * i], ports[2 * i + 1]] for i in range(calls)]
    proc.stdin.write(json.dumps({"cmd": "setup", "phones": phones}) + "\n")
    proc.stdin.flush()
    legs = json.loads(proc.stdout.readline())["legs"]
    g.stdin.write(" ".join(str(p) for pair in legs for p in pair) + "\n")
    g.stdin.flush()
    _check(g.stdout.readline().strip() == "start")
    cpu0, wall0 = _cpu(proc.pid), time.monotonic()
    _check(g.stdout.readline().strip() == "end")
    cpu1, wall1 = _cpu(proc.pid), time.monotonic()
    sent, received, t50, t99, j50, j99 = g.stdout.readline().split()
    g.wait(timeout=10)
    s, r = int(sent), int(received)
    return {
        "sent": s,
        "received": r,
        "loss": max(0.0, 1 - r / s) if s else 1.0,
        "transit_p50": float(t50),
        "transit_p99": float(t99),
        "jitter_p50": float(j50),
        "jitter_p99": float(j99),
        "cpu": (cpu1 - cpu0) / (wall1 - wall0),
    }


class Server:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        cmd = [*_pin(0), sys.executable, __file__, "--serve", kind]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _check(self.proc.stdin is not None and self.proc.stdout is not None)
        json.loads(self.proc.stdout.readline())

    def run(self, calls: int, seconds: float, gen: Path | None) -> dict[str, float]:
        proc = self.proc
        _check(proc.stdin is not None and proc.stdout is not None)
        if gen is not None:
            r = run_c(gen, proc, calls, self.kind, seconds)
        else:
            load = Load(calls, self.kind == "transcode")
            phones = [[load.ports[2 * i], load.ports[2 * i + 1]] for i in range(calls)]
            proc.stdin.write(json.dumps({"cmd": "setup", "phones": phones}) + "\n")
            proc.stdin.flush()
            legs = json.loads(proc.stdout.readline())["legs"]
            r = load.run(legs, seconds, proc.pid)
            load.close()
        proc.stdin.write(json.dumps({"cmd": "teardown"}) + "\n")
        proc.stdin.flush()
        proc.stdout.readline()
        return r

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)


def measure_all(
    kinds: tuple[str, ...], loads: list[int], seconds: float, gen: Path | None, repeat: int
) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """Each load on each server in turn (interleaved, so a noisy neighbour on the
    machine hits all of them alike); with ``repeat`` > 1 the run with the lowest
    p99 jitter is kept."""
    servers = {k: Server(k) for k in kinds}
    results: dict[str, list[tuple[int, dict[str, float]]]] = {k: [] for k in kinds}
    live = set(kinds)
    try:
        for calls in loads:
            for k in kinds:
                if k not in live:
                    continue
                runs = [servers[k].run(calls, seconds, gen) for _ in range(repeat)]
                r = min(runs, key=lambda x: (x["loss"], x["jitter_p99"]))
                results[k].append((calls, r))
                print(
                    f"  {k:9} {calls:4} calls: loss {r['loss'] * 100:6.3f} %  transit p50 "
                    f"{r['transit_p50']:6.2f} p99 {r['transit_p99']:7.2f} ms  added jitter p50 "
                    f"{r['jitter_p50']:6.2f} p99 {r['jitter_p99']:7.2f} ms  server CPU "
                    f"{r['cpu'] * 100:5.1f} %",
                    flush=True,
                )
                if r["loss"] > 0.02 or r["cpu"] > 0.97:
                    live.discard(k)  # saturated: bigger loads only waste time
    finally:
        for s in servers.values():
            s.close()
    return results


def best(results: list[tuple[int, dict[str, float]]], jitter_ms: float | None = None) -> int:
    ok = [
        c
        for c, r in results
        if r["loss"] < LOSS_LIMIT and (jitter_ms is None or r["jitter_p99"] < jitter_ms)
    ]
    return max(ok) if ok else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default="100,200,300,400,500,600,800")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--serve", choices=["forwarder", "relay", "transcode"])
    ap.add_argument("--python-load", action="store_true", help="use the Python generator")
    ap.add_argument("--repeat", type=int, default=2, help="runs per load; the best is kept")
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    loads = [int(x) for x in args.calls.split(",")]
    print(
        f"media relay: {args.seconds:.0f} s per load (best of {args.repeat}), 50 packets/s "
        "each way per call, "
        "server on core 0, generator on core 1",
        flush=True,
    )
    gen = None if args.python_load else build_generator()
    print(f"load generator: {'rtp_load.c' if gen else 'Python (no C compiler, or --python-load)'}")
    kinds = ("forwarder", "relay", "transcode")
    results = measure_all(kinds, loads, args.seconds, gen, args.repeat)
    fwd, rel, tra = (best(results[k]) for k in kinds)
    fwd5, rel5, tra5 = (best(results[k], 5.0) for k in kinds)
    print()
    print(
        "| server | calls, < 0.1 % loss | calls, < 0.1 % loss and p99 added jitter < 5 ms "
        "| at 200 calls: added jitter p50 / p99 | server CPU at 200 calls |"
    )
    print("|---|---|---|---|---|")
    for k, n, n5 in (("forwarder", fwd, fwd5), ("relay", rel, rel5), ("transcode", tra, tra5)):
        at = dict(results[k]).get(200)
        jit = f"{at['jitter_p50']:.2f} / {at['jitter_p99']:.2f} ms" if at else "-"
        cpu = f"{at['cpu'] * 100:.0f} %" if at else "-"
        print(f"| {k} | {n}{'+' if n == loads[-1] else ''} | {n5} | {jit} | {cpu} |")
    print()
    if fwd and fwd5:
        print(
            f"relay / forwarder ceiling (calls, loss): {rel / fwd:.2f}; "
            f"(calls, loss + jitter): {rel5 / fwd5:.2f}"
        )
    f200, r200, t200 = (dict(results[k]).get(200) for k in kinds)
    if r200 and t200 and r200["cpu"] > 0:
        print(
            f"transcoding CPU / relay CPU at 200 calls: {t200['cpu'] / r200['cpu']:.2f} (aim < 2)"
        )
    if r200 and f200 and f200["cpu"] > 0:
        print(f"relay CPU / forwarder CPU at 200 calls: {r200['cpu'] / f200['cpu']:.2f}")


if __name__ == "__main__":
    main()
