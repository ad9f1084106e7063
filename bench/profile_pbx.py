"""Where `pbx run` spends its time under SIPp load: the same set-up as bench_calls.py
(tables, SIPp scenarios, server on core 0, SIPp on core 1), but the server runs
under cProfile and the top functions are printed when it stops.

    python bench/profile_pbx.py --workload register --calls 20000
    python bench/profile_pbx.py --workload call --calls 3000 --sort cumulative

Profiling slows the server several times over, so read shares of the time, not
rates. The raw profile is kept with --out FILE (open it with `python -m pstats`).

A garbage collection is charged to whatever function happened to allocate when it
started, so its cost shows up scattered over unrelated lines. `--gc off` runs the
server with the collector disabled for a clean profile of the work itself; the
collector's own share is printed in either case (from gc.callbacks).
"""

from __future__ import annotations

import argparse
import io
import pstats
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_calls as bc  # the bench's own set-up, found through sys.path

# The server's bootstrap: collector on or off, the time each collection takes added
# up per generation and written out at exit, `pbx` run under cProfile.
BOOT = """
import atexit, cProfile, gc, runpy, sys, time
mode, prof, gc_out = sys.argv[1:4]
sys.argv = ["pbx", *sys.argv[4:]]
spent = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
started = [0.0]
def on_gc(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        spent[info["generation"]][0] += 1
        spent[info["generation"]][1] += time.perf_counter() - started[0]
gc.callbacks.append(on_gc)
if mode == "off":
    gc.disable()
def report():
    with open(gc_out, "w") as f:
        f.write(", ".join(f"gen{g} {n} runs {t:.3f} s" for g, (n, t) in spent.items()))
atexit.register(report)
cProfile.run('runpy.run_module("pbx_core", run_name="__main__")', prof)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workload", choices=("register", "call"), default="register")
    ap.add_argument("--calls", type=int, default=10000, help="SIPp calls to run")
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    ap.add_argument("--top", type=int, default=40, help="functions to print")
    ap.add_argument("--out", help="keep the raw profile here")
    ap.add_argument("--gc", choices=("on", "off"), default="on", help="the server's collector")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-pbx-") as d:
        tmp = Path(d)
        tables = bc.write_tables(tmp / "tables")
        prof = Path(args.out).resolve() if args.out else tmp / "pbx.prof"
        port, callee_port = bc.free_port(), bc.free_port()
        cmd = [sys.executable, "-c", BOOT, args.gc, str(prof), str(tmp / "gc.txt"), "run"]
        cmd += ["--config", str(tables), "--listen", f"127.0.0.1:{port}"]
        cmd += ["--state", str(tmp / "state.mdb")]
        env = {"PBX_RUNTIME_DIR": str(tmp / "pbx-run"), "PYTHONPATH": str(bc.ROOT)}
        work = tmp / "work"
        work.mkdir()
        server = bc.Server.start("pbx", cmd, port, work, env)
        try:
            if args.workload == "register":
                users = bc.write_users(work / "users.csv")
                result = bc.sipp(
                    "register_auth.xml",
                    port,
                    work,
                    calls=args.calls,
                    inflight=args.inflight,
                    keys={},
                    extra=["-inf", str(users)],
                )
            else:
                bc.register_callee(port, callee_port, work, bc.CALLEE, f"change-me-{bc.CALLEE}")
                callee = bc.start_callee(callee_port, work)
                try:
                    result = bc.sipp(
                        "call_uac.xml",
                        port,
                        work,
                        calls=args.calls,
                        inflight=args.inflight,
                        keys={"callee": bc.CALLEE},
                    )
                finally:
                    bc.stop(callee)
        finally:
            server.stop()  # SIGTERM: the daemon stops cleanly and cProfile writes out
        print(
            f"{args.workload}: {result.ok} ok, {result.failed} failed,"
            f" {result.rate:.0f}/s under the profiler"
        )
        if not prof.exists():
            print("no profile written (did the server stop cleanly?)", file=sys.stderr)
            return 1
        gc_file = tmp / "gc.txt"
        if gc_file.exists():
            print(f"garbage collector: {gc_file.read_text().strip()}")
        out = io.StringIO()
        stats = pstats.Stats(str(prof), stream=out)
        stats.strip_dirs().sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
