"""The one judge of a configuration's settings: what the daemon would refuse.

Theory of operation. `pbx db check`, `pbx db compile`, a commit and the daemon's own
start and reload all ask `settings_problems` about the same typed values (every
setting of `schema.SETTINGS`, defaults filled in), so they cannot disagree: a
configuration `db check` passes is one the daemon starts with, and every value the
daemon's parts would refuse (the security policy's limits, the RTP port allocator's
range, the session timer's interval, the LAN and trusted networks) is refused here
first, with the setting's row named. The daemon's parts keep their own checks as a
last line; tests/store/test_judge.py proves they never fire on what this accepts.

Every integer setting has a range (`BOUNDS`): each one sizes memory or time
somewhere, and a value out of range is an error, never silently clamped.

The daemon calls `judge_snapshot` on every snapshot it opens (start and reload):
a snapshot compiled by an older version, or by hand, meets the same rules. One
exception: a setting of a feature not built yet (`future`), which only a snapshot
compiled before the setting was marked can hold, is logged, not refused: a device
upgraded with such a generation keeps running, and its next commit must drop it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from pbx_core.store import schema as sch
from pbx_core.store import settings
from pbx_core.store.errors import StoreError

log = logging.getLogger("pbx.store")

INT_MAX = 2**31 - 1
DAY = 86_400

# Inclusive ranges of the integer settings. One not listed is 0..INT_MAX.
BOUNDS: Mapping[str, tuple[int, int]] = {
    "sip_port": (1, 65_535),
    "rtp_port_min": (1024, 65_535),  # the RTP port allocator's range
    "rtp_port_max": (1024, 65_535),
    "vm_max_seconds": (1, 3600),
    "vm_max_messages": (1, 10_000),
    "reg_min_expires": (1, DAY),
    "reg_max_expires": (1, 7 * DAY),
    "sub_max_per_extension": (1, 1000),
    "sub_max_total": (1, 20_000),
    "rtp_timeout": (1, DAY),
    "session_expires": (0, DAY),
    "session_min_se": (1, DAY),
    "sec_ban_failures": (0, 10_000),  # 0 = never ban
    "sec_ban_window": (1, DAY),
    "sec_ban_seconds": (1, 365 * DAY),
    "sec_rate": (0, 1_000_000),  # 0 = no limit
    "sec_burst": (1, 1_000_000),
    "sec_max_sources": (16, 1_000_000),  # the security policy's memory bound
}
DEFAULT_BOUNDS = (0, INT_MAX)
MAX_DIGITS = 10  # an integer setting's text: more digits is out of range, not parsed


def bounds(name: str) -> tuple[int, int]:
    """An int setting's inclusive range: the core's from BOUNDS, a feature's from its
    declaration (`Setting.lo`/`hi`, required there: store/feature_schema.py)."""
    spec = sch.SETTINGS.get(name)
    if spec is not None and spec.lo is not None and spec.hi is not None:
        return spec.lo, spec.hi
    return BOUNDS.get(name, DEFAULT_BOUNDS)


@dataclass(frozen=True)
class Problem:
    """What is wrong with one or more settings; `names[0]` is where to point."""

    names: tuple[str, ...]
    message: str
    warning: bool = False
    future: bool = False  # a setting of a feature not built yet is set


def parse_int(name: str, text: str) -> int | str:
    """The value of an integer setting's text, or why it is not one."""
    body = text[1:] if text.startswith("-") else text
    if not body.isascii() or not body.isdigit():
        return f"setting {name!r} must be an integer"
    if len(body) > MAX_DIGITS:
        lo, hi = bounds(name)
        return f"setting {name!r} must be {lo}..{hi}"
    return int(text)


def typed_settings(given: Mapping[str, object]) -> tuple[dict[str, str | int], list[Problem]]:
    """Every setting, from `given` (text or typed values; None = default), typed as
    `schema.SETTINGS` says. Unknown names and unparsable values are problems."""
    values: dict[str, str | int] = {k: s.default for k, s in sch.SETTINGS.items()}
    problems: list[Problem] = []
    for name, value in given.items():
        spec = sch.SETTINGS.get(name)
        if spec is None:
            problems.append(Problem((name,), f"unknown setting {name!r}"))
            continue
        if value is None:
            continue
        if spec.type is int:
            n = value if isinstance(value, int) and not isinstance(value, bool) else None
            parsed = n if n is not None else parse_int(name, str(value))
            if isinstance(parsed, str):
                problems.append(Problem((name,), parsed))
                continue
            values[name] = parsed
        else:
            values[name] = str(value)
    return values, problems


