"""Follow-me through `pbx run` with SIPp: 102's list sends its calls to an outside
number over the trunk; the outside phone (a SIPp provider that answers at once, as a
mobile's voicemail does) must press 1 (RFC 4733 telephone-events) before the caller
is answered; a phone that presses 2 (SIP INFO) is released and the caller is never
connected to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import start_pbx, stop_pbx
from tests.interop.features_env import PROVIDER_IP, Env, write_config
from tests.interop.sipp_agents import Server, check, free_port

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
