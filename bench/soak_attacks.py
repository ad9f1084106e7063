"""The attack soak of issue 11 for longer than the suite runs it.

    python bench/soak_attacks.py [--seconds S] [pytest options ...]

Runs tests/interop/test_soak.py (SIPp phones calling and registering while hostile
SDP, TCP bursts, slowloris, missing headers, a Via-TCP reflector and sipvicious
attack) with PBX_SOAK_SECONDS=S (default 600; the suite uses 75). The test prints
its figures (RSS and open files per round) and keeps them in soak-figures.txt under
its tmp dir; its assertions are the same at any length: every call and registration
served, nothing left behind, RSS within 4 MB and open files within 8 of the first half.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="length of the soak (>= 75)")
    args, rest = parser.parse_known_args()
    if args.seconds < 75:
        parser.error("--seconds must be at least 75 (slowloris connections get 60 s)")
    cmd = [sys.executable, "-m", "pytest", "tests/interop/test_soak.py", "-s", "-q", *rest]
    env = {**os.environ, "PBX_SOAK_SECONDS": str(args.seconds)}
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
