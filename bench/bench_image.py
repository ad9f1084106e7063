"""Firmware image figures: sizes, boot time to "PBX ready" under QEMU TCG, RAM in use.

    .venv/bin/python bench/bench_image.py [--boots 3] [--no-build]

Builds the image first (incremental: firmware/build-image.sh), then boots fresh
copies of it. Boot phases are timed on the host as their lines appear on the serial
console; the kernel+init phase (QEMU start -> rcS done) is the baseline the PBX's own
start-up is compared with, measured in the same boots. Prints a table and writes
output/bench/image.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP))

from tests.firmware.qemu import READY, Machine, prepare_image  # noqa: E402  # after sys.path

IMAGES = TOP / "output" / "images"
PHASES = {
    "syslinux": re.compile(rb"SYSLINUX \d"),
    "initramfs": re.compile(rb"init: loading drivers"),
    "rcS done": re.compile(rb"rcS: boot done"),
    "PBX ready": READY,
}


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def xz_size(path: Path) -> int:
    """Bytes of `xz -6` of the file (what a download of the image would be)."""
    with subprocess.Popen(
        ["xz", "-6", "-T2", "-c", str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as xz:
        if xz.stdout is None:
            raise RuntimeError("xz: no pipe")
        total = 0
        while chunk := xz.stdout.read(1 << 20):
            total += len(chunk)
    if xz.returncode != 0:
        raise RuntimeError(f"xz {path} failed")
    return total


def du_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def sizes() -> dict[str, int]:
    cf = IMAGES / "cf.img"
    st = cf.stat()
    return {
        "image_raw": st.st_size,
        "image_allocated": st.st_blocks * 512,
        "image_xz": xz_size(cf),
        "rootfs_squashfs": (IMAGES / "rootfs.squashfs").stat().st_size,
        "kernel": (IMAGES / "vmlinuz").stat().st_size,
        "initramfs": (IMAGES / "initrd.xz").stat().st_size,
        "pbx_bundle_unpacked": du_bytes(TOP / "output" / "target" / "usr" / "lib" / "pbx"),
    }


def boot_once(work: Path, measure_ram: bool) -> dict[str, float]:
    work.mkdir(parents=True)
    disk = work / "cf.img"
    prepare_image(IMAGES / "cf.img", disk)
    m = Machine(disk, work)
    m.start()
    try:
        times: dict[str, float] = {}
        for name, rx in PHASES.items():
            m.console.expect(rx, 240)
            times[name] = time.monotonic() - m.started_at
        m.wait_shell()
        if measure_ram:
            _, free = m.console.run("free")
            mem = free.splitlines()[1].split()  # Mem: total used free shared buff/cache avail
            times["ram_total_kib"] = float(mem[1])
            times["ram_used_kib"] = float(mem[2])
            times["ram_available_kib"] = float(mem[6]) if len(mem) > 6 else float("nan")
            # One line per pbx process: its subcommand and VmRSS (kB). `pbx watchdog`
            # supervises `pbx run` when init starts the supervisor.
            _, procs = m.console.run(
                "for p in $(pidof pbx); do echo \"@@P $(tr '\\0' ' ' < /proc/$p/cmdline)"
                ' $(grep VmRSS /proc/$p/status)"; done'
            )
            for cmd, rss in re.findall(r"@@P \S*pbx (\w+) .*VmRSS:\s+(\d+) kB", procs):
                times[f"pbx_{cmd}_rss_kib"] = float(rss)
            if "pbx_run_rss_kib" not in times:
                raise RuntimeError(f"no `pbx run` process on the guest:\n{procs}")
            # The console on ttyS0 waits at its password prompt on a real box; here
            # the harness's shell has replaced it, so start another one on a FIFO and
            # read its RSS once it shows its prompt.
            _, out = m.console.run(
                "rm -f /tmp/bench-con && mkfifo /tmp/bench-con"
                " && { sleep 60 > /tmp/bench-con & }"
                " && { pbx console --failsafe 0 < /tmp/bench-con > /tmp/bench-con.out 2>&1 & }"
                " && c=$! && i=0"
                " && while ! grep -q 'Password: ' /tmp/bench-con.out && [ $i -lt 60 ];"
                " do sleep 1; i=$((i+1)); done"
                ' && echo "@@C $(grep VmRSS /proc/$c/status)"; kill $c',
                timeout=90,
            )
            found = re.search(r"@@C VmRSS:\s+(\d+) kB", out)
            if found is None:
                raise RuntimeError(f"no RSS of a `pbx console` on the guest:\n{out}")
            times["pbx_console_rss_kib"] = float(found.group(1))
        return times
    finally:
        m.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boots", type=int, default=3)
    p.add_argument("--no-build", action="store_true", help="use the image as it is")
    args = p.parse_args()
    if not args.no_build:
        print("building the image (firmware/build-image.sh) ...", flush=True)
        env = {**os.environ, "VENV": os.environ.get("VENV", sys.prefix)}
        res = subprocess.run(
            [str(TOP / "firmware" / "build-image.sh")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            print(res.stdout[-3000:] + res.stderr[-3000:], file=sys.stderr)
            return 1
    if not (IMAGES / "cf.img").is_file():
        print("no output/images/cf.img: run ./build.sh image", file=sys.stderr)
        return 2

    s = sizes()
    print("\nimage sizes")
    for key, value in s.items():
        print(f"  {key:22} {mib(value):>10}  ({value} bytes)")

    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        for i in range(args.boots):
            runs.append(boot_once(Path(tmp) / f"boot{i}", measure_ram=i == args.boots - 1))
            print(
                f"  boot {i + 1}: " + ", ".join(f"{k} {runs[-1][k]:.1f}s" for k in PHASES),
                flush=True,
            )
    med = {k: statistics.median(r[k] for r in runs) for k in PHASES}
    pbx_start = statistics.median(r["PBX ready"] - r["rcS done"] for r in runs)
    ram = runs[-1]
    print(f"\nboot under QEMU TCG, median of {args.boots} (QEMU start -> line on the console)")
    for k in PHASES:
        print(f"  {k:22} {med[k]:6.1f} s")
    print(
        f"  PBX start after rcS     {pbx_start:6.1f} s  "
        f"(x{pbx_start / med['rcS done']:.2f} of the kernel+init baseline "
        f"{med['rcS done']:.1f} s)"
    )
    print("\nRAM after boot (guest has 256 MiB)")
    print(f"  used (free)            {ram['ram_used_kib'] / 1024:6.1f} MiB")
    print(f"  available              {ram['ram_available_kib'] / 1024:6.1f} MiB")
    for key in sorted(k for k in ram if k.startswith("pbx_") and k.endswith("_rss_kib")):
        name = "pbx " + key[len("pbx_") : -len("_rss_kib")] + " RSS"
        print(f"  {name:22} {ram[key] / 1024:6.1f} MiB")

    out = TOP / "output" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "sizes_bytes": s,
        "boot_seconds_median": med,
        "pbx_start_seconds_median": pbx_start,
        "boots": runs,
    }
    (out / "image.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {out / 'image.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
