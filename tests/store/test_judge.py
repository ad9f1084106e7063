"""`pbx db check` and the daemon judge settings alike (pbx_core/store/judge.py).

The daemon's refusals are walked one by one: each is a value one of the daemon's
parts refuses (proved here by giving it to that part with the store's gate out of
the way), and `db check` must refuse it too, naming the row. A property test then
draws random settings: `db check` passes if and only if the daemon starts, and what
any part would refuse never passes `db check`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.pbx.engine import Engine
from pbx_core.pbx.sipserver import SipServer
from pbx_core.store import cli, judge, schema
from pbx_core.store.build import build_config
from pbx_core.store.compile import write_snapshot
from pbx_core.store.dbtext import read_dir, write_table
from pbx_core.store.errors import StoreError
from pbx_core.store.generations import CURRENT, SNAPSHOT, Generations, Store
from pbx_core.store.model import Trunk
from tests.fuzzing import fuzz_settings

ROOT = Path(__file__).resolve().parent.parent.parent
FACTORY = ROOT / "rootfs_overlay/etc/pbx/factory"


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _RawSnapshot:
    """The settings as given, with no store in between: what the daemon's parts
    would make of them if nothing judged them first."""

    def __init__(self, settings: Mapping[str, object]) -> None:
        self.settings = dict(settings)

    def trunks(self) -> list[Trunk]:
        return []


class _RawStore:
    def __init__(self, settings: Mapping[str, object]) -> None:
        self.snapshot = _RawSnapshot(settings)


def start_parts(store: Any) -> list[str]:
    """Build the daemon's parts on `store` as `pbx run` does before it listens
    (app._serve: SIP server, media engine on the RTP range, engine): every error
    raised or logged is a refusal."""
    capture = _Capture()
    logging.getLogger().addHandler(capture)
    loop = asyncio.new_event_loop()
    problems: list[str] = []
    try:
        server = SipServer(loop, None, None)
        try:
            settings = store.snapshot.settings
            media = MediaEngine(
                loop,
                "127.0.0.1",
                int(settings.get("rtp_port_min", 10000)),
                int(settings.get("rtp_port_max", 20000)),
            )
            try:
                Engine(server, store, media, None).close()
            finally:
                media.close()
        finally:
            server.close()
    except (MediaError, ValueError) as exc:
        problems.append(str(exc))
    finally:
        loop.close()
        logging.getLogger().removeHandler(capture)
    return problems + capture.messages


def daemon_start(config: Path, runtime: Path) -> list[str]:
    """The daemon's start on a configuration directory: the store, then its parts."""
    try:
        store = Store(config, runtime_dir=runtime)
    except StoreError as exc:
        return [str(exc)]
    try:
        return start_parts(store)
    finally:
        store.close()


def config_dir(tmp: Path, rows: Mapping[str, str | None]) -> Path:
    d = tmp / "cfg"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(FACTORY, d)
    settings = schema.PBX_SETTINGS.empty()
    settings.rows = [(k, v or None) for k, v in rows.items()]
    write_table(d, settings, sync=False)
    return d


def db_check(d: Path) -> tuple[int, str]:
    out = io.StringIO()
    return cli.check(str(d), out), out.getvalue()


def raw(rows: Mapping[str, str | None]) -> dict[str, object]:
    values: dict[str, object] = {k: s.default for k, s in schema.SETTINGS.items()}
    values.update({k: v for k, v in rows.items() if v})
    return values


