"""A phone's re-INVITE without SDP in the middle of a call, against SIPp (RFC 3261 §14,
RFC 3264 §8: the offer comes in the 2xx and the answer in the ACK).

With anchored media the PBX answers it itself: its 200 carries the engine's offer
for the caller's leg (same address and port, the codec in use first) and the
caller's answer in the ACK is applied to that leg alone, so the callee never hears
of it. With direct media the re-INVITE goes to the callee, whose offer comes back in
our 200, and our ACK to the callee carries the caller's answer. Either way a
re-INVITE with SDP afterwards still works, and an unusable answer ends the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.sipp import SCENARIOS
from tests.interop.sipp_agents import Message, Run
from tests.interop.test_media_anchor import (
    CALLEE_IP,
    CALLER_IP,
    PBX_MEDIA,
    Env,
    media_pbx,
    sdp_address,
)

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with media_pbx(tmp_path_factory.mktemp("reinvite")) as e:
        yield e


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with media_pbx(tmp_path_factory.mktemp("reinvite-direct"), {"direct_media": "yes"}) as e:
        yield e


def _ok(res: Run, cseq: str) -> Message:
    """The caller's 200 to its INVITE with CSeq `cseq`."""
    return res.responses(200, f"{cseq} INVITE")[0]


def _m_line(msg: Message) -> str:
    return next(line for line in msg.body.splitlines() if line.startswith("m=audio"))


