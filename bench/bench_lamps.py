"""Busy lamps under load (issue 17), measured on `pbx run` in one run: 200 phones x 30
lamp keys = 6,000 `dialog` subscriptions (bench/watchers.py: digest-authenticated
SUBSCRIBEs from loopback, every NOTIFY answered), and the REGISTER and call set-up
benchmarks of bench_calls.py with and without them.

    python bench/bench_lamps.py [--phones 200] [--keys 30] [--seconds 6]

Printed: the daemon's RSS before and after the subscriptions (VmRSS), its CPU to set
them up (one SUBSCRIBE with a challenge each: an hour of phones refreshing costs the
same), then the two workloads without and with them, and the ratios with/without
(aim: within 10 %). The callee of the call workload (101) is watched by `--keys`
phones, so each call lights that many lamps (coalesced: a change waits 20 ms).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_calls as bc  # after the sys.path line

ROOT = bc.ROOT


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_tables(dest: Path, phones: int, first: int, subscriptions: int) -> Path:
    """bench_calls' tables plus an extension for every watching phone (users FIRST..:
    bench_calls made them subscribers) and room for the subscriptions."""
    tables = bc.write_tables(dest)
    ext = (tables / "pbx_extension").read_text().rstrip("\n").splitlines()
    names = [c.split("(")[0] for c in ext[0].split()]
    values = {"ring_timeout": "20", "call_waiting": "1"}
    for i in range(phones):
        row = {"id": str(len(ext)), "username": str(first + i), "display_name": f"Phone {i}"}
        ext.append(":".join((row | values).get(n, "") for n in names))
    (tables / "pbx_extension").write_text("\n".join(ext) + "\n")
    settings = (tables / "pbx_settings").read_text().rstrip("\n")
    (tables / "pbx_settings").write_text(f"{settings}\nsub_max_total:{subscriptions + 100}\n")
    return tables


def workloads(label: str, args: argparse.Namespace, server: bc.Server, work: Path) -> dict:
    out: dict[str, bc.Result | None] = {}
    users = bc.write_users(work / "users.csv")
    out["register"] = bc.measure(
        f"{label}: REGISTER with auth",
        args,
        server,
        lambda calls, inflight: bc.sipp(
            "register_auth.xml",
            server.port,
            work,
            calls=calls,
            inflight=inflight,
            keys={},
            extra=["-inf", str(users)],
        ),
    )
    callee_port = bc.free_port()
    bc.register_callee(server.port, callee_port, work, bc.CALLEE, f"change-me-{bc.CALLEE}")
    callee = bc.start_callee(callee_port, work)
    try:
        out["call"] = bc.measure(
            f"{label}: call set-ups",
            args,
            server,
            lambda calls, inflight: bc.sipp(
                "call_uac.xml",
                server.port,
                work,
                calls=calls,
                inflight=inflight,
                keys={"callee": bc.CALLEE},
            ),
        )
    finally:
        bc.stop(callee)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--phones", type=int, default=200)
    ap.add_argument("--keys", type=int, default=30)
    ap.add_argument("--first", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=64)
    args = ap.parse_args()
    if not 1 <= args.phones <= bc.USERS or not 1 <= args.keys < args.phones:
        ap.error(f"--phones 1..{bc.USERS}, --keys 1..phones-1")
    total = args.phones * args.keys + args.keys
    print(f"{args.phones} phones x {args.keys} keys (+{args.keys} on {bc.CALLEE}) = {total}")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lamps-") as d:
        tmp = Path(d)
        tables = write_tables(tmp / "tables", args.phones, args.first, total)
        for label in ("without", "with"):
            work = tmp / label
            work.mkdir()
            cmd, env, port = bc.pbx_server(ROOT, tables, tmp, label)
            server = bc.Server.start(label, cmd, port, work, env)
            farm: subprocess.Popen[str] | None = None
            try:
                time.sleep(1)
                before = rss_mb(server.proc.pid)
                if label == "with":
                    cpu0, t0 = server.cpu_seconds(), time.monotonic()
                    farm_cmd = [*bc.pin(1), sys.executable, str(ROOT / "bench" / "watchers.py")]
                    farm_cmd += ["--port", str(port), "--phones", str(args.phones)]
                    farm_cmd += ["--keys", str(args.keys), "--first", str(args.first)]
                    farm = subprocess.Popen(
                        farm_cmd,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    assert farm.stdout is not None  # noqa: S101
                    line = farm.stdout.readline().strip()
                    took, cpu = time.monotonic() - t0, server.cpu_seconds() - cpu0
                    print(f"  watchers: {line} in {took:.1f} s; the PBX's CPU {cpu:.2f} s")
                    if not line.startswith(f"subscribed {total} failed 0"):
                        bc.FAILURES.append("watchers")
                        return 1
                    time.sleep(2)
                    after = rss_mb(server.proc.pid)
                    print(
                        f"  pbx RSS {before:.1f} MB -> {after:.1f} MB: "
                        f"+{after - before:.1f} MB for {total} subscriptions"
                    )
                else:
                    print(f"  pbx RSS {before:.1f} MB")
                results[label] = workloads(label, args, server, work)
                if farm is not None and farm.poll() is not None:
                    print("  ** the watchers stopped during the run **")
                    return 1
            finally:
                if farm is not None:
                    farm.terminate()
                    out, _ = farm.communicate(timeout=10)
                    notes = [ln for ln in out.splitlines() if ln.startswith("notifies")]
                    print(f"  watchers: {notes[-1] if notes else 'no NOTIFY counted'}")
                server.stop()
    print()
    for workload in ("register", "call"):
        a, b = results["with"].get(workload), results["without"].get(workload)
        if a and b and b.rate:
            print(f"  with / without, {workload}: {a.rate / b.rate:.2f} (aim >= 0.90)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
