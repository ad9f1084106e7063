"""Busy lamp fields through `pbx run` against SIPp (issue 17): a SIPp lamp key
(extension 102, digest auth) subscribes to the `dialog` state of 101; 100 calls 101
(a SIPp phone that rings 200 ms, then answers) and hangs up; the key gets NOTIFYs in
order: idle (one dialog terminated), early (recipient, with the caller's identity
and display name, and the call-id/tags of the PBX's dialog with 101), confirmed,
terminated, each with the next `version`; then a refresh and `Expires: 0`. A park
slot's lamp (71) is lit while 101 has transferred the call there (REFER to 70) and
dark again once 103 retrieves it. An unknown event package gets 489 with
Allow-Events, a resource nobody lights 404. Then a lamp key picks a ringing call up
with an INVITE carrying Replaces built from its NOTIFY's ids."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.interop.features_env import PROVIDER_IP, Env, start, stop, write_config
from tests.interop.sipp_agents import PASSWORDS, Run, check, free_port, run

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("presence")
    write_config(tmp / "config", free_port(PROVIDER_IP))
    env = start(tmp)
    try:
        yield env
    finally:
        stop(env)


def _watch(env: Env, tmp: Path, scenario: str, resource: str, out: list[Run]) -> threading.Thread:
    """102's lamp key on `resource` in the background, once its first NOTIFY came."""
    name = f"lamp-{resource}"
    thread = threading.Thread(
        target=lambda: out.append(
            run(
                scenario,
                env.addr,
                tmp,
                name,
                keys={"user": "102", "resource": resource},
                auth=("102", PASSWORDS["102"]),
                timeout=30,
            )
        )
    )
    thread.start()
    _wait_for(tmp / name / "messages.log", lambda text: "<state>terminated</state>" in text)
    return thread


def _wait_for(log: Path, ok: Callable[[str], bool], seconds: float = 10) -> str:
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if ok(text):
            return text
        time.sleep(0.05)
    raise AssertionError(f"not seen in {log}:\n{text[-3000:]}")


def test_a_call_to_101_lights_its_lamp_in_order(env: Env, tmp_path: Path) -> None:
    out: list[Run] = []
    watcher = _watch(env, tmp_path, "uac_blf_call.xml", "101", out)
    try:
        caller, callee = env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")
    finally:
        watcher.join(40)
    (done,) = out
    check(done)
    states = [re.findall(r"<state>(\w+)</state>", n.body) for n in done.requests("NOTIFY")]
    assert (
        states == [["terminated"], ["early"], ["confirmed"], ["terminated"]] + [["terminated"]] * 2
    ), done.report()
    early = done.requests("NOTIFY")[1].body
    (invite,) = callee.requests("INVITE")
    ids = re.search(r'call-id="([^"]+)" local-tag="([^"]+)" remote-tag="([^"]+)"', early)
    assert ids is not None, early
    # The PBX's dialog with 101's phone, as that phone sees it.
    assert ids.group(1) == invite.header("Call-ID")
    assert f"tag={ids.group(3)}" in (invite.header("From") or "")
    ringing = [m for m in callee.messages if m.direction == "sent" and m.status == 180]
    assert ringing and f"tag={ids.group(2)}" in (ringing[0].header("To") or "")
    assert caller.requests("BYE") == []  # 100 hung up itself


def test_the_lamp_of_park_slot_71_follows_a_park_and_a_retrieve(env: Env, tmp_path: Path) -> None:
    out: list[Run] = []
    watcher = _watch(env, tmp_path, "uac_blf_park.xml", "71", out)
    parked: list[Run] = []
    phones = env.phones
    try:
        with phones.callee(tmp_path, "uas_refer.xml", "101", keys={"target": "70"}) as parker:
            caller = threading.Thread(
                target=lambda: parked.append(
                    phones.call(tmp_path, "uac_call_callee_bye.xml", "101", name="parked")
                )
            )
            caller.start()
            _wait_for(
                tmp_path / "lamp-71" / "messages.log",
                lambda text: "<state>confirmed</state>" in text,
            )
            released = parker.finish()
        retrieved = phones.call(tmp_path, "uac_call.xml", "71", user="103", name="retriever")
        caller.join(20)
    finally:
        watcher.join(40)
    check(released)
    check(retrieved)
    (party,) = parked
    check(party)  # 100: parked, retrieved by 103, whose BYE reached it
    (done,) = out
    check(done)
    states = [re.findall(r"<state>(\w+)</state>", n.body) for n in done.requests("NOTIFY")]
    assert states == [["terminated"], ["confirmed"], ["terminated"], ["terminated"]]


@pytest.mark.parametrize(
    ("name", "resource", "event", "status"),
    [
        ("unknown-package", "101", "Event: x-unknown", 489),
        ("no-lamp", "79", "Event: dialog", 404),
        ("no-presence", "71", "Event: presence", 404),
    ],
)
def test_subscribes_the_pbx_refuses(
    env: Env, tmp_path: Path, name: str, resource: str, event: str, status: int
) -> None:
    res = run(
        "uac_subscribe_refused.xml",
        env.addr,
        tmp_path,
        name,
        keys={"user": "102", "resource": resource, "event": event, "expires": "X-Expires: none"},
        auth=("102", PASSWORDS["102"]),
    )
    check(res)
    finals = [m.status for m in res.received() if m.status is not None and m.status >= 200]
    assert finals[-1] == status, res.report()
    if status == 489:
        allowed = res.received()[-1].header("Allow-Events") or ""
        assert {"dialog", "presence", "message-summary"} <= {
            e.strip() for e in allowed.split(",")
        }, allowed


def test_a_lamp_key_picks_the_ringing_call_up_with_replaces(env: Env, tmp_path: Path) -> None:
    """101 rings (and is CANCELled); 102 sends the INVITE with Replaces a Yealink or
    Snom key builds from the early NOTIFY (to-tag: the remote tag, from-tag: the
    local one) and talks to 100; its BYE reaches 100."""
    out: list[Run] = []
    watcher = _watch(env, tmp_path, "uac_blf_pickup.xml", "101", out)
    caller: list[Run] = []
    phones = env.phones
    try:
        with phones.callee(tmp_path, "uas_ring.xml", "101") as ringing:
            thread = threading.Thread(
                target=lambda: caller.append(
                    phones.call(tmp_path, "uac_call_callee_bye.xml", "101", name="caller")
                )
            )
            thread.start()
            text = _wait_for(
                tmp_path / "lamp-101" / "messages.log",
                lambda text: "<state>early</state>" in text,
            )
            ids = re.search(r'call-id="([^"]+)" local-tag="([^"]+)" remote-tag="([^"]+)"', text)
            assert ids is not None, text
            replaces = f"{ids.group(1)};to-tag={ids.group(3)};from-tag={ids.group(2)}"
            picked = run(
                "uac_call_replaces.xml",
                env.addr,
                tmp_path,
                "picker",
                keys={"user": "102", "callee": "101", "replaces": replaces},
                auth=("102", PASSWORDS["102"]),
            )
            thread.join(20)
            rang = ringing.finish()
    finally:
        watcher.join(40)
    check(picked)
    check(rang)  # 101's phone: CANCEL, 487
    (party,) = caller
    check(party)  # 100: answered by 102, whose BYE reached it
    (done,) = out
    check(done)
    states = [re.findall(r"<state>(\w+)</state>", n.body) for n in done.requests("NOTIFY")]
    assert states == [["terminated"], ["early"], ["terminated"], ["terminated"]]