# Values one of the daemon's parts refuses: the security policy (SettingsError,
# logged and the defaults kept), the RTP port allocator (MediaError), the session
# timer (ValueError), the LAN networks. Each is checked to be a real refusal.
REFUSED_BY_A_PART = [
    {"sec_ban_failures": "-1"},
    {"sec_ban_window": "0"},
    {"sec_ban_window": "-60"},
    {"sec_ban_seconds": "0"},
    {"sec_rate": "-5"},
    {"sec_burst": "0"},
    {"sec_max_sources": "0"},
    {"sec_max_sources": "15"},
    {"sec_trusted": "10.0.0.1,not-an-address"},
    {"rtp_port_min": "80"},
    {"rtp_port_max": "70000"},
    {"rtp_port_min": "20000", "rtp_port_max": "20000"},
    {"rtp_port_min": "30000"},  # above the default rtp_port_max
    {"session_min_se": "0"},
    {"session_expires": "-5"},
    {"session_expires": "30"},  # below session_min_se
    {"lan_networks": "10.0.0.0/8,lan"},
]


@pytest.mark.parametrize(
    "rows", REFUSED_BY_A_PART, ids=lambda r: ",".join(f"{k}={v}" for k, v in r.items())
)
def test_every_refusal_of_the_daemon_is_a_check_error(tmp_path: Path, rows: dict[str, str]) -> None:
    assert start_parts(_RawStore(raw(rows))), "the daemon's parts accept this: not a refusal"
    d = config_dir(tmp_path, rows)
    status, out = db_check(d)
    assert status == 1, out
    line = next(line for line in out.splitlines() if not line.startswith("warning"))
    assert line.startswith(f"{d}/pbx_settings:"), out  # file:line:column
    assert any(name in line for name in rows), out
    assert daemon_start(d, tmp_path / "run")  # and the daemon refuses it, not logs it


# Refused by the judge alone: bounds on what sizes memory or time, and pairs whose
# parts would silently misbehave (a registrar whose minimum exceeds its maximum).
JUDGE_ONLY = [
    {"sec_max_sources": "1000001"},
    {"reg_min_expires": "7200"},
    {"rtp_timeout": "0"},
    {"domain": " "},
    {"sip_port": "99999999999999"},
    {"timezone": "Europe/Atlantis"},  # not in the built-in list, whatever zoneinfo has
    {"timezone": "CET-1CEST,M13.5.0,M10.5.0"},
    {"timezone": "CET"},
]


@pytest.mark.parametrize(
    "zone", ["CET-1CEST,M3.5.0,M10.5.0/3", "EST5EDT,M3.2.0,M11.1.0", "Europe/Berlin", "UTC"]
)
def test_a_good_time_zone_passes_the_check(tmp_path: Path, zone: str) -> None:
    status, out = db_check(config_dir(tmp_path, {"timezone": zone}))
    assert status == 0, out


def test_a_bad_time_zone_says_why(tmp_path: Path) -> None:
    status, out = db_check(config_dir(tmp_path, {"timezone": "CET-1CEST,M3.5.0"}))
    assert status == 1
    assert "setting 'timezone': time zone 'CET-1CEST,M3.5.0': expected ','" in out, out


@pytest.mark.parametrize("rows", JUDGE_ONLY, ids=",".join)
def test_judge_bounds_are_errors_for_both(tmp_path: Path, rows: dict[str, str]) -> None:
    d = config_dir(tmp_path, rows)
    status, out = db_check(d)
    assert status == 1, out
    assert daemon_start(d, tmp_path / "run")


def test_defaults_pass_and_lie_within_bounds() -> None:
    values, problems = judge.typed_settings({})
    assert problems == []
    assert judge.settings_problems(values) == []
    for name, spec in schema.SETTINGS.items():
        if spec.type is int:
            lo, hi = judge.bounds(name)
            assert lo <= int(spec.default) <= hi, name


def test_factory_configuration_starts(tmp_path: Path) -> None:
    assert db_check(FACTORY)[0] == 0
    assert daemon_start(FACTORY, tmp_path / "run") == []


