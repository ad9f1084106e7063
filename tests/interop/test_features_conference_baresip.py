"""A conference room with real phones (issue 16's "done means"): three baresip
phones, each sending its own sine, dial room 800 of one `pbx run` on configs/features
(plus a `pbx_conference` table): each hears the other two together and not itself
(tests/interop/baresip_phones.py measures it)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.baresip_phones import Phone, seconds_heard
from tests.interop.features_env import PROVIDER_IP, write_config
from tests.interop.sipp_agents import free_port

pytestmark = [pytest.mark.interop, pytest.mark.tools("baresip")]

HZ = {"100": 1020.0, "101": 1330.0, "102": 1770.0}
HEARD = 1.0  # seconds of the others' tones together that count as hearing them


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    tmp = tmp_path_factory.mktemp("conference")
    config = write_config(tmp / "config", free_port(PROVIDER_IP))
    (config / "pbx_conference").write_text(
        "number(string) max_members(int) announce_join(int) music_when_alone(int)\n800:5:1:1\n"
    )
    p = start_pbx(tmp, config=config, extra=["--state", str(tmp / "state.mdb")])
    try:
        yield p
    finally:
        stop_pbx(p)
        assert "Traceback" not in p.log(), p.log()


def test_three_members_each_hear_the_other_two_not_themselves(
    pbx: PbxProcess, tmp_path: Path
) -> None:
    phones = [Phone(tmp_path / u, u, HZ[u], pbx, register=False) for u in HZ]
    try:
        for p in phones:
            p.start()
        for p in phones:
            p.call("800")
            p.wait_event("CALL_ESTABLISHED", timeout=10)
        time.sleep(3.0)
        for p in phones:
            assert p.proc is not None and p.proc.poll() is None, p.log()
        for p in phones:
            p.hangup()
            p.wait_event("CALL_CLOSED", timeout=10)
        for p in phones:
            others = [HZ[u] for u in HZ if u != p.user]
            got = seconds_heard(p.heard(), others, [HZ[p.user]])
            assert got >= HEARD, f"{p.user} did not hear the other two without itself ({got} s)"
            alone = seconds_heard(p.heard(), [HZ[p.user]], others)
            assert alone == 0.0, f"{p.user} heard itself ({alone} s)"
    finally:
        for p in phones:
            p.stop()
