"""Follow-me and barge through `pbx run` with SIPp.

Follow-me: 102's list sends its calls to an outside number over the trunk; the
outside phone (a SIPp provider that answers at once, as a mobile's voicemail does)
must press 1 (RFC 4733 telephone-events) before the caller is answered; a phone that
presses 2 (SIP INFO) is released and the caller is never connected to it. Barge: 102
(a pbx_barge row) listens to 100's call with 101 and 103 (none) is refused. Paging:
100 pages 650 (101, 102, 103, three SIPp phones that answer): each INVITE carries the
auto-answer headers and each phone hears the page beep, then 100's audio."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from pbx_core.media.dtmf import goertzel_power
from tests.conftest import start_pbx, stop_pbx
from tests.interop.features_env import PROVIDER_IP, Ear, Env, write_config
from tests.interop.sipp_agents import Run, Server, check, free_port

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

FOLLOWME = (
    "extension(string) numbers(string) strategy(string) prering(int) ring_time(int) "
    "confirm(int) enabled(int)\n102:04930777:ringall:0:6:1:1\n"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("followme")
    port = free_port(PROVIDER_IP)
    config = write_config(tmp / "config", port)
    (config / "pbx_followme").write_text(FOLLOWME)
    (config / "pbx_barge").write_text(
        "extension(string) modes(string) targets(string)\n102:listen:101\n"
    )
    (config / "pbx_page_group").write_text(
        "name(string) number(string,null) members(string) duplex(int)\nall:650:101,102,103:0\n"
    )
    pbx = start_pbx(tmp, config=config, extra=["--state", str(tmp / "state.mdb")])
    env = Env(pbx, tmp, port)
    try:
        yield env
    finally:
        stop_pbx(env.pbx)
        assert "Traceback" not in env.pbx.log(), env.pbx.log()


def mobile(env: Env, tmp: Path, key: str) -> Server:
    """The outside phone: presses 1 as RFC 4733 events, any other key as SIP INFO."""
    return Server(
        "provider_confirm_rtp.xml" if key == "1" else "provider_confirm.xml",
        tmp,
        f"mobile-{key}",
        local_ip=PROVIDER_IP,
        port=env.provider_port,
        keys={"key": key},
    )


def test_the_outside_phone_presses_1_and_talks(env: Env, tmp_path: Path) -> None:
    phone = mobile(env, tmp_path, "1")
    try:
        res = env.phones.call(tmp_path, "uac_call.xml", "102")
        got = phone.finish(15)
    finally:
        phone.stop()
    check(res)
    check(got)
    (invite,) = got.requests("INVITE")
    assert "reason=follow-me" in (invite.header("Diversion") or ""), invite.text
    assert got.requests("BYE"), got.report()  # the caller's hang-up reached it


def test_the_outside_phone_that_does_not_press_1_never_gets_the_caller(
    env: Env, tmp_path: Path
) -> None:
    phone = mobile(env, tmp_path, "2")
    try:
        res = env.phones.call(tmp_path, "uac_reject.xml", "102")
        got = phone.finish(15)
    finally:
        phone.stop()
    check(res)
    check(got)
    finals = [s for s in res.statuses() if s >= 200 and s != 407]
    assert finals == [480], res.report()  # the list rang out: nobody accepted
    assert got.requests("BYE"), got.report()  # released at once


def test_a_permitted_phone_listens_to_a_call_and_an_other_is_refused(
    env: Env, tmp_path: Path
) -> None:
    phones = env.phones
    talking: list[Run] = []
    with phones.callee(tmp_path, "uas_answer.xml", "101") as callee:
        thread = threading.Thread(
            target=lambda: talking.append(
                phones.call(tmp_path, "uac_call_long.xml", "101", name="talker")
            )
        )
        thread.start()
        try:
            time.sleep(1.5)  # 100 and 101 talk
            spy = phones.call(tmp_path, "uac_call.xml", "*222101", user="102", name="spy")
            refused = phones.call(tmp_path, "uac_reject.xml", "*222101", user="103", name="no")
        finally:
            thread.join(30)
        answered = callee.finish()
    check(spy)
    check(refused)
    assert [s for s in refused.statuses() if s >= 200 and s != 407] == [403], refused.report()
    (res,) = talking
    check(res)
    check(answered)
    # The listener came and went; the call went on to its own end untouched.
    assert answered.requests("BYE") and not res.requests("BYE"), res.report()


@pytest.mark.tools("sipp-pcap")
def test_a_page_reaches_three_sipp_phones_that_answer_by_themselves(
    env: Env, tmp_path: Path
) -> None:
    """100 (talking sip-tester's G.711 pcap) pages 650: 101, 102 and 103 are called
    at once, each INVITE with Call-Info answer-after=0 and Alert-Info
    info=alert-autoanswer (uas_answer_ear.xml fails a call without them); each
    phone's media address gets the page beep (660 then 880 Hz) and then 100's audio
    as RTP; 100's BYE ends the page for all three."""
    ears = {ext: Ear() for ext in ("101", "102", "103")}
    members: dict[str, Server] = {}
    try:
        with ExitStack() as stack:
            for ext, ear in ears.items():
                (tmp_path / ext).mkdir()
                members[ext] = stack.enter_context(
                    env.phones.callee(
                        tmp_path / ext, "uas_answer_ear.xml", ext, keys={"rtp_port": str(ear.port)}
                    )
                )
            res = env.phones.call(tmp_path, "uac_media_talk.xml", "650", name="pager")
            paged = {ext: server.finish() for ext, server in members.items()}
        heard = {ext: ear.samples() for ext, ear in ears.items()}
    finally:
        for ear in ears.values():
            ear.close()
    check(res)
    for ext, got in paged.items():
        check(got)
        (invite,) = got.requests("INVITE")
        assert "answer-after=0" in (invite.header("Call-Info") or ""), got.report()
        assert any("info=alert-autoanswer" in v for v in invite.headers("Alert-Info")), got.report()
        assert got.requests("BYE"), got.report()  # the pager's hang-up ended it
        samples = heard[ext]
        assert len(samples) >= 8000, (ext, len(samples))  # a second of RTP at least
        beep, rest = samples[:1920], samples[2400:]  # the beep: 2 x 120 ms
        on = {hz: goertzel_power(beep, hz) for hz in (660.0, 880.0)}
        assert min(on.values()) > 20 * goertzel_power(beep, 1550.0), (ext, on)
        rms = (sum(x * x for x in rest) / len(rest)) ** 0.5
        assert rms > 100, (ext, rms)  # the pcap's audio, not silence
