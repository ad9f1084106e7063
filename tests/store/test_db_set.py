"""`pbx db set` (pbx_core/store/cli.py): settings set in the current generation,
checked like any commit, nothing written when refused or unchanged; and the settings
`./build.sh run` hands the QEMU guest (firmware/run-qemu.py), which must pass it."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from pbx_core.store.cli import read_assignments, set_settings
from pbx_core.store.generations import Generations
from tests.conftest import FACTORY
from tests.firmware.qemu import run_qemu


def settings_of(root: Path) -> dict[str, str]:
    table = Generations(root).tables()["pbx_settings"]
    return {str(r[0]): str(r[1]) for r in table.rows}


def test_set_commits_from_the_factory_then_changes_only_what_differs(tmp_path: Path) -> None:
    root = tmp_path / "config"
    out = io.StringIO()
    assert set_settings(str(root), {"nat": "force_rport"}, None, out) == 1
    assert "no configuration yet" in out.getvalue()
    assert set_settings(str(root), {"nat": "force_rport"}, str(FACTORY), out) == 0
    gens = Generations(root)
    first = gens.current()
    assert first is not None and settings_of(root)["nat"] == "force_rport"
    assert settings_of(root)["domain"] == "pbx.local"  # the factory's rows are kept
    # The same again: nothing written.
    out = io.StringIO()
    assert set_settings(str(root), {"nat": "force_rport"}, None, out) == 0
    assert "unchanged" in out.getvalue() and gens.current() == first
    # An empty value removes the row (the default applies).
    assert set_settings(str(root), {"nat": ""}, None, io.StringIO()) == 0
    assert "nat" not in settings_of(root) and gens.current() != first


@pytest.mark.parametrize(
    "settings",
    [
        {"rtp_port_min": "10001"},
        {"external_media_address": "not-an-ip"},
        {"nat": "sometimes"},
        {"lan_networks": "10.0.0.0/33"},
    ],
)
def test_set_refuses_what_the_checker_refuses(tmp_path: Path, settings: dict[str, str]) -> None:
    root = tmp_path / "config"
    assert set_settings(str(root), {"nat": "auto"}, str(FACTORY), io.StringIO()) == 0
    before = Generations(root).current()
    out = io.StringIO()
    assert set_settings(str(root), settings, None, out) == 1
    assert "nothing committed" in out.getvalue()
    assert Generations(root).current() == before


def test_assignments_from_words_and_files() -> None:
    assert read_assignments(["# comment", "", " nat = no ", "rtp_port_min=10000"]) == {
        "nat": "no",
        "rtp_port_min": "10000",
    }
    for bad in (["nat"], ["bogus=1"], ["nat=a\x01b"]):
        with pytest.raises(ValueError):
            read_assignments(bad)


def test_the_settings_build_sh_run_hands_the_guest_pass_the_checker(tmp_path: Path) -> None:
    rtp = run_qemu.parse_rtp_range("10000-10039")
    settings = run_qemu.host_settings(5060, rtp)
    path = run_qemu.write_settings(tmp_path / "host-settings", settings)
    root = tmp_path / "config"
    text = path.read_text().splitlines()
    assert set_settings(str(root), read_assignments(text), str(FACTORY), io.StringIO()) == 0
    got = settings_of(root)
    assert got["external_media_address"] == "127.0.0.1"
    assert got["external_signaling_address"] == "127.0.0.1:5060"
    assert (got["rtp_port_min"], got["rtp_port_max"]) == ("10000", "10039")
    # 10.0.2.2, where every host phone comes from under QEMU, is not on the LAN.
    assert "10." not in got["lan_networks"]
    args = run_qemu.fw_cfg_args(Path("/a,b/settings"))
    assert args == ["-fw_cfg", "name=opt/org.wafer.pbx/settings,file=/a,,b/settings"]
    for bad in ("10001-10040", "10000-10038", "80-99"):
        with pytest.raises(argparse.ArgumentTypeError):
            run_qemu.parse_rtp_range(bad)
