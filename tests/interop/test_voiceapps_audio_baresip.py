"""The voice applications with real phones (issue 15's "done means"): baresip phones,
each sending its own sine (tests/interop/baresip_phones.py), registered to one `pbx
run` on configs/features overlaid with configs/voiceapps (display names Alice Adams
100, Bob Baker 101, Carol Smith 102, Dan Jones 103; mailboxes for 101 and 103; the
IVR menu `main` on 700: 2 → 102, 3 → the hunt group 601; the broadcast group 660:
members 101, 102, 103, sender 100, auto-answer). Every test checks what the phones
heard, not only the SIP states:

- greeting: 101 dials *97, presses 0 then 1 (its unavailable greeting), "speaks" its
  tone and presses #; 100 calls 101 (not registered) and hears 101's tone, then the
  beep before the message;
- IVR: 100 dials 700 and presses 2 (or 3): it hears ringback while 102 (or 101,
  through the hunt group) rings, which answers; both hear each other;
- directory: 100 dials *411, keys WXY (no name): nobody rings and 100 hears the
  "no match" beep but no ringback; then SMI (Smith) and 1: 102 rings, answers, and
  both hear each other;
- broadcast: 100 dials 660 and records its tone; 101 and 102 answer by themselves and
  hear it; 103 (not registered) finds it in its mailbox (*97, 1); `pbx status` shows
  101 and 102 `heard`, 103 `mailbox`.

The PBX has no prompt files here: every prompt is the confirmation beep (US: 350 +
440 Hz, three 100 ms bursts), which the tests use as "the PBX spoke".
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.baresip_phones import (
    RATE,
    Phone,
    control,
    heard_windows,
    wait_bindings,
)
from tests.interop.features_env import PROVIDER_IP, write_config
from tests.interop.sipp_agents import free_port, pbx_command

pytestmark = [pytest.mark.interop, pytest.mark.tools("baresip", "sipp")]

VOICEAPPS = Path(__file__).resolve().parent / "configs" / "voiceapps"
# As tests/interop/test_features_audio_baresip.py: no PBX tone, none a sum or
# difference of two others.
HZ = {"100": 1020.0, "101": 1330.0, "102": 1770.0, "103": 2290.0}
ALL = list(HZ.values())
HEARD = 1.0  # seconds of a talker's tone that count as hearing them
BEEP = [350.0, 440.0]  # the confirmation tone (US), every missing prompt
RINGBACK = [440.0, 480.0]  # US ringback, 2 s on, 4 s off

MakePhone = Callable[..., Phone]


def _others(*want: str) -> list[float]:
    return [hz for ext, hz in HZ.items() if ext not in want]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    tmp = tmp_path_factory.mktemp("voiceapps")
    config = write_config(tmp / "config", free_port(PROVIDER_IP))
    for table in VOICEAPPS.iterdir():
        shutil.copy(table, config / table.name)
    p = start_pbx(tmp, config=config, extra=["--state", str(tmp / "state.mdb")])
    try:
        yield p
    finally:
        stop_pbx(p)
        assert "Traceback" not in p.log(), p.log()


@pytest.fixture
def phone(pbx: PbxProcess, tmp_path: Path) -> Iterator[MakePhone]:
    """Start an extension's phone (registered unless register=False); every phone is
    stopped after the test and its binding gone before the next test starts."""
    started: list[Phone] = []

    def make(user: str, answer: str = "auto", register: bool = True) -> Phone:
        workdir = tmp_path / f"{user}-{len(started)}"
        agent = Phone(workdir, user, HZ[user], pbx, answer=answer, register=register)
        started.append(agent)
        agent.start()
        if register:
            wait_bindings(pbx, user, True)
        return agent

    try:
        yield make
    finally:
        for agent in started:
            agent.stop()
        for agent in started:
            if agent.register:
                wait_bindings(pbx, agent.user, False)


def _hangup(caller: Phone, *others: Phone) -> None:
    caller.hangup()
    caller.wait_event("CALL_CLOSED", timeout=10)
    for p in others:
        p.wait_event("CALL_CLOSED", timeout=10)


def _heard(agent: Phone, talker: str) -> list[float]:
    """When (s into its last call) `agent` heard `talker`'s tone alone."""
    return heard_windows(agent.heard(), [HZ[talker]], _others(talker))


def _beeps(samples: list[int]) -> list[float]:
    """When the confirmation beep was heard (50 ms windows: its bursts are 100 ms)."""
    return heard_windows(samples, BEEP, [480.0, *ALL], window=400, step=80)


def _ringback(samples: list[int]) -> list[float]:
    return heard_windows(samples, RINGBACK, [350.0, *ALL])


def _so_far(agent: Phone) -> float:
    """How long (s) the recording of what `agent` hears in its call is by now: its
    time line, which lacks the stretches the PBX sent no audio (waiting for keys)."""
    return max(0, agent.recording("dec").stat().st_size - 44) / 2 / RATE


def _answer(agent: Phone) -> None:
    """A ringing phone with answer="manual" picks up."""
    answer = agent.command("accept")
    assert answer.get("ok"), answer
    agent.wait_event("CALL_ESTABLISHED", timeout=10)


def _two_way(caller: Phone, callee: Phone, seconds: float = 2.0) -> None:
    time.sleep(seconds)
    _hangup(caller, callee)
    assert len(_heard(callee, caller.user)) * 0.1 >= HEARD, f"{callee.user} did not hear 100"
    assert len(_heard(caller, callee.user)) * 0.1 >= HEARD, f"100 did not hear {callee.user}"


