"""Issue 12's first features through `pbx run`, against SIPp phones and a SIPp
"provider": do not disturb (*78/*79/*76), call waiting off (*71), call forward all /
busy / no answer (*72/*73, *90, *52), to an extension and out through the trunk,
and the call class of the forwarding extension. Each test asserts on what the peers
saw (statuses, who got the INVITE, its From and Diversion, what the phone heard).

One PBX serves the module (features_env: configs/features, 5 s ring timeouts); every
test starts from the tables' toggles (none set: all off; reset over the control socket).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.pbx.control import query
from tests.interop.features_env import PROVIDER_IP, RING_TIMEOUT, Env, start, stop
from tests.interop.sipp_agents import Message, Run, Server, check

TRUNK_CID = "4930100"  # configs/features pbx_trunk caller_id

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = start(tmp_path_factory.mktemp("features"))
    try:
        yield env
    finally:
        stop(env)


@pytest.fixture
def env(module_env: Env) -> Env:
    module_env.reset()
    return module_env


def status_of(res: Run) -> int:
    """The final status the caller got to its (authenticated) INVITE."""
    statuses = [s for s in res.statuses() if s >= 200 and s != 407]
    assert statuses, res.report()
    return statuses[-1]


def only_invite(run: Run) -> Message:
    invites = run.requests("INVITE")
    assert len(invites) == 1, run.report()
    return invites[0]


def rejected(env: Env, tmp: Path, number: str, user: str = "100") -> int:
    res = env.phones.call(tmp, "uac_reject.xml", number, user=user, name=f"reject-{number}")
    check(res)
    return status_of(res)


# ---------------------------------------------------------------- do not disturb


def test_dnd_on_off_and_toggle(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*78")
    assert env.toggles("101")["dnd.dnd"] is True
    # 101 is registered and would answer: DND makes it busy without ringing it.
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
        assert rejected(env, tmp_path, "101") == 486
        phone.stop()
    assert phone.run.requests("INVITE") == [], phone.run.report()

    env.dial_code(tmp_path, "101", "*79")
    assert env.toggles("101")["dnd.dnd"] is False
    env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")

    env.dial_code(tmp_path, "101", "*76")  # toggles: on
    assert env.toggles("101")["dnd.dnd"] is True
    assert rejected(env, tmp_path, "101") == 486
    env.dial_code(tmp_path, "101", "*76")  # and off again
    assert env.toggles("101")["dnd.dnd"] is False
    env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")


# ---------------------------------------------------------------- call waiting


def answered(phone: Server, timeout: float = 5.0) -> None:
    """Wait until the SIPp callee `phone` has sent its 200 to an INVITE."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(m.direction == "sent" and m.status == 200 for m in phone.run.messages):
            return
        time.sleep(0.1)
    raise AssertionError(f"the callee did not answer:\n{phone.run.report()}")