def trusted_networks(text: str) -> tuple[str, ...]:
    """`sec_trusted`: comma-separated addresses and networks (brackets allowed around
    an IPv6 address). ValueError names the first one that is neither."""
    out = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        bare = entry.strip("[]")
        try:
            if "/" in bare:
                ipaddress.ip_network(bare, strict=False)
            else:
                ipaddress.ip_address(bare)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
        out.append(entry)
    return tuple(out)


def settings_problems(values: Mapping[str, str | int]) -> list[Problem]:
    """Every reason the daemon would refuse these settings (and the warnings), for
    typed values with every setting present (see `typed_settings`)."""
    out: list[Problem] = []
    for name, spec in sch.SETTINGS.items():
        value = values[name]
        if spec.type is int:
            lo, hi = bounds(name)
            if not isinstance(value, int) or not lo <= value <= hi:
                out.append(Problem((name,), f"setting {name!r} must be {lo}..{hi}, not {value}"))
        elif spec.choices and value not in spec.choices:
            out.append(
                Problem((name,), f"setting {name!r} must be one of {', '.join(spec.choices)}")
            )
        if spec.check is not None and not any(p.names[0] == name for p in out):
            problem = sch.run_check(spec.check, value)
            if problem:
                out.append(Problem((name,), f"setting {name!r}: {problem}"))
        if spec.future and value != spec.default and not any(p.names[0] == name for p in out):
            out.append(
                Problem(
                    (name,),
                    f"setting {name!r} belongs to {spec.future}, which is not built yet: "
                    f"remove it or leave it at its default {spec.default!r}",
                    future=True,
                )
            )
    if not str(values["domain"]).strip():
        out.append(Problem(("domain",), "setting 'domain' must not be empty (the SIP realm)"))
    bad = {p.names[0] for p in out}

    def ints(*names: str) -> list[int] | None:
        got = [values[n] for n in names]
        if bad.intersection(names) or not all(isinstance(v, int) for v in got):
            return None
        return [int(v) for v in got]

    ports = ints("rtp_port_min", "rtp_port_max")
    if ports is not None:
        problem = settings.check_rtp_range(*ports)
        if problem is not None:
            out.append(Problem(("rtp_port_min", "rtp_port_max"), problem))
    for name in ("external_media_address", "external_signaling_address"):
        problem = settings.check_external(name, str(values[name]))
        if problem is not None:
            out.append(Problem((name,), problem))
    reg = ints("reg_min_expires", "reg_max_expires")
    if reg is not None and reg[0] > reg[1]:
        out.append(
            Problem(
                ("reg_min_expires", "reg_max_expires"),
                f"setting 'reg_min_expires' ({reg[0]}) is above reg_max_expires ({reg[1]})",
            )
        )
    timers = ints("session_expires", "session_min_se")
    if timers is not None:
        expires, min_se = timers
        if 0 < expires < min_se:
            out.append(
                Problem(
                    ("session_expires", "session_min_se"),
                    f"setting 'session_expires' must be 0 (no session timers) or at least "
                    f"session_min_se ({min_se}), not {expires}",
                )
            )
        if min_se < settings.RFC4028_MIN_SE:
            out.append(
                Problem(
                    ("session_min_se",),
                    f"setting 'session_min_se' {min_se} is below RFC 4028's floor of "
                    f"{settings.RFC4028_MIN_SE} s (for tests only)",
                    warning=True,
                )
            )
    parsers = (("lan_networks", settings.parse_networks), ("sec_trusted", trusted_networks))
    for name, parse in parsers:
        try:
            parse(str(values[name]))
        except ValueError as exc:
            out.append(Problem((name,), f"setting {name!r}: {exc}"))
    return out


class _SnapshotLike(Protocol):
    @property
    def settings(self) -> dict[str, str | int]: ...

    def table_names(self) -> list[str]: ...


def judge_snapshot(snap: _SnapshotLike, where: str) -> None:
    """The daemon's start and reload check of a snapshot: StoreError (every problem,
    one per line) if it has no tables or settings the daemon would refuse."""
    if not snap.table_names():
        raise StoreError(f"{where}: no tables: an empty configuration")
    values, problems = typed_settings(snap.settings)
    problems += settings_problems(values)
    for p in problems:
        if p.future:
            log.warning("%s: %s (ignored: compiled before it was refused)", where, p.message)
    errors = [p.message for p in problems if not p.warning and not p.future]
    if errors:
        raise StoreError("\n".join(f"{where}: {m}" for m in errors))


def bounds_markdown() -> str:
    """README's table of the integer settings' ranges (a test keeps it in step)."""
    out = ["| setting | range |", "|---|---|"]
    for name, spec in sch.SETTINGS.items():
        if spec.type is int:
            lo, hi = bounds(name)
            out.append(f"| {name} | {lo}..{hi} |")
    return "\n".join(out) + "\n"
