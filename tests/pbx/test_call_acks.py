"""Every 2xx the B2BUA sends to an INVITE is retransmitted until its ACK (RFC 3261
§13.3.1.4, pbx_core/pbx/call_acks.py), with a fake clock and a fake SIP stack: the
CallManager drives a call between two phones whose messages the test writes.

Without a media engine re-INVITEs are passed across, so these cover the initial
INVITE and relayed re-INVITEs from either side; the re-INVITEs the media engine
answers itself are covered against SIPp (tests/interop/test_media_reinvite.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pbx_core.pbx.calls import Call, CallManager, State, Target
from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.sip.uri import parse_uri
from tests.harness.clock import FakeLoop
from tests.harness.stack import FakeStack, Sent

A_SRC = ("UDP", "10.0.0.7", 5062)
B_SRC = ("UDP", "10.0.0.8", 5064)
SDP = (
    b"v=0\r\no=x 1 1 IN IP4 10.0.0.7\r\ns=-\r\nc=IN IP4 10.0.0.7\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)


def msg(text: str, body: bytes = b"") -> Request | Response:
    head = text.strip().replace("\n", "\r\n")
    return parse_message(f"{head}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)


def request(text: str, body: bytes = b"") -> Request:
    out = msg(text + ("\nContent-Type: application/sdp" if body else ""), body)
    assert isinstance(out, Request)
    return out


def ok(req: Request, to_tag: str | None = None, body: bytes = b"") -> Response:
    """A phone's 200 to one of our requests."""
    resp = req.reply(200, to_tag=to_tag)
    resp.headers.add("Contact", "<sip:phone@10.0.0.8:5064>")
    if body:
        resp.body = body
        resp.headers.add("Content-Type", "application/sdp")
    return resp


@dataclass
class Env:
    stack: FakeStack
    calls: CallManager
    call: Call
    ended: list[Call]

    def responses(self, cseq: str, status: int = 200) -> list[Sent]:
        """What we sent the phones in answer to requests with CSeq `cseq`."""
        wanted = f"SIP/2.0 {status} ".encode()
        return [
            s
            for s in self.stack.out
            if s.data.startswith(wanted) and f"\r\nCSeq: {cseq}\r\n".encode() in s.data
        ]

    def acks(self) -> list[Sent]:
        """The ACKs we sent the phones."""
        return [s for s in self.stack.out if s.data.startswith(b"ACK ")]

    def in_dialog(self, side: str, method: str, cseq: int, body: bytes = b"") -> Request:
        """A request from the caller ("a") or the callee ("b") inside our dialog with
        it."""
        if side == "a":
            ip, port, phone, us, call_id = "10.0.0.7", 5062, "100", "101", "call-a@10.0.0.7"
            tags = ("atag", self.call.a_tag)
        else:
            assert self.call.answered is not None
            dialog = self.call.answered.dialog
            ip, port, phone, us, call_id = "10.0.0.8", 5064, "101", "100", dialog.call_id
            tags = ("btag", dialog.local_tag)
        return request(
            f"""{method} sip:pbx@10.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{side}{method}{cseq}
From: <sip:{phone}@pbx.local>;tag={tags[0]}
To: <sip:{us}@pbx.local>;tag={tags[1]}
Call-ID: {call_id}
CSeq: {cseq} {method}
Contact: <sip:{phone}@{ip}:{port}>""",
            body,
        )

    def a_invite(self, cseq: int, body: bytes = SDP) -> Request:
        return self.in_dialog("a", "INVITE", cseq, body)

    def a_ack(self, cseq: int) -> Request:
        return self.in_dialog("a", "ACK", cseq)


@pytest.fixture
def env() -> Env:
    """A call from 100 to 101, answered by 101; nobody has ACKed our 200 yet."""
    stack = FakeStack(FakeLoop(), host="10.0.0.1")
    ended: list[Call] = []
    calls = CallManager(stack, on_end=ended.append)  # type: ignore[arg-type]  # the fake stack
    invite = request(
        """INVITE sip:101@pbx.local SIP/2.0
Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bKa1
From: <sip:100@pbx.local>;tag=atag
To: <sip:101@pbx.local>
Call-ID: call-a@10.0.0.7
CSeq: 1 INVITE
Contact: <sip:100@10.0.0.7:5062>""",
        SDP,
    )
    target = Target(
        parse_uri("sip:101@10.0.0.8:5064"),
        B_SRC,
        "101@pbx.local",
        "<sip:100@pbx.local>",
        "<sip:101@pbx.local>",
    )
    call = calls.start(invite, "key-a", A_SRC, "100@pbx.local", "101", [target], 30.0)
    ((b_invite, _dest, answer),) = stack.requests
    answer(ok(b_invite, "btag", SDP))
    assert call.state is State.ANSWERED
    return Env(stack, calls, call, ended)