def test_call_waiting_off_busy_then_forward_on_busy(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*71")
    assert env.toggles("101")["callwaiting.call_waiting"] is False
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
        first: list[Run] = []
        talking = threading.Thread(
            target=lambda: first.append(
                env.phones.call(tmp_path, "feat_call_hold.xml", "101", extra=["-d", "7000"])
            )
        )
        talking.start()
        try:
            answered(phone)
            # 101 is in a call and has call waiting off: a second call is busy.
            assert rejected(env, tmp_path, "101", user="103") == 486
            # With forward on busy set (from 101's phone, during its call), the
            # second call goes to 102 instead, as 103's call diverted by 101.
            env.dial_code(tmp_path, "101", "*90102")
            with env.phones.callee(tmp_path, "uas_answer.xml", "102") as other:
                res = env.phones.call(tmp_path, "uac_call.xml", "101", user="103")
                check(res)
                check(other.finish())
        finally:
            talking.join(30)
        check(first[0])
        check(phone.finish())
    assert len(phone.run.requests("INVITE")) == 1, phone.run.report()  # only the first
    invite = only_invite(other.run)
    assert "sip:103@" in (invite.header("From") or ""), invite.text
    assert diversion(invite) == ("101", "user-busy"), invite.text


# ---------------------------------------------------------------- call forward


def diversion(invite: Message) -> tuple[str, str]:
    """(the diverting extension, the reason) of an INVITE's one Diversion (RFC 5806)."""
    (value,) = invite.headers("Diversion")
    m = re.match(r"<sip:(\d+)@[^>]+>.*;reason=([\w-]+)", value)
    assert m is not None, value
    return m.group(1), m.group(2)


def test_forward_all_to_an_extension_and_off(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*72102")
    assert env.toggles("101")["forward.forward_all"] == "102"
    with (
        env.phones.callee(tmp_path, "uas_answer.xml", "101") as office,
        env.phones.callee(tmp_path, "uas_answer.xml", "102") as other,
    ):
        check(env.phones.call(tmp_path, "uac_call.xml", "101"))
        check(other.finish())
        office.stop()
    assert office.run.requests("INVITE") == [], office.run.report()
    invite = only_invite(other.run)
    assert invite.first_line.startswith("INVITE sip:102@"), invite.text
    assert "sip:100@" in (invite.header("From") or ""), invite.text  # the original caller
    assert diversion(invite) == ("101", "unconditional"), invite.text

    env.dial_code(tmp_path, "101", "*73")
    assert env.toggles("101")["forward.forward_all"] is False
    _, office_run = env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")
    assert only_invite(office_run).headers("Diversion") == []


def test_forward_on_busy(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*90102")
    assert env.toggles("101")["forward.forward_busy"] == "102"
    with (
        env.phones.callee(tmp_path, "uas_busy.xml", "101") as office,
        env.phones.callee(tmp_path, "uas_answer.xml", "102") as other,
    ):
        check(env.phones.call(tmp_path, "uac_call.xml", "101"))
        check(other.finish())
        check(office.finish())  # it was asked, and said busy
    invite = only_invite(other.run)
    assert "sip:100@" in (invite.header("From") or ""), invite.text
    assert diversion(invite) == ("101", "user-busy"), invite.text


def test_forward_on_no_answer_after_the_ring_timeout(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*52102")
    assert env.toggles("101")["forward.forward_noanswer"] == "102"
    with (
        env.phones.callee(tmp_path, "uas_ring.xml", "101") as office,
        env.phones.callee(tmp_path, "uas_answer.xml", "102") as other,
    ):
        check(env.phones.call(tmp_path, "uac_call.xml", "101"))
        check(other.finish())
        check(office.finish())  # rang, then CANCEL: 487
    rang, forwarded = only_invite(office.run), only_invite(other.run)
    assert rang.at is not None and forwarded.at is not None
    assert forwarded.at - rang.at >= RING_TIMEOUT - 0.5, (rang.at, forwarded.at)
    assert "sip:100@" in (forwarded.header("From") or ""), forwarded.text
    assert diversion(forwarded) == ("101", "no-answer"), forwarded.text


# ---------------------------------------------------------------- forward out


def test_forward_to_an_outside_number_through_the_trunk(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*7204930777")  # national route: 0 + number
    provider = env.provider(tmp_path)
    try:
        with env.phones.callee(tmp_path, "uas_answer.xml", "101") as office:
            check(env.phones.call(tmp_path, "uac_call.xml", "101"))
            prov = provider.finish(10)
            office.stop()
    finally:
        provider.stop()
    check(prov)
    assert office.run.requests("INVITE") == [], office.run.report()
    invite = only_invite(prov)
    assert invite.first_line.startswith(f"INVITE sip:4930777@{PROVIDER_IP}"), invite.text
    # The provider is shown the original caller, asserted as the office's line
    # (RFC 3325) and told who diverted the call and why (RFC 5806).
    assert re.search(r"<sip:100@", invite.header("From") or ""), invite.text
    assert invite.headers("P-Asserted-Identity") == [f"<sip:{TRUNK_CID}@{PROVIDER_IP}>"]
    assert diversion(invite) == ("101", "unconditional"), invite.text


def test_call_class_stops_a_forward_out(env: Env, tmp_path: Path) -> None:
    # 103 is of class internal: it may not set a forward to a national number, from
    # its phone or from the console ...
    assert rejected(env, tmp_path, "*7204930777", user="103") == 403
    assert env.toggles("103")["forward.forward_all"] is None
    refused = query(
        env.control,
        {"cmd": "toggles", "extension": "103", "set": "forward.forward_all", "value": "04930777"},
    )
    assert not refused["ok"] and "not allowed" in refused["error"], refused
    # ... 102 (national) may: the same code is answered and sets it ...
    env.dial_code(tmp_path, "102", "*7204930777")
    assert env.toggles("102")["forward.forward_all"] == "04930777"
    # ... and when 102 is made internal afterwards, the forward is checked again when
    # used: the caller hears 403 and nothing reaches the provider.
    table = env.tmp / "config" / "pbx_extension"
    rows = table.read_text()
    table.write_text(rows.replace("Office 2:5:national", "Office 2:5:internal"))
    try:
        assert query(env.control, {"cmd": "reload"})["reloaded"]
        provider = env.provider(tmp_path)
        try:
            assert rejected(env, tmp_path, "102") == 403
            prov = provider.finish(0.5)
        finally:
            provider.stop()
    finally:  # the PBX is shared by this module's tests: 102 national again
        table.write_text(rows)
        assert query(env.control, {"cmd": "reload"})["reloaded"]
    assert prov.requests() == [], prov.report()
