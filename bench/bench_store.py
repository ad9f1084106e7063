"""Store benchmark: load + compile time for 10,000 subscribers, and lookups per second
from the LMDB snapshot against a plain dict of the same records, in the same run.

    python bench/bench_store.py [--users N] [--lookups N]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbx_core.store.build import build_config  # after the sys.path line
from pbx_core.store.compile import write_snapshot
from pbx_core.store.dbtext import read_dir
from pbx_core.store.snapshot import Snapshot


def make_tables(directory: Path, users: int) -> None:
    lines = ["id(int,auto) username(string) domain(string) password(string) ha1(string,null)"]
    lines += [f"{i}:{10000 + i}:pbx.local:secret-{i}\\:x:" for i in range(1, users + 1)]
    (directory / "subscriber").write_text("\n".join(lines) + "\n")
    ext = ["username(string) display_name(string,null) dnd(int)"]
    ext += [f"{10000 + i}:User {i}:0" for i in range(1, users + 1, 2)]
    (directory / "pbx_extension").write_text("\n".join(ext) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "tables"
        d.mkdir()
        make_tables(d, args.users)
        t0 = time.perf_counter()
        tables = read_dir(d)
        t1 = time.perf_counter()
        config = build_config(tables)
        t2 = time.perf_counter()
        write_snapshot(config, Path(tmp) / "snapshot.mdb")
        t3 = time.perf_counter()
        print(f"subscribers: {args.users}")
        print(f"load (parse dbtext):      {t1 - t0:8.3f} s")
        print(f"build (check + model):    {t2 - t1:8.3f} s")
        print(f"compile (write LMDB):     {t3 - t2:8.3f} s")
        print(f"load + compile total:     {t3 - t0:8.3f} s")

        rng = random.Random(1)
        keys = [(f"{10000 + rng.randint(1, args.users)}", "pbx.local") for _ in range(args.lookups)]
        plain = dict(config.users)  # the baseline: the same records in a dict
        with Snapshot(Path(tmp) / "snapshot.mdb") as snap:
            t0 = time.perf_counter()
            for user, domain in keys:
                snap.user(user, domain)
            t_lmdb = time.perf_counter() - t0
            t0 = time.perf_counter()
            for user, domain in keys:
                snap._raw("user", f"{user}@{domain}")  # the get without the decode
            t_raw = time.perf_counter() - t0
            t0 = time.perf_counter()
            for user, domain in keys:
                plain.get(f"{user}@{domain}")
            t_dict = time.perf_counter() - t0
        lmdb_rate = args.lookups / t_lmdb
        dict_rate = args.lookups / t_dict
        print(f"lookups user@domain, LMDB snapshot: {lmdb_rate:12,.0f} /s")
        print(f"  of which LMDB get alone:          {args.lookups / t_raw:12,.0f} /s")
        print(f"lookups user@domain, plain dict:    {dict_rate:12,.0f} /s")
        print(f"dict / LMDB ratio:                  {dict_rate / lmdb_rate:12.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
