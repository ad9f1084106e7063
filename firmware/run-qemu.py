"""Boot the Wafer PBX image in QEMU with the serial console on this terminal.

    .venv/bin/python firmware/run-qemu.py [--image output/images/cf.img] [--fresh]

The console is QEMU's `-serial mon:stdio`: type at the PBX's serial console as on the
real board. Press Ctrl-A then X to quit QEMU (Ctrl-A C toggles the QEMU monitor,
Ctrl-A H lists the keys). SIP is forwarded from 127.0.0.1:5060 (UDP and TCP) to the
guest, and the RTP range 10000-10039 to the same ports. The guest boots a working copy
of the image kept in output/run/, so what it writes to /data survives the next run
until the image is rebuilt (or --fresh).

Softphones on this machine register to 127.0.0.1:5060. QEMU's user networking is a
NAT: the guest (10.0.2.15) sees them all coming from 10.0.2.2, and they cannot reach
10.0.2.15. So the guest gets these settings (`host_settings`, handed over as the
fw_cfg file opt/org.wafer.pbx/settings, committed by /usr/sbin/pbx-run at boot):
lan_networks = loopback only (no phone is on the guest's LAN), external_media_address
127.0.0.1 and external_signaling_address 127.0.0.1:SIP-PORT (what the phones reach,
forwarded to the guest), and the RTP port range forwarded. The phones' RTP is latched
where it really comes from. `--factory-settings` boots without them (as a real box).

The test bench (tests/firmware/) builds its QEMU command line with `qemu_command`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = TOP / "output" / "images" / "cf.img"
RUN_DIR = TOP / "output" / "run"
GUEST_SIP_PORT = 5060


FW_CFG_NAME = "opt/org.wafer.pbx/settings"
MAX_FORWARDED = 200  # one QEMU host socket per port


def parse_range(text: str) -> range:
    """'10000-10009' -> range(10000, 10010); a single port is a range of one."""
    lo_text, _, hi_text = text.partition("-")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if hi_text else lo
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PORT or LOW-HIGH, got {text!r}") from None
    if not (1 <= lo <= hi <= 65535) or hi - lo >= MAX_FORWARDED:
        raise argparse.ArgumentTypeError(
            f"bad port range {text!r} (1-65535, at most {MAX_FORWARDED} ports)"
        )
    return range(lo, hi + 1)


def parse_rtp_range(text: str) -> range:
    """An RTP range: even first port, whole even/odd pairs, within 1024-65535."""
    ports = parse_range(text)
    if ports.start % 2 or len(ports) % 2 or ports.start < 1024:
        raise argparse.ArgumentTypeError(
            f"bad RTP range {text!r}: an even first port >= 1024 and whole pairs (e.g. 10000-10039)"
        )
    return ports


def host_settings(sip_port: int, rtp_ports: range) -> dict[str, str]:
    """The PBX settings that make softphones on this machine work through QEMU's
    user networking (see the module docstring). RTP is forwarded to the same port
    numbers, so the guest's range is the forwarded one."""
    return {
        "lan_networks": "127.0.0.0/8,::1/128",
        "external_media_address": "127.0.0.1",
        "external_signaling_address": f"127.0.0.1:{sip_port}",
        "rtp_port_min": str(rtp_ports.start),
        "rtp_port_max": str(rtp_ports.stop - 1),
    }


