"""RFC 4028 session timers against SIPp: a caller that asks for a timer and never
refreshes is hung up on (BYE to both legs, CDR cause), one that refreshes with
re-INVITEs keeps its call while the PBX refreshes the callee's leg with UPDATE, and a
too-small interval gets 422 with Min-SE.

The PBX runs with session_min_se 8 s (the RFC's floor is 90: far too slow for a test)
so each test takes seconds: a non-refresher gives up at 8 - min(32, 8/3) = 5.3 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_pbx
from tests.interop.sipp_agents import PASSWORDS, Run, Server, free_port, register, run
from tests.interop.test_media_anchor import (
    CALLEE_IP,
    CALLER_IP,
    PBX_MEDIA,
    Env,
    _start,
    a_call_id,
    check,
)

pytestmark = pytest.mark.interop

SE = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = _start(
        tmp_path_factory.mktemp("timers"),
        {"session_min_se": str(SE), "session_expires": "60"},
    )
    yield e
    stop_pbx(e.pbx)
    assert "Traceback" not in e.pbx.log(), e.pbx.log()


def _callee(env: Env, tmp: Path, scenario: str) -> Server:
    port = free_port(CALLEE_IP)
    register(env.addr, tmp, "101", port, contact_ip=CALLEE_IP)
    return Server(scenario, tmp, "callee-101", local_ip=CALLEE_IP, port=port, keys={"se": str(SE)})


def _call(env: Env, tmp: Path, scenario: str, se: int = SE) -> Run:
    return run(
        scenario,
        env.addr,
        tmp,
        "caller",
        local_ip=CALLER_IP,
        keys={"user": "100", "callee": "101", "se": str(se)},
        auth=("100", PASSWORDS["100"]),
        timeout=30,
    )


def test_caller_that_never_refreshes_is_hung_up(env: Env, tmp_path: Path) -> None:
    callee = _callee(env, tmp_path, "uas_answer.xml")
    try:
        t0 = time.monotonic()
        res = _call(env, tmp_path, "uac_timer_silent.xml")
        elapsed = time.monotonic() - t0
        b = callee.finish()
    finally:
        callee.stop()
    check(res)
    check(b)
    ok = next(m for m in res.received() if m.status == 200 and "INVITE" in m.header("CSeq"))
    assert ok.header("Session-Expires") == f"{SE};refresher=uac", ok.text
    assert "timer" in (ok.header("Require") or ""), ok.text  # §9: the UAC refreshes
    # The B leg was offered a timer too (the SIPp callee ignores it).
    (invite,) = b.requests("INVITE")
    assert invite.header("Session-Expires") == "60" and invite.header("Min-SE") == str(SE)
    assert "timer" in (invite.header("Supported") or "")
    # BYE at expiry minus min(32, SE/3): 5.3 s after the answer, on both legs.
    assert len(res.requests("BYE")) == 1 and len(b.requests("BYE")) == 1
    assert 4.5 < elapsed < 12, elapsed
    row = env.cdr(a_call_id(res))
    assert row["disposition"] == "ANSWERED"
    assert row["cause"] == "session timer expired (caller)", row


def test_refreshed_call_survives_and_pbx_refreshes_the_callee(env: Env, tmp_path: Path) -> None:
    """The caller re-INVITEs every 3 s (answered by the PBX on its leg, each 200 with
    Session-Expires); the callee made the PBX its refresher, which sends it an UPDATE
    at half the interval (and again 4 s later). The call lasts past both first
    expiries and ends with the caller's BYE."""
    callee = _callee(env, tmp_path, "uas_timer_refresher.xml")
    try:
        res = _call(env, tmp_path, "uac_timer_refresh.xml")
        b = callee.finish()
    finally:
        callee.stop()
    check(res)
    check(b)
    assert res.requests("BYE") == [], res.report()  # the PBX never hung up
    refreshes = [
        m
        for m in res.received()
        if m.status == 200 and m.header("CSeq") in ("3 INVITE", "4 INVITE")
    ]
    assert len(refreshes) == 2, res.report()
    assert all(m.header("Session-Expires") == f"{SE};refresher=uac" for m in refreshes)
    updates = b.requests("UPDATE")  # at 4 s, and again 4 s later if the call lasts
    assert updates, b.report()
    assert all(u.header("Session-Expires") == f"{SE};refresher=uac" for u in updates)
    assert all(u.body.strip() == "" for u in updates)
    assert len(b.requests("BYE")) == 1
    row = env.cdr(a_call_id(res))
    assert row["cause"] == "caller hung up", row
    assert int(row["billsec"]) >= 7, row


def test_interval_below_min_se_gets_422(env: Env, tmp_path: Path) -> None:
    res = _call(env, tmp_path, "uac_timer_small.xml", se=4)
    check(res)
    final = res.received()[-1]
    assert final.status == 422, res.report()
    assert final.header("Min-SE") == str(SE)
    row = env.cdr(a_call_id(res))
    assert row["disposition"] == "FAILED" and row["cause"].startswith("422"), row


def test_pbx_refreshes_a_caller_without_the_extension(env: Env, tmp_path: Path) -> None:
    """The caller cannot refresh (no Supported: timer) and takes no UPDATE: the PBX
    refreshes it at half the interval with a re-INVITE without SDP; the phone's offer
    in the 200 is answered by the media engine in the ACK (the PBX's address)."""
    callee = _callee(env, tmp_path, "uas_answer.xml")
    try:
        res = _call(env, tmp_path, "uac_timer_pbx_refresh.xml")
        b = callee.finish()
    finally:
        callee.stop()
    check(res)
    check(b)
    ok = next(m for m in res.received() if m.status == 200 and "INVITE" in m.header("CSeq"))
    assert ok.header("Session-Expires") == f"{SE};refresher=uas", ok.text
    assert ok.header("Require") is None  # the phone is not asked to know the extension
    (refresh,) = res.requests("INVITE")
    assert refresh.body.strip() == "" and refresh.header("Session-Expires") == (
        f"{SE};refresher=uac"
    ), refresh.text
    (ack,) = res.requests("ACK")
    assert f"c=IN IP4 {PBX_MEDIA}" in ack.body, ack.text
    assert b.requests("INVITE")[1:] == []  # the callee's leg never heard of it
    row = env.cdr(a_call_id(res))
    assert row["cause"] == "caller hung up", row
