"""A call queue (features/queue) through `pbx run` against SIPp phones: the PBX
answers a caller into queue 500 (linear: 101 then 102); agent 101's phone rings and
says busy, so the queue offers the caller to 102 at once, which answers and talks to
it until the caller hangs up. configs/features plus the two queue tables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.pbx.control import query
from tests.interop.features_env import Env, start, stop, write_config
from tests.interop.sipp_agents import check, free_port

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

QUEUE = "number(string) strategy(string) ring_time(int) announce_every(int)\n500:linear:5:0\n"
MEMBERS = "queue(string) extension(string) penalty(int)\n500:101:0\n500:102:1\n"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    home = tmp_path / "pbx"
    home.mkdir()
    port = free_port("127.0.0.2")
    config = write_config(home / "config", port)
    (config / "pbx_queue").write_text(QUEUE)
    (config / "pbx_queue_member").write_text(MEMBERS)
    env = start(home, port)
    try:
        yield env
    finally:
        stop(env)


def test_a_busy_agent_is_skipped_and_the_next_one_talks_to_the_caller(
    env: Env, tmp_path: Path
) -> None:
    with (
        env.phones.callee(tmp_path, "feat_busy_late.xml", "101") as busy,
        env.phones.callee(tmp_path, "uas_answer.xml", "102") as agent,
    ):
        caller = env.phones.call(tmp_path, "uac_call_wait.xml", "500")
        check(caller)
        check(busy.finish())
        check(agent.finish())
    assert caller.responses(200, "2 INVITE"), caller.report()  # the queue answered
    (rang,) = busy.run.requests("INVITE")
    (offered,) = agent.run.requests("INVITE")
    assert rang.at is not None and offered.at is not None
    assert offered.at > rang.at  # linear: 101 first, 102 once 101 said busy
    assert "sip:100@" in (offered.header("From") or ""), offered.text
    # The caller talked to 102: its hang-up reached 102's phone.
    assert len(agent.run.requests("BYE")) == 1, agent.run.report()
    status = query(env.control, {"cmd": "status"})
    figures = status["features"]["queue"]["queues"]["500"]
    assert figures["answered"] == 1 and figures["agents"] == {"102": 1}, figures