def write_settings(path: Path, settings: dict[str, str]) -> Path:
    """The fw_cfg file: NAME=VALUE lines (what `pbx db set --from` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    return path


def fw_cfg_args(settings_file: Path) -> list[str]:
    """QEMU arguments handing `settings_file` to the guest (a comma in the path
    is doubled, as QEMU's option syntax wants)."""
    return ["-fw_cfg", f"name={FW_CFG_NAME},file={str(settings_file).replace(',', ',,')}"]


def qemu_command(
    image: Path,
    *,
    serial: Sequence[str],
    sip_port: int = GUEST_SIP_PORT,
    rtp_ports: range = range(0),
    rtp_host_base: int | None = None,
    qmp: Path | None = None,
    memory_mb: int = 256,
    snapshot: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """The QEMU command line for the image on a PC like the wafer board.

    The CF card is an IDE disk on the PIIX controller (the kernel finds ata_piix by
    its PCI modalias), the NIC an e1000 without option ROM, the watchdog an i6300esb
    that resets the machine when it expires. `serial` is the serial port's QEMU
    arguments, `extra` any further ones. SIP (UDP and TCP) and the RTP ports are
    forwarded from 127.0.0.1: host `sip_port` -> guest 5060, host `rtp_host_base + i`
    -> guest `rtp_ports[i]`.
    """
    rtp_base = rtp_ports.start if rtp_host_base is None else rtp_host_base
    fwd = [
        f"hostfwd=udp:127.0.0.1:{sip_port}-:{GUEST_SIP_PORT}",
        f"hostfwd=tcp:127.0.0.1:{sip_port}-:{GUEST_SIP_PORT}",
    ]
    fwd += [f"hostfwd=udp:127.0.0.1:{rtp_base + i}-:{p}" for i, p in enumerate(rtp_ports)]
    drive = f"file={image},format=raw,if=ide,index=0,media=disk,cache=writeback"
    if snapshot:
        drive += ",snapshot=on"
    cmd = [
        "qemu-system-x86_64",
        "-machine", "pc",
        "-accel", "tcg",  # nested KVM here cannot boot a BIOS guest (docs/architecture.md)
        "-m", str(memory_mb),
        "-smp", "1",
        "-display", "none",
        "-nodefaults",
        "-no-user-config",
        "-drive", drive,
        "-netdev", "user,id=n0," + ",".join(fwd),
        "-device", "e1000,netdev=n0,romfile=",
        "-device", "i6300esb",
        "-action", "watchdog=reset",
        *serial,
        *extra,
    ]  # fmt: skip
    if qmp is not None:
        cmd += ["-qmp", f"unix:{qmp},server=on,wait=off"]
    return cmd


def working_copy(image: Path, fresh: bool) -> Path:
    """A sparse copy of the image in output/run, refreshed when the image is newer."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    copy = RUN_DIR / image.name
    if fresh or not copy.exists() or copy.stat().st_mtime < image.stat().st_mtime:
        tmp = copy.with_suffix(".tmp")
        # cp from PATH with our own arguments: keeps the copy sparse (shutil cannot).
        subprocess.run(["cp", "--sparse=always", str(image), str(tmp)], check=True)  # noqa: S603, S607
        os.replace(tmp, copy)
    return copy


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="default: %(default)s")
    p.add_argument("--fresh", action="store_true", help="start from a fresh copy of the image")
    p.add_argument("--snapshot", action="store_true", help="discard every write at exit")
    p.add_argument("--sip-port", type=int, default=GUEST_SIP_PORT, help="host port for SIP")
    p.add_argument(
        "--rtp-ports",
        type=parse_rtp_range,
        default=parse_rtp_range("10000-10039"),
        help="RTP ports forwarded to the same guest ports, the guest's RTP range "
        "(default 10000-10039: 10 calls)",
    )
    p.add_argument(
        "--factory-settings",
        action="store_true",
        help="hand the guest no settings (NAT, RTP range): as a real box boots",
    )
    p.add_argument("--memory", type=int, default=256, metavar="MB")
    args = p.parse_args(argv)

    if not args.image.is_file():
        print(f"run-qemu.py: no image at {args.image}: run ./build.sh image", file=sys.stderr)
        return 2
    if shutil.which("qemu-system-x86_64") is None:
        print("run-qemu.py: qemu-system-x86_64 is not installed (Debian: qemu-system-x86)",
              file=sys.stderr)  # fmt: skip
        return 2
    disk = args.image if args.snapshot else working_copy(args.image, args.fresh)
    extra: list[str] = []
    if not args.factory_settings:
        settings = host_settings(args.sip_port, args.rtp_ports)
        extra = fw_cfg_args(write_settings(RUN_DIR / "host-settings", settings))
    cmd = qemu_command(
        disk,
        serial=["-serial", "mon:stdio"],
        sip_port=args.sip_port,
        rtp_ports=args.rtp_ports,
        memory_mb=args.memory,
        snapshot=args.snapshot,
        extra=extra,
    )
    print(
        f"run-qemu.py: booting {disk}\n"
        f"  SIP on 127.0.0.1:{args.sip_port} (UDP+TCP), RTP {args.rtp_ports.start}-"
        f"{args.rtp_ports.stop - 1}/udp\n"
        f"  softphones: register to 127.0.0.1:{args.sip_port}, e.g. user 100, password "
        "change-me-100, domain pbx.local; dial 101, or *43 for the echo test\n"
        "  quit: Ctrl-A then X   (QEMU monitor: Ctrl-A then C)",
        file=sys.stderr,
    )
    try:
        # QEMU's command line is built above from our own options only.
        return subprocess.run(cmd, check=False).returncode  # noqa: S603
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