def test_reinvite_without_sdp_is_answered_by_the_pbx(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_reinvite_late.xml", "uas_reinvite_late.xml")
    first, late, second = _ok(res, "2"), _ok(res, "3"), _ok(res, "4")
    # Our offer: the caller's leg as it is (the PBX's address and port), the codec
    # in use (PCMU) first, then PCMA and telephone-event.
    assert sdp_address(late) == sdp_address(first), late.text
    assert sdp_address(late)[0] == PBX_MEDIA
    port = sdp_address(first)[1]
    assert _m_line(late) == f"m=audio {port} RTP/AVP 0 8 101", late.text
    assert "a=sendrecv" in late.body and "o=caller" not in late.body
    assert "Session-Expires" in late.text  # a refresh like any re-INVITE
    # The caller answered PCMA in its ACK: the next re-INVITE offers PCMA and PCMU
    # and the PBX keeps PCMA, the codec the ACK's answer put in use.
    assert _m_line(second).startswith(f"m=audio {port} RTP/AVP 8"), second.text
    # The anchor hid it all from the callee, and the PBX hung up no one.
    assert [m.body.strip() != "" for m in b.requests("INVITE")] == [True], b.report()
    assert res.requests("BYE") == [], res.report()
    row = env.cdr(res)
    assert row["disposition"] == "ANSWERED" and row["cause"] == "caller hung up", row
    assert row["caller_codec"] == "PCMA" and row["callee_codec"] == "PCMU", row


def test_unusable_answer_in_the_ack_ends_the_call(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_reinvite_late_bad.xml", "uas_reinvite_late.xml")
    assert len(res.requests("BYE")) == 1 and len(b.requests("BYE")) == 1, res.report()
    row = env.cdr(res)
    assert row["cause"].startswith("no usable answer in ACK"), row
    assert "no codec we offered" in row["cause"], row


def test_reinvite_without_sdp_relayed_with_direct_media(direct: Env, tmp_path: Path) -> None:
    res, b = direct.phones.talk(tmp_path, "uac_reinvite_late.xml", "uas_reinvite_late.xml")
    invites = b.requests("INVITE")
    assert [m.body.strip() != "" for m in invites] == [True, False, True], b.report()
    # The callee's offer reached the caller unchanged (media phone to phone) ...
    late = _ok(res, "3")
    assert sdp_address(late)[0] == CALLEE_IP and "o=callee" in late.body, late.text
    # ... and the caller's answer reached the callee in the PBX's ACK.
    acks = b.requests("ACK")
    assert len(acks) == 3, b.report()
    assert "o=caller" in acks[1].body and sdp_address(acks[1])[0] == CALLER_IP, acks[1].text
    assert "RTP/AVP 8" in acks[1].body
    assert acks[0].body.strip() == "" and acks[2].body.strip() == ""
    assert _ok(res, "4").body and res.requests("BYE") == []
    row = direct.cdr(res)
    assert row["disposition"] == "ANSWERED" and row["cause"] == "caller hung up", row


def test_our_offer_is_retransmitted_until_the_ack(env: Env, tmp_path: Path) -> None:
    """The caller takes 1.6 s to ACK: the PBX's 200 (with its offer) is sent again
    meanwhile (RFC 3261 §13.3.1.4: T1, 2*T1 …), the late ACK's answer still counts."""
    src = (SCENARIOS / "uac_reinvite_late.xml").read_text()
    ack3 = src.index("      ACK [next_url] SIP/2.0", src.index("CSeq: 3 INVITE"))
    send = src.rindex("  <send>", 0, ack3)
    slow = tmp_path / "uac_reinvite_slow_ack.xml"
    slow.write_text(src[:send] + '  <pause milliseconds="1600"/>\n' + src[send:])
    res, _b = env.phones.talk(tmp_path, str(slow), "uas_reinvite_late.xml")
    oks = res.responses(200, "3 INVITE")
    assert len(oks) >= 2 and len({m.body for m in oks}) == 1, res.report()
    assert _m_line(_ok(res, "4")).split()[3] == "8", res.report()  # the answer counted
    assert res.requests("BYE") == [], res.report()


# ---------------------------------------------------------------- 2xx until the ACK


@pytest.mark.parametrize("mode", ["anchored", "direct"])
def test_200_to_a_callers_reinvite_is_resent_until_the_ack(
    mode: str, env: Env, direct: Env, tmp_path: Path
) -> None:
    """The caller holds back its ACK to the 200 to its re-INVITE with SDP until it got
    that 200 a second time (over UDP a lost 200 is repaired only so, RFC 3261
    §13.3.1.4): answered by the PBX (anchored) or by the callee (direct media) alike.
    The call goes on and the caller's BYE ends it."""
    pbx = env if mode == "anchored" else direct
    res, b = pbx.phones.talk(
        tmp_path, "uac_reinvite_ack_late.xml", "uas_reinvite_late.xml", extra=["-nr"]
    )
    first, again = res.responses(200, "3 INVITE")[:2]
    assert first.text == again.text, res.report()  # the very same 200
    assert "m=audio" in first.body
    assert len(b.requests("INVITE")) == (1 if mode == "anchored" else 2), b.report()
    assert res.requests("BYE") == [] and len(b.requests("BYE")) == 1, res.report()
    row = pbx.cdr(res)
    assert row["disposition"] == "ANSWERED" and row["cause"] == "caller hung up", row


@pytest.mark.parametrize("mode", ["anchored", "direct"])
def test_200_to_a_callees_reinvite_is_resent_until_the_ack(
    mode: str, env: Env, direct: Env, tmp_path: Path
) -> None:
    """The same from the callee's side: its re-INVITE inside our dialog with it gets
    a 200 that comes again until the callee ACKs it."""
    pbx = env if mode == "anchored" else direct
    res, b = pbx.phones.talk(
        tmp_path, "uac_call_peer_reinvite.xml", "uas_reinvite_ack_late.xml", callee_extra=["-nr"]
    )
    first, again = b.responses(200, "1 INVITE")[:2]
    assert first.text == again.text, b.report()
    assert "m=audio" in first.body
    # Anchored, the PBX answered on the callee's leg; direct, the caller did.
    assert len(res.requests("INVITE")) == (0 if mode == "anchored" else 1), res.report()
    assert len(b.requests("BYE")) == 1, b.report()
    row = pbx.cdr(res)
    assert row["disposition"] == "ANSWERED" and row["cause"] == "caller hung up", row
