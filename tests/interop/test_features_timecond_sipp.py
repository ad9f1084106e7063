"""Time conditions through `pbx run` against SIPp (issue 13): the daemon, on the real
clock, routes a DID by the box's time zone (the setting `timezone`), and `*281` from
a phone (its confirmation heard) overrides it until dialled again.

configs/features plus a time zone 7 hours east of UTC, and two time groups written
for the moment the test starts: `local` is the two hours around the local time in
that zone, `utc` the two hours around UTC now (never the local time there: 7 hours
apart). DID 5550100 goes to condition `bylocal` (match 101, else 102), DID 5550200
to `byutc` (the same destinations): 101 rings for the first, 102 for the second.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core import tz
from pbx_core.pbx.control import query
from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import Run, check, free_port, run

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

ZONE = "<+07>-7"


def window(at: dt.datetime) -> str:
    """HHMM-HHMM: the two hours around `at` (over midnight when it must)."""
    start, end = at - dt.timedelta(hours=1), at + dt.timedelta(hours=1)
    return f"{start:%H%M}-{end:%H%M}"


def time_tables(config: Path, now: float) -> None:
    local = tz.zone(ZONE).local(now)
    utc = dt.datetime.fromtimestamp(now, dt.UTC)
    (config / "pbx_time_group").write_text(
        f"name(string) times(string)\nlocal:{window(local)}\nutc:{window(utc)}\n"
    )
    (config / "pbx_time_condition").write_text(
        "name(string) time_group(string) match_type(string) match(string,null) "
        "nomatch_type(string) nomatch(string,null) code(int,null)\n"
        "bylocal:local:extension:101:extension:102:1\n"
        "byutc:utc:extension:101:extension:102:\n"
    )
    did = config / "pbx_did"
    rows = did.read_text().splitlines()
    rows[1:1] = [
        "10:5550100:provider:timecond:bylocal:by the box's zone",
        "11:5550200:provider:timecond:byutc:by UTC",
    ]
    did.write_text("\n".join(rows) + "\n")
    settings = config / "pbx_settings"
    settings.write_text(settings.read_text().rstrip("\n") + f"\ntimezone:{ZONE}\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("timecond")
    port = free_port(PROVIDER_IP)
    time_tables(write_config(tmp / "config", port), time.time())  # an hour either side
    env = start(tmp, port)
    try:
        yield env
    finally:
        stop(env)


def did_call(env: Env, tmp: Path, did: str) -> tuple[Run, Run, Run]:
    """The provider calls `did`: the provider's run and those of 101 and 102."""
    with (
        env.phones.callee(tmp, "uas_answer.xml", "101") as day,
        env.phones.callee(tmp, "uas_answer.xml", "102") as night,
    ):
        res = run(
            "provider_call.xml",
            env.addr,
            tmp,
            f"provider-{did}",
            local_ip=PROVIDER_IP,
            keys={"did": did, "caller": "4930999888"},
        )
        time.sleep(0.5)
        day.stop()
        night.stop()
    check(res)
    return res, day.run, night.run


def rang(day: Run, night: Run) -> list[str]:
    return [n for n, r in (("101", day), ("102", night)) if r.requests("INVITE")]


def test_a_did_follows_the_box_time_zone_not_utc(env: Env, tmp_path: Path) -> None:
    _, day, night = did_call(env, tmp_path / "a", "5550100")
    assert rang(day, night) == ["101"], (day.report(), night.report())
    _, day, night = did_call(env, tmp_path / "b", "5550200")
    assert rang(day, night) == ["102"], (day.report(), night.report())


def test_star28_overrides_and_dialled_again_returns_to_the_schedule(
    env: Env, tmp_path: Path
) -> None:
    env.dial_code(tmp_path / "on", "100", "*281")  # answered, confirmation heard, BYE
    status = query(env.control, {"cmd": "status"})
    conditions = status["features"]["timecond"]["conditions"]
    assert conditions["bylocal"] == {"matched": False, "override": "unmatched"}, status
    _, day, night = did_call(env, tmp_path / "a", "5550100")
    assert rang(day, night) == ["102"], (day.report(), night.report())
    env.dial_code(tmp_path / "off", "100", "*281")
    _, day, night = did_call(env, tmp_path / "b", "5550100")
    assert rang(day, night) == ["101"], (day.report(), night.report())