def test_our_2xx_to_the_initial_invite_is_resent_unchanged_until_its_ack(env: Env) -> None:
    (first,) = env.responses("1 INVITE")
    assert first.how == "respond"
    env.stack.loop.advance(3.6)  # T1, then 2*T1 and 4*T1 later: 0.5, 1.5, 3.5
    again = env.responses("1 INVITE")[1:]
    assert [s.at - first.at for s in again] == [0.5, 1.5, 3.5]
    assert all(s.how == "send" and s.dest == A_SRC and s.data == first.data for s in again)
    # An ACK for another CSeq is not this one's.
    env.calls.in_dialog(env.a_ack(7), A_SRC, None)
    env.stack.loop.advance(4.0)
    assert len(env.responses("1 INVITE")) == 5
    env.calls.in_dialog(env.a_ack(1), A_SRC, None)
    env.stack.loop.advance(60.0)
    assert len(env.responses("1 INVITE")) == 5
    assert env.call.state is State.ANSWERED and env.stack.sent_requests("BYE") == []


def test_the_interval_doubles_up_to_t2_and_the_call_ends_after_64_t1(env: Env) -> None:
    env.stack.loop.advance(31.9)
    times = [s.at - 1000.0 for s in env.responses("1 INVITE")]
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert env.call.state is State.ANSWERED
    env.stack.loop.advance(0.2)
    assert env.call.state is State.ENDED
    byes = env.stack.sent_requests("BYE")
    assert sorted(str(b.uri) for b in byes) == ["sip:100@10.0.0.7:5062", "sip:phone@10.0.0.8:5064"]
    assert env.ended == [env.call] and env.call.cause == "no ACK from the caller"
    assert env.call.disposition == "ANSWERED"
    env.stack.loop.advance(60.0)
    assert len(env.responses("1 INVITE")) == 11  # nothing after the hang-up


def _relay_reinvite_from_a(env: Env, cseq: int, body: bytes = SDP) -> Request:
    """The caller's re-INVITE, passed to the callee; returns ours to the callee after
    the callee answered it."""
    env.calls.in_dialog(env.a_ack(1), A_SRC, None)
    env.calls.in_dialog(env.a_invite(cseq, body), A_SRC, f"key-a{cseq}")
    out, dest, answer = env.stack.requests[-1]
    assert out.method == "INVITE" and dest == B_SRC
    answer(ok(out, body=SDP))
    return out


def test_a_relayed_reinvites_2xx_is_resent_until_the_ack_with_its_cseq(env: Env) -> None:
    out = _relay_reinvite_from_a(env, 2)
    # The callee's 2xx was ACKed at once (its offer was in our re-INVITE) ...
    acks = env.acks()
    assert len(acks) == 2 and f"CSeq: {out.cseq.seq} ACK".encode() in acks[-1].data
    (first,) = env.responses("2 INVITE")
    assert first.how == "respond" and first.dest == "key-a2"
    assert b"o=x 1 1" in first.data  # the callee's answer, passed on
    env.stack.loop.advance(1.6)
    again = env.responses("2 INVITE")[1:]
    assert len(again) == 2 and all(s.data == first.data and s.dest == A_SRC for s in again)
    # The initial INVITE's ACK again (a retransmission) does not stop it ...
    env.calls.in_dialog(env.a_ack(1), A_SRC, None)
    env.stack.loop.advance(2.0)
    assert len(env.responses("2 INVITE")) == 4
    # ... its own does.
    env.calls.in_dialog(env.a_ack(2), A_SRC, None)
    env.stack.loop.advance(40.0)
    assert len(env.responses("2 INVITE")) == 4
    assert env.call.state is State.ANSWERED


