"""Toggles set from a phone survive a restart of the daemon (issue 12): 101 dials
*78 and *72102 on a running `pbx run`, the daemon is stopped (SIGTERM) and started
again on the same --state LMDB; a call to 101 is still busy, the control command
`toggles` still shows both, and *79 then lets 101 ring again (forward all: 102)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.features_env import PROVIDER_IP, start, stop, write_config
from tests.interop.sipp_agents import check, free_port

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


def test_toggles_survive_a_restart(tmp_path: Path) -> None:
    env = start(tmp_path)
    try:
        env.dial_code(tmp_path, "101", "*78")
        env.dial_code(tmp_path, "101", "*72102")
    finally:
        stop(env)  # SIGTERM: the toggles set before it are on flash

    env = start(tmp_path)  # the same config and --state
    try:
        toggles = env.toggles("101")
        assert toggles["dnd.dnd"] is True, toggles
        assert toggles["forward.forward_all"] == "102", toggles
        # DND is checked before forward all: 101 is busy, and nobody rings.
        with (
            env.phones.callee(tmp_path, "uas_answer.xml", "101") as office,
            env.phones.callee(tmp_path, "uas_answer.xml", "102") as other,
        ):
            res = env.phones.call(tmp_path, "uac_reject.xml", "101")
            check(res)
            assert res.statuses()[-1] == 486, res.report()
            office.stop()
            other.stop()
        assert office.run.requests("INVITE") == [], office.run.report()
        assert other.run.requests("INVITE") == [], other.run.report()
        # DND off: the forward set before the restart takes the call to 102.
        env.dial_code(tmp_path, "101", "*79")
        with env.phones.callee(tmp_path, "uas_answer.xml", "102") as other:
            check(env.phones.call(tmp_path, "uac_call.xml", "101"))
            check(other.finish())
        (invite,) = other.run.requests("INVITE")
        assert "sip:101@" in (invite.header("Diversion") or ""), invite.text
    finally:
        stop(env)


def test_a_toggle_turned_off_stays_off_over_the_tables_initial_value(tmp_path: Path) -> None:
    """The extension table gives 101 an initial do-not-disturb and forward all to
    102; the phone turns both off (*79, *73), and a restart must not bring the
    table's values back: a phone's setting wins until the phone changes it again."""
    port = free_port(PROVIDER_IP)
    table = write_config(tmp_path / "config", port) / "pbx_extension"
    lines = table.read_text().splitlines()
    lines[0] += " dnd(int) forward_all(string,null)"
    lines[1:] = [line + (":1:102" if line.split(":")[1] == "101" else ":0:") for line in lines[1:]]
    table.write_text("\n".join(lines) + "\n")

    env = start(tmp_path, port)
    try:
        toggles = env.toggles("101")
        assert toggles["dnd.dnd"] and toggles["forward.forward_all"] == "102", toggles
        env.dial_code(tmp_path, "101", "*79")
        env.dial_code(tmp_path, "101", "*73")
    finally:
        stop(env)

    env = start(tmp_path, port)
    try:
        toggles = env.toggles("101")
        assert not toggles["dnd.dnd"] and not toggles["forward.forward_all"], toggles
        _, office = env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")
        (invite,) = office.requests("INVITE")
        assert invite.headers("Diversion") == [], invite.text
    finally:
        stop(env)
