"""Transfer and pickup through `pbx run`, every phone a SIPp.

Blind transfer by REFER (RFC 3515): 100 calls 101, 101 transfers it to 102 (202,
NOTIFY 100 then 200 as message/sipfrag, then the PBX's BYE releases 101), 102 rings
with 100's identity and talks to 100: 100's later re-INVITE is answered (by the PBX,
on the anchored media) and its BYE reaches 102. Directed pickup: 102 dials **101
while 101 rings. In-call codes pressed as SIP INFO: `##` (blind) and `*2` (attended:
the transferor's hang-up joins the two, its `*` while the consultation rings comes
back)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.features_env import Env, start, stop
from tests.interop.sipp import SCENARIOS
from tests.interop.sipp_agents import Run, check

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    env = start(tmp_path_factory.mktemp("transfer"))
    try:
        yield env
    finally:
        stop(env)


def test_blind_transfer_by_refer(env: Env, tmp_path: Path) -> None:
    phones = env.phones
    (tmp_path / "target").mkdir()
    with phones.callee(tmp_path / "target", "uas_answer.xml", "102") as target:
        with phones.callee(tmp_path, "uas_refer.xml", "101", keys={"target": "102"}) as transferor:
            res = phones.call(tmp_path, "uac_call_long.xml", "101")
            referred = transferor.finish()
        answered = target.finish()
    check(res)
    check(referred)
    check(answered)
    assert [r.status for r in referred.received() if r.status] == [202], referred.report()
    frags = [n.body for n in referred.requests("NOTIFY")]
    assert len(frags) == 2 and "SIP/2.0 100" in frags[0] and "SIP/2.0 200" in frags[1]
    assert [n.header("Event") for n in referred.requests("NOTIFY")] == ["refer;id=2"] * 2
    assert referred.requests("BYE"), referred.report()
    invites = answered.requests("INVITE")
    assert len(invites) == 1, answered.report()  # 100's re-INVITE: the PBX answers it
    assert "sip:100@" in (invites[0].header("From") or "")
    # 100 hung up itself at the end: the PBX never sent it a BYE; 102 got 100's.
    assert res.requests("BYE") == [], res.report()
    assert answered.requests("BYE"), answered.report()


def test_directed_pickup_with_sipp_phones(env: Env, tmp_path: Path) -> None:
    """100 calls 101, which rings; 102 dials **101 and talks to 100: 101's phone gets
    CANCEL (its scenario ends on it), 100's call is answered by 102, 102's BYE ends
    it for 100."""
    phones = env.phones
    caller: list[Run] = []
    with phones.callee(tmp_path, "uas_ring.xml", "101") as ringing:
        thread = threading.Thread(
            target=lambda: caller.append(
                phones.call(tmp_path, "uac_call_callee_bye.xml", "101", name="caller")
            )
        )
        thread.start()
        try:
            time.sleep(1.5)  # 101 rings (its ring timeout in configs/features is 5 s)
            picked = phones.call(tmp_path, "uac_call.xml", "**101", user="102", name="picker")
        finally:
            thread.join(30)
        rang = ringing.finish()
    check(picked)
    check(rang)
    (res,) = caller
    check(res)
    assert rang.requests("CANCEL"), rang.report()
    assert next(s for s in picked.statuses() if s >= 200 and s != 407) == 200, picked.report()
    assert res.requests("BYE"), res.report()  # 102 hung up: the PBX told 100


def test_in_call_blind_transfer_by_keys_in_sip_info(env: Env, tmp_path: Path) -> None:
    """100 calls 101 and presses ## then 102# (SIP INFO): 101 is sent to 102 with
    its own identity, 100 gets the PBX's BYE; 101's hang-up later reaches 102."""
    phones = env.phones
    (tmp_path / "target").mkdir()
    with phones.callee(tmp_path / "target", "uas_answer.xml", "102") as target:
        with phones.callee(tmp_path, "uas_bye_late.xml", "101") as held:
            res = phones.call(tmp_path, "uac_incall_transfer.xml", "101")
            stayed = held.finish()
        answered = target.finish()
    check(res)
    check(stayed)
    check(answered)
    assert res.requests("BYE"), res.report()  # released by the PBX
    (invite,) = answered.requests("INVITE")
    assert "sip:101@" in (invite.header("From") or ""), answered.report()
    assert answered.requests("BYE"), answered.report()  # 101 hung up: told to 102


def test_intercom_reaches_a_sipp_phone_with_auto_answer_headers(env: Env, tmp_path: Path) -> None:
    """*80101: the phone's INVITE asks it to answer by itself (Call-Info
    answer-after=0, Alert-Info info=alert-autoanswer) and the call goes through."""
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
        res = env.phones.call(tmp_path, "uac_call.xml", "*80101")
        answered = phone.finish()
    check(res)
    check(answered)
    (invite,) = answered.requests("INVITE")
    assert "answer-after=0" in (invite.header("Call-Info") or ""), answered.report()
    assert any("alert-autoanswer" in v for v in invite.headers("Alert-Info")), answered.report()


INFO = """  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Caller [user]" <sip:[user]@[domain]>;tag=[pid]C[call_number]
      To: <sip:[callee]@[domain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      [routes]
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160

    ]]>
  </send>
  <recv response="200"/>
  <pause milliseconds="{pause}"/>
