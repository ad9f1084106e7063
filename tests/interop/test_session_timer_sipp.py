"""RFC 4028 session timers against SIPp: a caller that asks for a timer and never
refreshes is hung up on (BYE to both legs, CDR cause), one that refreshes with
re-INVITEs keeps its call while the PBX refreshes the callee's leg with UPDATE, and a
too-small interval gets 422 with Min-SE.

The PBX runs with session_min_se 8 s (the RFC's floor is 90: far too slow for a test)
so each test takes seconds: a non-refresher gives up at 8 - min(32, 8/3) = 5.3 s."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.interop.sipp_agents import check
from tests.interop.test_media_anchor import PBX_MEDIA, Env, media_pbx

pytestmark = pytest.mark.interop

SE = 8


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Every phone is told SE (key "se") and a caller's run may last 30 s."""
    settings = {"session_min_se": str(SE), "session_expires": "60"}
    with media_pbx(tmp_path_factory.mktemp("timers"), settings, {"se": str(SE)}) as e:
        yield replace(e, phones=replace(e.phones, timeout=30))


def test_caller_that_never_refreshes_is_hung_up(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_timer_silent.xml", "uas_answer.xml")
    ok = res.responses(200)[0]
    assert ok.header("Session-Expires") == f"{SE};refresher=uac", ok.text
    assert "timer" in (ok.header("Require") or ""), ok.text  # §9: the UAC refreshes
    # The B leg was offered a timer too (the SIPp callee ignores it).
    (invite,) = b.requests("INVITE")
    assert invite.header("Session-Expires") == "60" and invite.header("Min-SE") == str(SE)
    assert "timer" in (invite.header("Supported") or "")
    # BYE at expiry minus min(32, SE/3): 5.3 s after the answer, on both legs.
    (bye,) = res.requests("BYE")
    assert len(b.requests("BYE")) == 1
    assert ok.at is not None and bye.at is not None, res.report()
    assert 5.0 < bye.at - ok.at < 9.0, (bye.at - ok.at, res.report())
    row = env.cdr(res)
    assert row["disposition"] == "ANSWERED"
    assert row["cause"] == "session timer expired (caller)", row


def test_refreshed_call_survives_and_pbx_refreshes_the_callee(env: Env, tmp_path: Path) -> None:
    """The caller re-INVITEs every 3 s (answered by the PBX on its leg, each 200 with
    Session-Expires); the callee made the PBX its refresher, which sends it an UPDATE
    at half the interval (and again 4 s later). The call lasts past both first
    expiries and ends with the caller's BYE."""
    res, b = env.phones.talk(tmp_path, "uac_timer_refresh.xml", "uas_timer_refresher.xml")
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
    row = env.cdr(res)
    assert row["cause"] == "caller hung up", row
    assert int(row["billsec"]) >= 7, row


def test_interval_below_min_se_gets_422(env: Env, tmp_path: Path) -> None:
    # The callee must be reachable: the timer is negotiated once the call is routed.
    with env.phones.callee(tmp_path, "uas_answer.xml") as callee:
        res = env.phones.call(tmp_path, "uac_timer_small.xml", keys={"se": "4"})
        b = callee.finish(0)
    check(res)
    assert b.requests() == [], b.report()  # refused before any INVITE went out
    final = res.received()[-1]
    assert final.status == 422, res.report()
    assert final.header("Min-SE") == str(SE)
    row = env.cdr(res)
    assert row["disposition"] == "FAILED" and row["cause"].startswith("422"), row


def test_pbx_refreshes_a_caller_without_the_extension(env: Env, tmp_path: Path) -> None:
    """The caller cannot refresh (no Supported: timer) and takes no UPDATE: the PBX
    refreshes it at half the interval with a re-INVITE without SDP; the phone's offer
    in the 200 is answered by the media engine in the ACK (the PBX's address)."""
    res, b = env.phones.talk(tmp_path, "uac_timer_pbx_refresh.xml", "uas_answer.xml")
    ok = res.responses(200)[0]
    assert ok.header("Session-Expires") == f"{SE};refresher=uas", ok.text
    assert ok.header("Require") is None  # the phone is not asked to know the extension
    (refresh,) = res.requests("INVITE")
    assert refresh.body.strip() == "" and refresh.header("Session-Expires") == (
        f"{SE};refresher=uac"
    ), refresh.text
    (ack,) = res.requests("ACK")
    assert f"c=IN IP4 {PBX_MEDIA}" in ack.body, ack.text
    assert b.requests("INVITE")[1:] == []  # the callee's leg never heard of it
    row = env.cdr(res)
    assert row["cause"] == "caller hung up", row