def test_an_empty_directory_is_refused_by_both(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    status, out = db_check(empty)
    assert status == 1
    assert f"{empty}: no tables" in out
    assert daemon_start(empty, tmp_path / "run")


@pytest.mark.parametrize(
    "rows",
    [{}, {"sec_ban_window": "0"}],
    ids=["empty-directory", "zero-ban-window"],
)
def test_pbx_run_refuses_what_check_refuses(tmp_path: Path, rows: dict[str, str]) -> None:
    """The real daemon, as a process: exit 2 and the check's message, no traceback."""
    if rows:
        d = config_dir(tmp_path, rows)
    else:
        d = tmp_path / "empty"
        d.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "pbx_core", "run", "--config", str(d), "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PBX_RUNTIME_DIR": str(tmp_path / "run")},
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "cannot load the configuration" in out.stderr
    assert ("sec_ban_window" if rows else "no tables") in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------ property


def _setting_values(name: str) -> st.SearchStrategy[str | None]:
    spec = schema.SETTINGS[name]
    if spec.type is int:
        lo, hi = judge.bounds(name)
        number = st.one_of(
            st.integers(lo - 2, lo + 2),
            st.integers(hi - 2, hi + 2),
            st.integers(-100, 70_000),
            st.integers(-(10**12), 10**12),
        ).map(str)
        return st.one_of(number, st.sampled_from(["abc", "1.5", "+3", "", "٣"]))
    if name in ("lan_networks", "sec_trusted"):
        item = st.sampled_from(["10.0.0.0/8", "192.168.1.7", "::1", "[::1]", "lan", "10.0.0.0/33"])
        return st.lists(item, max_size=3).map(",".join)
    if spec.choices:
        return st.sampled_from([*spec.choices, "maybe", ""])
    if name == "domain":
        return st.sampled_from(["pbx.local", "example.com", " ", ""])
    return st.just(str(spec.default) or "")


SETTINGS_TRIED = [n for n in schema.SETTINGS if n not in ("operator", "admin_password")]


@pytest.mark.fuzz
@fuzz_settings(25)
@given(st.data())
def test_check_passes_iff_the_daemon_starts(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    names = data.draw(st.lists(st.sampled_from(SETTINGS_TRIED), unique=True, max_size=6))
    rows = {n: data.draw(_setting_values(n), label=n) for n in names}
    tmp = tmp_path_factory.mktemp("judge")
    d = config_dir(tmp, rows)
    status, out = db_check(d)
    started = daemon_start(d, tmp / "run")
    assert (status == 0) == (started == []), (out, started)
    if start_parts(_RawStore(raw(rows))):
        assert status == 1, out  # whatever a part refuses, check refuses first


def test_readme_lists_the_setting_ranges() -> None:
    readme = (ROOT / "pbx_core/store/README.md").read_text()
    assert judge.bounds_markdown() in readme


def _bad_snapshot(path: Path) -> None:
    """A snapshot whose settings the daemon refuses, as a compiler without the judge
    (an older version, or by hand) could have written it."""
    config = build_config(read_dir(FACTORY))
    config.settings["sec_burst"] = 0
    write_snapshot(config, path)


def test_the_daemon_judges_a_snapshot_it_is_given(tmp_path: Path) -> None:
    _bad_snapshot(tmp_path / "s.mdb")
    with pytest.raises(StoreError, match="sec_burst"):
        Store(tmp_path / "s.mdb")


def test_a_reload_to_a_refused_snapshot_keeps_the_old_one(tmp_path: Path) -> None:
    root = tmp_path / "config"
    Generations(root).commit_dir(FACTORY)
    store = Store(root)
    try:
        old = store.generation
        (root / "gen-999999").mkdir()
        _bad_snapshot(root / "gen-999999" / SNAPSHOT)
        os.symlink("gen-999999", root / ".link")
        os.replace(root / ".link", root / CURRENT)
        with pytest.raises(StoreError, match="sec_burst"):
            store.reload()
        assert store.generation == old
        assert store.snapshot.settings["sec_burst"] == 100
        assert not store.snapshot.closed
    finally:
        store.close()