"""
BYE = """  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Caller [user]" <sip:[user]@[domain]>;tag=[pid]C[call_number]
      To: <sip:[callee]@[domain]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      [routes]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <Reference variables="realm,sdp"/>
</scenario>
"""


def keys_scenario(path: Path, presses: list[tuple[str, int]]) -> Path:
    """A caller's scenario: uac_incall_transfer.xml's call (INVITE, 407, ACK), then
    each (key, pause in ms after it) as SIP INFO (application/dtmf-relay), then its
    own BYE (it hangs up)."""
    text = (SCENARIOS / "uac_incall_transfer.xml").read_text()
    head = text[: text.index('  <pause milliseconds="1000"/>')]
    head = head.replace('name="uac_incall_transfer"', f'name="{path.stem}"')
    body = [INFO.format(cseq=3 + i, digit=k, pause=ms) for i, (k, ms) in enumerate(presses)]
    path.write_text(
        head
        + '  <pause milliseconds="1000"/>\n'
        + "".join(body)
        + BYE.format(cseq=3 + len(presses))
    )
    return path


def test_in_call_attended_transfer_by_keys_hang_up_joins(env: Env, tmp_path: Path) -> None:
    """100 calls 101, presses *2 then 102# (SIP INFO): 102 rings with 100's identity
    and answers (the consultation), 100 hangs up: 101 and 102 are joined, so 102's
    hang-up reaches 101. The PBX never sends 100 a BYE."""
    phones = env.phones
    (tmp_path / "target").mkdir()
    presses = [("*", 200), ("2", 1500), ("1", 200), ("0", 200), ("2", 200), ("#", 1500)]
    scenario = keys_scenario(tmp_path / "uac_attended_hangup.xml", presses)
    with phones.callee(tmp_path / "target", "uas_bye_late.xml", "102") as target:
        with phones.callee(tmp_path, "uas_answer.xml", "101") as held:
            res = phones.call(tmp_path, str(scenario), "101")
            joined = held.finish()
        consulted = target.finish()
    check(res)
    check(joined)
    check(consulted)
    (invite,) = consulted.requests("INVITE")
    assert "sip:100@" in (invite.header("From") or ""), consulted.report()
    assert res.requests("BYE") == [], res.report()  # 100 hung up itself
    assert joined.requests("BYE"), joined.report()  # 102's hang-up reached 101


def test_in_call_attended_transfer_by_keys_star_comes_back(env: Env, tmp_path: Path) -> None:
    """100 calls 101, presses *2 then 102#; 102 rings; 100 presses *: 102 gets
    CANCEL and 100 is back with 101, whom its own hang-up then reaches."""
    phones = env.phones
    (tmp_path / "target").mkdir()
    presses = [("*", 200), ("2", 1500), ("1", 200), ("0", 200), ("2", 200), ("#", 1500)]
    presses += [("*", 1000)]
    scenario = keys_scenario(tmp_path / "uac_attended_cancel.xml", presses)
    with phones.callee(tmp_path / "target", "uas_ring.xml", "102") as target:
        with phones.callee(tmp_path, "uas_answer.xml", "101") as held:
            res = phones.call(tmp_path, str(scenario), "101")
            back = held.finish()
        rang = target.finish()
    check(res)
    check(back)
    check(rang)
    assert rang.requests("CANCEL"), rang.report()
    assert res.requests("BYE") == [], res.report()
    assert back.requests("BYE"), back.report()  # 100's own BYE, relayed to 101