def test_greeting_recorded_from_the_phone_is_played_to_the_next_caller(
    phone: MakePhone,
) -> None:
    owner = phone("101", register=False)  # no binding: its callers go to the box
    owner.call("*97")  # its own box from its own phone: no PIN asked
    owner.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(1.0)  # "no messages", the menu
    owner.send_dtmf("0")  # greetings
    time.sleep(1.0)
    owner.send_dtmf("1")  # the unavailable greeting: "record after the tone", beep
    time.sleep(3.5)  # 101's tone is the greeting
    owner.send_dtmf("#")
    time.sleep(1.0)  # "greeting saved"
    _hangup(owner)
    caller = phone("100")
    caller.call("101")
    caller.wait_event("CALL_ESTABLISHED", timeout=10)  # voicemail answers at once
    time.sleep(5.0)  # the greeting, the beep, the start of the message
    _hangup(caller)
    samples = caller.heard()
    greeting = heard_windows(samples, [HZ["101"]], _others("101"))
    assert len(greeting) * 0.1 >= 2.0, f"100 did not hear 101's greeting: {greeting}"
    beeps = _beeps(samples)
    after = [t for t in beeps if t > greeting[-1]]
    assert after, f"no beep after the greeting (greeting {greeting}, beeps {beeps})"
    # The built-in prompts (beeps) are not played instead of the greeting.
    assert not [t for t in beeps if t < greeting[0]], f"beeps before the greeting: {beeps}"


@pytest.mark.parametrize(("key", "reached"), [("2", "102"), ("3", "101")])
def test_ivr_key_reaches_its_destination(phone: MakePhone, key: str, reached: str) -> None:
    """2: extension 102; 3: the hunt group 601 (101 first)."""
    caller = phone("100")
    callee = phone(reached, answer="manual")
    caller.call("700")
    caller.wait_event("CALL_ESTABLISHED", timeout=10)  # the menu answers
    time.sleep(1.0)  # the greeting (a beep)
    caller.send_dtmf(key)
    callee.wait_event("CALL_INCOMING", timeout=10)
    time.sleep(1.5)  # ringing
    _answer(callee)
    _two_way(caller, callee)
    ringback = _ringback(caller.heard())
    assert len(ringback) >= 5, f"100 heard no ringback while {reached} rang: {ringback}"
    assert ringback[-1] < _heard(caller, reached)[0], "ringback after the answer"


def test_directory_finds_by_letters(phone: MakePhone) -> None:
    caller = phone("100")
    callee = phone("102", answer="manual")
    caller.call("*411")
    caller.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(1.0)  # "enter the first three letters" (a beep)
    caller.send_dtmf("999")  # WXY: nobody's surname
    with pytest.raises(TimeoutError):
        callee.wait_event("CALL_INCOMING", timeout=3.0)  # "no name matches", asked again
    wrong_until = _so_far(caller)  # the right letters come after this in 100's call
    caller.send_dtmf("764")  # SMI: Carol Smith, 102
    time.sleep(2.0)  # "extension 1 0 2, press one to call"
    caller.send_dtmf("1")
    callee.wait_event("CALL_INCOMING", timeout=10)
    time.sleep(1.5)
    _answer(callee)
    _two_way(caller, callee)
    samples = caller.heard()
    ringback = _ringback(samples)
    beeps = _beeps(samples)
    # The first prompt is one beep (0.6 s); after WXY the PBX spoke again ("no name
    # matches", the letters asked again) and rang nobody.
    assert [t for t in beeps if 0.7 < t < wrong_until], f"no 'no match' after WXY: {beeps}"
    assert not [t for t in ringback if t < wrong_until], f"ringback after WXY: {ringback}"
    assert len(ringback) >= 5, f"100 heard no ringback while 102 rang: {ringback}"


def _broadcast_states(pbx: PbxProcess) -> dict[str, str]:
    """Each member's state in the last broadcast, as `pbx status --json` prints it."""
    answer = json.loads(pbx_command("status", "--json", "--control", str(control(pbx))))
    broadcasts = answer.get("features", {}).get("broadcast", {}).get("broadcasts", [])
    assert broadcasts, answer.get("features")
    members = broadcasts[-1]["members"]
    assert isinstance(members, dict), broadcasts
    return members


def test_broadcast_reaches_two_phones_and_a_mailbox(pbx: PbxProcess, phone: MakePhone) -> None:
    sender = phone("100")
    # auto_answer 1; baresip 1.0 does not read the headers: the phones are set to answer.
    members = [phone("101"), phone("102")]
    sender.call("660")
    sender.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(1.2)  # "record your broadcast after the tone", beep
    time.sleep(3.0)  # 100's tone is the message
    sender.send_dtmf("#")
    sender.wait_event("CALL_CLOSED", timeout=10)  # "sent", goodbye: the PBX hangs up
    for m in members:
        m.wait_event("CALL_ESTABLISHED", timeout=15)
    for m in members:
        m.wait_event("CALL_CLOSED", timeout=15)  # played through, the PBX hangs up
        assert len(_heard(m, "100")) * 0.1 >= 2.0, f"{m.user} did not hear the broadcast"
    deadline = time.monotonic() + 10
    while (states := _broadcast_states(pbx)) != {
        "101": "heard",
        "102": "heard",
        "103": "mailbox",
    } and time.monotonic() < deadline:
        time.sleep(0.2)
    assert states == {"101": "heard", "102": "heard", "103": "mailbox"}, states
    box = phone("103", register=False)
    box.call("*97")
    box.wait_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(1.0)  # "you have 1 new message", the menu
    box.send_dtmf("1")
    time.sleep(4.5)
    _hangup(box)
    assert len(_heard(box, "100")) * 0.1 >= 2.0, "103's mailbox did not hold 100's broadcast"