def test_the_callees_2xx_again_gets_our_same_ack_and_no_second_answer(env: Env) -> None:
    out = _relay_reinvite_from_a(env, 2)
    _out, _dest, answer = env.stack.requests[-1]
    acks = env.acks()
    answer(ok(out, body=SDP))  # our ACK was lost: the callee sends its 2xx again
    acks_now = env.acks()
    assert len(acks_now) == len(acks) + 1 and acks_now[-1].data == acks[-1].data
    assert len(env.responses("2 INVITE")) == 1  # the caller was answered once


def test_no_ack_to_a_relayed_reinvite_ends_the_call(env: Env) -> None:
    _relay_reinvite_from_a(env, 2)
    env.stack.loop.advance(32.1)
    assert env.call.state is State.ENDED
    assert env.call.cause == "no ACK from the caller"
    assert len(env.stack.sent_requests("BYE")) == 2


def test_a_relayed_reinvite_without_sdp_waits_for_the_callers_answer(env: Env) -> None:
    """The callee's offer comes in its 2xx: the caller's answer in its ACK goes into
    our ACK to the callee; meanwhile our 2xx is resent, and the callee's 2xx again
    gets no ACK yet (we have no answer for it)."""
    out = _relay_reinvite_from_a(env, 2, body=b"")
    acks = env.acks()
    assert len(acks) == 1  # only the initial INVITE's
    env.stack.loop.advance(0.6)
    assert len(env.responses("2 INVITE")) == 2
    _out, _dest, answer = env.stack.requests[-1]
    answer(ok(out, body=SDP))
    assert len(env.acks()) == 1
    # A new offer from the caller before its answer: 500 with Retry-After (§14.2).
    env.calls.in_dialog(env.a_invite(3), A_SRC, "key-a3")
    (refused,) = env.responses("3 INVITE", 500)
    assert b"\r\nRetry-After: " in refused.data
    answer_ack = env.a_ack(2)
    answer_ack.body = SDP.replace(b"o=x 1 1", b"o=x 1 2")
    answer_ack.headers.add("Content-Type", "application/sdp")
    env.calls.in_dialog(answer_ack, A_SRC, None)
    acks = env.acks()
    assert len(acks) == 2 and b"o=x 1 2" in acks[-1].data
    assert f"CSeq: {out.cseq.seq} ACK".encode() in acks[-1].data
    env.stack.loop.advance(40.0)
    assert len(env.responses("2 INVITE")) == 2 and env.call.state is State.ANSWERED


def _relay_request_from_b(env: Env, method: str, cseq: int) -> None:
    """The callee's request (with SDP), passed to the caller, who answers it."""
    env.calls.in_dialog(env.a_ack(1), A_SRC, None)
    env.calls.in_dialog(env.in_dialog("b", method, cseq, SDP), B_SRC, f"key-b{cseq}")
    out, dest, answer = env.stack.requests[-1]
    assert out.method == method and dest == A_SRC
    answer(ok(out, body=SDP))


def test_the_callees_reinvite_gets_its_2xx_resent_and_its_ack_matched(env: Env) -> None:
    _relay_request_from_b(env, "INVITE", 1)
    (first,) = env.responses("1 INVITE")[1:]  # after the caller's own 200
    assert first.dest == "key-b1"
    env.stack.loop.advance(0.6)
    again = env.responses("1 INVITE")[2:]
    assert len(again) == 1 and again[0].dest == B_SRC and again[0].data == first.data
    # The caller's ACK with CSeq 1 is not the callee's.
    env.calls.in_dialog(env.a_ack(1), A_SRC, None)
    env.stack.loop.advance(1.0)
    assert len(env.responses("1 INVITE")) == 4
    env.calls.in_dialog(env.in_dialog("b", "ACK", 1), B_SRC, None)
    env.stack.loop.advance(40.0)
    assert len(env.responses("1 INVITE")) == 4 and env.call.state is State.ANSWERED


def test_no_ack_from_the_callee_ends_the_call(env: Env) -> None:
    _relay_request_from_b(env, "INVITE", 1)
    env.stack.loop.advance(32.1)
    assert env.call.state is State.ENDED and env.call.cause == "no ACK from the callee"
    assert len(env.stack.sent_requests("BYE")) == 2


def test_a_non_invite_is_answered_once(env: Env) -> None:
    """A relayed UPDATE's 200 is left to its (non-INVITE) transaction."""
    _relay_request_from_b(env, "UPDATE", 2)
    env.stack.loop.advance(5.0)
    assert [s.how for s in env.responses("2 UPDATE")] == ["respond"]
