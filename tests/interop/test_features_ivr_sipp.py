"""The auto attendant through `pbx run` against SIPp (issue 15): an outside caller
(a SIPp provider on the trunk's address) calls a DID whose destination is an IVR
menu, hears the greeting (a confirmation beep on a build without prompt files),
sends key 2 as RFC 4733 telephone-events from the socket its SDP names, and lands on
extension 102 (a SIPp UAS that answers), not on 101 (key 1).

The PBX runs on configs/features plus a menu `front` (1 → 101, 2 → 102) and DID
4930557 → ivr front, with a welcome prompt played before the menu.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import check, free_port, run
from tests.interop.test_features_disa_sipp import Line, heard_beeps, in_background

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

MENU = (
    "id(int,auto) name(string) number(string,null) prompt(string) timeout(int) retries(int)\n"
    "1:front:710:welcome:10:2\n"
)
OPTIONS = (
    "id(int,auto) menu(string) digit(string) dest_type(string) dest(string,null)\n"
    "1:front:1:extension:101\n"
    "2:front:2:extension:102\n"
)
DID = "4930557"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ivr")
    port = free_port(PROVIDER_IP)
    config = write_config(tmp / "config", port)
    (config / "pbx_ivr_menu").write_text(MENU)
    (config / "pbx_ivr_option").write_text(OPTIONS)
    did = config / "pbx_did"
    rows = did.read_text().splitlines()
    rows[0] += " welcome(string,null)"
    rows[1:] = [f"{r}:" for r in rows[1:]]
    rows.insert(1, f"10:{DID}:provider:ivr:front:the auto attendant:please-hold")
    did.write_text("\n".join(rows) + "\n")
    e = start(tmp, port)
    try:
        yield e
    finally:
        stop(e)


def test_a_did_to_a_menu_and_a_key_reach_the_extension(env: Env, tmp_path: Path) -> None:
    line = Line(PROVIDER_IP)  # the SDP names the provider's address
    try:
        with (
            env.phones.callee(tmp_path, "uas_answer.xml", "101") as one,
            env.phones.callee(tmp_path, "uas_answer.xml", "102") as two,
        ):
            t, res = in_background(
                lambda: run(
                    "disa_provider_call.xml",
                    env.addr,
                    tmp_path,
                    "outside-ivr",
                    local_ip=PROVIDER_IP,
                    keys={"did": DID, "caller": "4930999888", "rtp_port": str(line.port)},
                    timeout=30,
                )
            )
            line.wait_answer()  # the PBX answered: the welcome, then the greeting
            assert heard_beeps(line.listen(1.0))
            line.keys("2")
            t.join(40)  # 102 answers; the caller hangs up 12 s after the PBX's 200
            time.sleep(0.5)
            one.stop()
            two.stop()
    finally:
        line.close()
    caller = res[0]
    check(caller)
    assert two.run.requests("INVITE"), two.run.report()  # key 2: extension 102
    assert not one.run.requests("INVITE"), one.run.report()
    assert caller.sent("BYE"), caller.report()  # the caller ended the answered call
