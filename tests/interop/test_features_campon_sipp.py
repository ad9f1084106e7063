"""Camp-on (features/campon) through `pbx run` with SIPp: 101 is in a call with 102;
100 dials `*82101`; when 101's call ends the PBX rings 100's SIPp phone first (showing
101) and, once it answers, 101's (showing 100); 100 hangs up after a while and the
PBX releases 101. The request is gone from `pbx status` afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.features_env import Env, start, stop
from tests.interop.sipp_agents import (
    Run,
    Server,
    check,
    free_port,
    pbx_command,
    pbx_status,
    register,
)

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = start(tmp_path_factory.mktemp("campon"))
    try:
        yield env
    finally:
        stop(env)


def _requests(env: Env) -> list[dict[str, object]]:
    features = pbx_status(env.control).get("features")
    assert isinstance(features, dict), features
    got = features.get("campon", {}).get("requests")
    assert isinstance(got, list), features
    return got


def test_the_caller_is_rung_first_then_the_callee(env: Env, tmp_path: Path) -> None:
    callee_port, caller_port = free_port(), free_port()
    register(env.addr, tmp_path, "101", callee_port)
    register(env.addr, tmp_path, "100", caller_port)
    # 101 answers 102's call, then the callback; 100 answers its callback and hangs
    # up six seconds later.
    callee = Server("uas_answer.xml", tmp_path, "callee-101", port=callee_port, calls=2, timeout=40)
    caller = Server("uas_bye_late.xml", tmp_path, "caller-100", port=caller_port, timeout=40)
    talking: list[Run] = []
    try:
        thread = threading.Thread(
            target=lambda: talking.append(
                env.phones.call(tmp_path, "uac_call_long.xml", "101", user="102", name="talker")
            )
        )
        thread.start()
        try:
            time.sleep(1.5)  # 102 and 101 talk
            env.dial_code(tmp_path, "100", "*82101")
            assert [(r["caller"], r["callee"]) for r in _requests(env)] == [("100", "101")]
            text = pbx_command("status", "--control", str(env.control))
            assert '"callee": "101"' in text and text.count("campon") >= 1, text
        finally:
            thread.join(30)
        got_caller = caller.finish(20)
        got_callee = callee.finish(20)
    finally:
        caller.stop()
        callee.stop()
        register(env.addr, tmp_path, "101", callee_port, expires=0)
        register(env.addr, tmp_path, "100", caller_port, expires=0)
    (talk,) = talking
    check(talk)
    check(got_caller)
    assert got_callee.returncode == 0 and got_callee.successful == 2, got_callee.report()
    (back,) = got_caller.requests("INVITE")
    assert "101" in (back.header("From") or ""), back.text  # the callback says for whom
    second = got_callee.requests("INVITE")[-1]
    assert "100" in (second.header("From") or ""), second.text  # 101 sees 100 calling
    assert back.at is not None and second.at is not None and back.at <= second.at
    assert got_callee.requests("BYE"), got_callee.report()  # released when 100 hung up
    assert _requests(env) == []
