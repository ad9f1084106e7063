"""OPTIONS round trips per second with SIPp as the load: `pbx run` against the Python
ceiling (responders that parse nothing), all measured in this run.

    python bench/bench_options.py [--calls N] [--inflight N]

Server pinned to core 0, SIPp to core 1 (taskset), UDP on loopback, SIPp keeping
`--inflight` transactions outstanding. Prints each rate and the PBX's ratio to the
best ceiling.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "bench" / "scenarios" / "options.xml"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() != 1 else []


def wait_ready(proc: subprocess.Popen[bytes], stream: Path, word: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if word in stream.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server did not start: {stream.read_text(errors='replace')}")


def sipp_rate(port: int, calls: int, inflight: int, tmp: Path) -> tuple[float, int, int]:
    stf = tmp / "stats.csv"
    stf.unlink(missing_ok=True)
    cmd = [*pin(1), "sipp", f"127.0.0.1:{port}", "-sf", str(SCENARIO), "-m", str(calls)]
    cmd += ["-r", "1000000", "-l", str(inflight), "-t", "u1", "-i", "127.0.0.1", "-nostdin"]
    cmd += ["-trace_stat", "-stf", str(stf), "-fd", "60", "-timeout", "120s"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=False, capture_output=True, cwd=tmp, timeout=180)
    elapsed = time.monotonic() - t0
    rows = list(csv.reader(stf.open(), delimiter=";"))
    stats = dict(zip(rows[0], rows[-1], strict=False))
    ok = int(stats["SuccessfulCall(C)"])
    failed = int(stats["FailedCall(C)"])
    return ok / elapsed, ok, failed


def measure(name: str, cmd: list[str], ready: str, args: argparse.Namespace, tmp: Path) -> float:
    port = free_port()
    err = tmp / f"{name}.log"
    full = [*pin(0), *[c.replace("PORT", str(port)) for c in cmd]]
    proc = subprocess.Popen(full, stdout=err.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_ready(proc, err, ready)
        sipp_rate(port, min(2000, args.calls), args.inflight, tmp)  # warm-up
        rate, ok, failed = sipp_rate(port, args.calls, args.inflight, tmp)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    loss = failed / max(1, ok + failed) * 100
    print(f"  {name:<28} {rate:>9.0f} OPTIONS/s   ({ok} ok, {failed} failed, {loss:.2f} %)")
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=60000)
    ap.add_argument("--inflight", type=int, default=64)
    args = ap.parse_args()
    if not shutil.which("sipp"):
        print("sipp not found (apt-get install sip-tester)", file=sys.stderr)
        return 2
    py = sys.executable
    print(f"OPTIONS round trips, SIPp UDP, {args.calls} transactions, {args.inflight} in flight")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg = tmp / "config"
        cfg.mkdir()
        # SIPp is one source sending thousands of requests a second: trust it, as an
        # installer trusts the trunk, or the per-source rate limit answers 503.
        (cfg / "pbx_settings").write_text(
            "name(string) value(string,null)\nsec_trusted:127.0.0.1\n"
        )
        ceil_a = measure(
            "ceiling asyncio Datagram",
            [py, "bench/ceiling_responder.py", "PORT", "asyncio"],
            "ready",
            args,
            tmp,
        )
        ceil_r = measure(
            "ceiling add_reader socket",
            [py, "bench/ceiling_responder.py", "PORT", "reader"],
            "ready",
            args,
            tmp,
        )
        pbx = measure(
            "pbx run",
            [
                py,
                "-m",
                "pbx_core",
                "run",
                "--config",
                str(cfg),
                "--listen",
                "127.0.0.1:PORT",
                "--state",
                str(tmp / "state.mdb"),
            ],
            "PBX ready",
            args,
            tmp,
        )
    best = max(ceil_a, ceil_r)
    print(f"  pbx / best ceiling = {pbx / best:.2f}   (pbx / asyncio ceiling = {pbx / ceil_a:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
