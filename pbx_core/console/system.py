"""What the console needs from the system: IP addresses for the banner, the network
settings file the boot scripts read, and the few commands the menu runs (ping, logs,
reboot). Every command is run without a shell, with arguments checked first."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
import socket
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

from pbx_core.store.dbtext import write_file_atomic

SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})|\[?[0-9A-Fa-f:.]+\]?")


def addresses() -> list[str]:
    """'eth0 10.0.2.15/24' for every interface with an IPv4 address, loopback aside."""
    out: list[str] = []
    try:
        names = sorted(os.listdir("/sys/class/net"))
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            if name == "lo":
                continue
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24])
            except OSError:
                continue  # no IPv4 address on it
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            out.append(f"{name} {addr}/{prefix}")
    return out


def network_problems(settings: Mapping[str, str]) -> list[str]:
    """Why these net_* settings cannot be applied (empty when they can)."""
    if settings.get("net_mode", "dhcp") != "static":
        return []
    problems = []
    address = settings.get("net_address", "")
    try:
        iface = ipaddress.IPv4Interface(address if "/" in address else "-")
        if iface.network.prefixlen == 32 or iface.ip == iface.network.network_address:
            problems.append(f"net_address {iface} is not a host address in a network")
    except ValueError:
        problems.append("static network: net_address must be ADDRESS/PREFIX, e.g. 192.168.1.2/24")
    gw = settings.get("net_gateway", "")
    if gw:
        try:
            ipaddress.IPv4Address(gw)
        except ValueError:
            problems.append(f"net_gateway {gw!r} is not an IPv4 address")
    for dns in filter(None, re.split(r"[,\s]+", settings.get("net_dns", ""))):
        try:
            ipaddress.IPv4Address(dns)
        except ValueError:
            problems.append(f"net_dns: {dns!r} is not an IPv4 address")
    return problems


def network_conf(settings: Mapping[str, str]) -> str:
    """The file /etc/init.d/network reads (rootfs_overlay/etc/network.conf's keys)."""
    lines = [
        "# Written by `pbx console` from the settings net_* at each commit;",
        "# change them there (menu 1), not here.",
        "IFACE=eth0",
        f"MODE={settings.get('net_mode', 'dhcp')}",
    ]
    if settings.get("net_mode") == "static":
        lines.append(f"ADDRESS={settings.get('net_address', '')}")
        if settings.get("net_gateway"):
            lines.append(f"GATEWAY={settings['net_gateway']}")
        dns = " ".join(filter(None, re.split(r"[,\s]+", settings.get("net_dns", ""))))
        if dns:
            lines.append(f"DNS={dns}")
    return "\n".join(lines) + "\n"


def write_network_conf(path: Path, settings: Mapping[str, str]) -> str | None:
    """Write the file if it would change; a note for the user, or None if unchanged."""
    text = network_conf(settings)
    try:
        old = path.read_text()
    except FileNotFoundError:
        old = None
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if old == text or (old is None and settings.get("net_mode", "dhcp") == "dhcp"):
        return None  # the factory file says DHCP already
    if not path.parent.is_dir():
        return f"network settings not applied: {path.parent} does not exist here"
    try:
        write_file_atomic(path, text.encode())
    except OSError as e:
        return f"cannot write {path}: {e.strerror}"
    return "network settings saved; they take effect at the next reboot"


def remove_network_conf(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def run(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run a system command (no shell); its status and output."""
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]}: not available on this system\n"
    try:
        res = subprocess.run(  # noqa: S603  # fixed programs, checked arguments, no shell
            argv, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {timeout:g} s\n"
    return res.returncode, res.stdout + res.stderr


def valid_host(host: str) -> bool:
    return bool(_HOST.fullmatch(host)) and not host.startswith("-")
