"""Symmetric RTP latching (media/leg.py), as Asterisk's strictrtp and rtpengine's
strict-source learn a phone's address: once per offer/answer, at once from the
expected address, after two packets in sequence from any other; never again until
the next offer/answer, so a stranger cannot take a stream over. Real UDP sockets on
loopback, plus a property test of the learning rule alone."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media import rtcp
from pbx_core.media.engine import MediaEngine
from pbx_core.media.latch import PROBATION, Learner, private
from pbx_core.media.leg import MediaLeg
from tests.fuzzing import fuzz_settings
from tests.media.phones import Phone, port_of, sdp, until


class Rig:
    def __init__(self, loop: asyncio.AbstractEventLoop, base: int) -> None:
        self.engine = MediaEngine(loop, "127.0.0.1", base, base + 99)
        self.a = Phone(loop)
        self.b = Phone(loop)
        self.call, self.offer = self.engine.anchor(sdp(self.a.port))
        self.answer = self.call.answer(sdp(self.b.port, "0 101"))
        self.pa = port_of(self.answer)
        self.pb = port_of(self.offer)
        self.extra: list[Phone] = []

    def phone(self) -> Phone:
        p = Phone(self.engine.loop)
        self.extra.append(p)
        return p

    def close(self) -> None:
        for p in (self.a, self.b, *self.extra):
            p.close()
        self.engine.close()


def run(body: Any, base: int) -> None:
    async def main() -> None:
        rig = Rig(asyncio.get_running_loop(), base)
        try:
            await body(rig)
        finally:
            rig.close()

    asyncio.run(main())


def payloads(phone: Phone) -> list[int]:
    return [p.payload[0] for p, _ in phone.received]


def test_the_expected_address_latches_at_once() -> None:
    async def body(rig: Rig) -> None:
        rig.a.send(rig.pa, b"\x01" * 160)
        assert await until(lambda: rig.call.caller.latched)
        assert rig.call.caller.remote == ("127.0.0.1", rig.a.port)
        assert await until(lambda: payloads(rig.b) == [1])  # relayed, none lost

    run(body, 33000)


def test_another_source_needs_two_packets_in_sequence() -> None:
    async def body(rig: Rig) -> None:
        nat = rig.phone()  # A's packets come from another port than its SDP's
        nat.send(rig.pa, b"\x01" * 160, seq=10)
        nat.send(rig.pa, b"\x02" * 160, seq=12)  # not the next: starts over
        await asyncio.sleep(0.1)
        assert not rig.call.caller.latched and rig.b.received == []
        assert rig.call.caller.stray == 2
        nat.send(rig.pa, b"\x03" * 160, seq=13)
        assert await until(lambda: rig.call.caller.latched)
        assert rig.call.caller.remote == ("127.0.0.1", nat.port)
        assert rig.call.caller.rtcp_remote == ("127.0.0.1", nat.port + 1)
        assert await until(lambda: payloads(rig.b) == [3])
        rig.b.send(rig.pb, b"\x09" * 160)
        assert await until(lambda: payloads(nat) == [9])
        assert rig.a.received == []  # the SDP address is not used any more

    run(body, 33100)


def test_a_payload_type_not_negotiated_does_not_latch() -> None:
    async def body(rig: Rig) -> None:
        # The callee answered 0 and 101 only: PT 8 from its port proves nothing.
        rig.b.send(rig.pb, b"\x01" * 160, pt=8)
        rig.b.send(rig.pb, b"\x02" * 160, pt=8)
        await asyncio.sleep(0.1)
        assert not rig.call.callee.latched
        rig.b.send(rig.pb, b"\x03" * 160, pt=0)
        assert await until(lambda: rig.call.callee.latched)

    run(body, 33200)


def test_a_stranger_cannot_take_over_a_latched_stream() -> None:
    """The old rule moved to any address that sent a new SSRC: a hijack."""

    async def body(rig: Rig) -> None:
        rig.a.send(rig.pa, b"\x01" * 160)
        assert await until(lambda: rig.call.caller.latched)
        stranger = rig.phone()
        for i in range(20):  # a long, perfectly sequenced stream with its own SSRC
            stranger.send(rig.pa, b"\x66" * 160, seq=500 + i, ssrc=0xBAD)
        await asyncio.sleep(0.3)  # also longer than any silence rule
        rig.a.send(rig.pa, b"\x02" * 160)
        rig.b.send(rig.pb, b"\x07" * 160)
        assert await until(lambda: payloads(rig.a) == [7])
        assert stranger.received == []
        assert await until(lambda: payloads(rig.b) == [1, 2])
        assert rig.call.caller.remote == ("127.0.0.1", rig.a.port)
        assert rig.call.caller.stray == 20

    run(body, 33300)


def test_a_new_offer_answer_opens_learning_again() -> None:
    async def body(rig: Rig) -> None:
        rig.a.send(rig.pa, b"\x01" * 160)
        assert await until(lambda: rig.call.caller.latched)
        # A moves (a re-INVITE with a new port): its new socket is expected.
        moved = rig.phone()
        rig.call.reoffer("caller", sdp(moved.port))
        assert not rig.call.caller.latched
        moved.send(rig.pa, b"\x02" * 160)
        assert await until(lambda: rig.call.caller.remote == ("127.0.0.1", moved.port))
        # A refresh with the same SDP: the latched source's next packet closes the
        # window again before a stranger can use it.
        rig.call.reoffer("caller", sdp(moved.port))
        moved.send(rig.pa, b"\x03" * 160)
        assert await until(lambda: rig.call.caller.latched)
        stranger = rig.phone()
        stranger.send(rig.pa, b"\x66" * 160, seq=1, ssrc=7)
        stranger.send(rig.pa, b"\x66" * 160, seq=2, ssrc=7)
        await asyncio.sleep(0.1)
        assert rig.call.caller.remote == ("127.0.0.1", moved.port)

    run(body, 33400)


def test_a_natted_phone_is_sent_to_its_public_address_before_latching() -> None:
    async def body(rig: Rig) -> None:
        engine = rig.engine
        b = rig.phone()
        call, _offer = engine.anchor(sdp(rig.a.port))
        call.callee.nat_peer = "127.0.0.1"  # its SIP came from there
        # Its SDP names a private address we cannot reach (the phone's own LAN).
        call.answer(sdp(b.port, "0 101", address="10.99.99.99"))
        assert call.callee.remote == ("127.0.0.1", b.port)
        rig.a.send(port_of(call.answer(sdp(b.port, "0 101", address="10.99.99.99"))), b"\x05" * 160)
        assert await until(lambda: payloads(b) == [5])  # before B sent anything
        # A public SDP address is believed as it is.
        c = rig.phone()
        call2, _ = engine.anchor(sdp(rig.a.port))
        call2.callee.nat_peer = "127.0.0.1"
        call2.answer(sdp(c.port, "0 101", address="198.51.100.7"))
        assert call2.callee.remote == ("198.51.100.7", c.port)
        call.close()
        call2.close()

    run(body, 33500)


def test_rtcp_is_learned_once_per_offer_answer() -> None:
    async def body(rig: Rig) -> None:
        rig.a.send(rig.pa, b"\x01" * 160)
        assert await until(lambda: rig.call.caller.latched)
        leg = rig.call.caller
        report = rtcp.build_compound([rtcp.ReceiverReport(rig.a.ssrc, ())])
        first = rig.phone()
        first.sock.sendto(report, ("127.0.0.1", rig.pa + 1))
        assert await until(lambda: leg.rtcp_remote == ("127.0.0.1", first.port))
        before = leg.stray
        other = rig.phone()
        other.sock.sendto(report, ("127.0.0.1", rig.pa + 1))
        assert await until(lambda: leg.stray == before + 1)
        assert leg.rtcp_remote == ("127.0.0.1", first.port)

    run(body, 33600)


# ------------------------------------------------------------ the rule alone

PHONE = ("198.51.100.7", 4000)  # the expected address (SDP / NAT peer)

_packet = st.tuples(
    st.sampled_from([PHONE, ("203.0.113.9", 5000), ("203.0.113.9", 5002), ("192.0.2.1", 7)]),
    st.sampled_from([1, 2, 0xBAD]),  # SSRC
    st.integers(0, 6),  # sequence number
    st.sampled_from([0, 8, 101]),  # payload type (8 not negotiated)
)


def fake_leg() -> Any:
    """The state MediaLeg._latch works on, without sockets."""
    return SimpleNamespace(
        _learner=Learner(),
        _pts={0: "PCMU"},
        te_pt=101,
        remote=PHONE,
        latched=False,
        _latched_ssrc=-1,
        _rtcp_learning=True,
        rtcp_remote=(PHONE[0], PHONE[1] + 1),
        side="caller",
        port=10000,
    )


@pytest.mark.fuzz
@fuzz_settings(400)
@given(packets=st.lists(_packet, max_size=40), reopen_at=st.integers(0, 40))
def test_learning_rule_properties(
    packets: list[tuple[tuple[str, int], int, int, int]], reopen_at: int
) -> None:
    """For any packet sequence: at most one latch per offer/answer; the expected
    address latches on its first negotiated packet; any other source only after
    PROBATION negotiated packets in sequence with one SSRC (packets of other payload
    types are ignored: they neither count nor break a run); once latched, nothing
    moves the stream until a new offer/answer reopens learning."""
    leg = fake_leg()
    latched_at: tuple[str, int] | None = None
    history: list[tuple[tuple[str, int], int, int, int]] = []
    for i, (addr, ssrc, seq, pt) in enumerate(packets):
        if i == reopen_at:  # a new offer/answer: expected is where we send now
            leg.latched = False
            leg._learner.reopen()
            latched_at, history = None, []
        expected = leg.remote
        fast = leg.latched and addr == leg.remote
        accepted = fast or MediaLeg._latch(leg, addr, ssrc, seq, pt)
        if pt in (0, 101):
            history.append((addr, ssrc, seq, pt))
        if latched_at is not None:
            assert leg.remote == latched_at  # never moves again
            assert accepted == (addr == latched_at)
            continue
        if accepted:
            latched_at = leg.remote
            assert leg.latched and not leg._learner.open
            assert pt in (0, 101) and leg.remote == addr
            if addr != expected:
                run_ = history[-PROBATION:]
                assert len(run_) == PROBATION
                assert all(a == addr and s == ssrc for a, s, _, _ in run_)
                assert all((x[2] + 1) & 0xFFFF == y[2] for x, y in itertools.pairwise(run_))
        else:
            assert not (addr == expected and pt in (0, 101))  # the expected one latches
            assert leg.remote == expected


@pytest.mark.fuzz
@fuzz_settings(300)
@given(seqs=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=10))
def test_a_run_wraps_around_the_sequence_number(seqs: list[int]) -> None:
    learner = Learner()
    start = seqs[0]
    got = [learner.learn(("192.0.2.1", 9), 5, (start + k) & 0xFFFF, False) for k in range(3)]
    assert got == [False, True, False]  # latched on the second; closed after


def test_private_addresses() -> None:
    for host in ("10.1.1.1", "172.16.0.1", "192.168.5.5", "100.64.1.1", "127.0.0.1", "fd00::1"):
        assert private(host), host
    for host in ("203.0.113.1", "8.8.8.8", "2001:4860::1", "pbx.example.com", "0.0.0.0"):
        assert not private(host), host
