"""MixBridge under random join/leave/mute/deafen/whisper/talk sequences, against a
model: after every step each member is sent exactly one frame per tick holding the
sum of what it should hear (the loudest ``max_speakers`` public talkers but itself,
plus whispers aimed at it; silence when deaf), non-members are sent nothing, and
the bridge's bookkeeping (size bound, leg modes, tick scheduled only while it has
members) holds.  Each talker sends a constant level of its own, so the sum a member
hears says exactly who it hears."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media.bridge import FRAME, FRAME_BYTES, MAX_DELAY, MAX_PACKET, Member, MixBridge
from pbx_core.media.codecs import g711
from pbx_core.media.engine import MediaEngine
from pbx_core.media.errors import MediaError
from pbx_core.media.jitter import MAX_FRAMES
from pbx_core.media.leg import MediaLeg
from tests.fuzzing import fuzz_settings
from tests.media.phones import sdp

N = 6
LEVEL = 700  # talker i sends LEVEL * (i + 1)

op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, N - 1), st.booleans(), st.booleans()),
    st.tuples(st.just("remove"), st.integers(0, N - 1)),
    st.tuples(st.just("mute"), st.integers(0, N - 1), st.booleans()),
    st.tuples(st.just("deafen"), st.integers(0, N - 1), st.booleans()),
    st.tuples(
        st.just("whisper"),
        st.integers(0, N - 1),
        st.frozensets(st.integers(0, N - 1), min_size=1, max_size=3) | st.none(),
    ),
    st.tuples(st.just("talk"), st.integers(0, N - 1), st.booleans()),
)


class Model:
    def __init__(self, max_members: int, max_speakers: int) -> None:
        self.max_members = max_members
        self.max_speakers = max_speakers
        self.members: dict[int, dict[str, object]] = {}
        self.talking: set[int] = set()

    def expected(self, m: int) -> int:
        opts = self.members[m]
        if opts["deaf"]:
            return 0
        audible = [
            i
            for i in self.talking
            if i in self.members
            and not self.members[i]["muted"]
            and self.members[i]["heard_by"] is None
        ]
        audible = sorted(audible, reverse=True)[: self.max_speakers]  # loudest first
        total = sum(LEVEL * (i + 1) for i in audible if i != m)
        for i in self.talking:
            o = self.members.get(i)
            if o is None or o["muted"] or o["heard_by"] is None or i == m:
                continue
            if m in o["heard_by"]:  # type: ignore[operator]
                total += LEVEL * (i + 1)
        return total


@contextmanager
def rig() -> Iterator[tuple[MediaEngine, list[MediaLeg]]]:
    loop = asyncio.new_event_loop()
    engine = MediaEngine(loop, "127.0.0.1", 35300, 35399)
    legs = [engine.endpoint(sdp(9 + 2 * i, "0" if i % 2 else "8"))[0] for i in range(N)]
    try:
        yield engine, legs
    finally:
        engine.close()
        loop.close()


def decode(leg: MediaLeg, payload: bytes) -> list[int]:
    pcm = g711.ulaw_decode(payload) if leg.codec == "PCMU" else g711.alaw_decode(payload)
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


@pytest.mark.fuzz
@fuzz_settings(60)
@given(
    start=st.lists(st.integers(0, N - 1), min_size=2, max_size=N, unique=True),
    talkers=st.frozensets(st.integers(0, N - 1)),
    ops=st.lists(op, min_size=3, max_size=30),
    max_members=st.integers(2, N),
    max_speakers=st.integers(1, N),
)
def test_random_membership_keeps_invariants(
    start: list[int],
    talkers: frozenset[int],
    ops: list[tuple[object, ...]],
    max_members: int,
    max_speakers: int,
) -> None:
    sent: list[tuple[MediaLeg, bytes]] = []
    frames: dict[MediaLeg, bytes] = {}

    def fake_send(leg: MediaLeg, payload: bytes, samples: int, now: float) -> None:
        assert samples == FRAME
        sent.append((leg, payload))

    def fake_pull(member: Member) -> bytes | None:
        return frames.get(member.leg)

    with (
        rig() as (engine, legs),
        patch.object(MediaLeg, "_send_frame", fake_send),
        patch.object(Member, "pull", fake_pull),
    ):
        bridge = MixBridge(engine, max_members=max_members, max_speakers=max_speakers)
        model = Model(max_members, max_speakers)
        index = {leg: i for i, leg in enumerate(legs)}
        first = [("talk", i, True) for i in talkers] + [("add", i, False, False) for i in start]
        for o in first + ops:
            kind, i = o[0], o[1]
            assert isinstance(i, int)
            leg = legs[i]
            if kind == "add":
                muted, deaf = bool(o[2]), bool(o[3])
                if i in model.members or len(model.members) >= max_members:
                    with pytest.raises(MediaError):
                        bridge.add(leg, muted=muted, deaf=deaf)
                else:
                    bridge.add(leg, muted=muted, deaf=deaf)
                    model.members[i] = {"muted": muted, "deaf": deaf, "heard_by": None}
            elif kind == "remove":
                bridge.remove(leg)
                model.members.pop(i, None)
                for opts in model.members.values():
                    if opts["heard_by"] is not None:
                        opts["heard_by"] = opts["heard_by"] - {i}  # type: ignore[operator]
            elif kind in ("mute", "deafen"):
                if i not in model.members:
                    with pytest.raises(MediaError):
                        getattr(bridge, kind)(leg, bool(o[2]))
                else:
                    getattr(bridge, kind)(leg, bool(o[2]))
                    model.members[i]["muted" if kind == "mute" else "deaf"] = bool(o[2])
            elif kind == "whisper":
                # Aimed at members (a non-member target is refused: test_bridge.py).
                targets = o[2] & model.members.keys() if o[2] is not None else None  # type: ignore[operator]
                to = None if targets is None else [legs[t] for t in targets]
                if i not in model.members:
                    with pytest.raises(MediaError):
                        bridge.whisper(leg, to)
                else:
                    bridge.whisper(leg, to)
                    model.members[i]["heard_by"] = targets
            elif kind == "talk":
                if o[2]:
                    model.talking.add(i)
                    frames[leg] = struct.pack(f"<{FRAME}h", *[LEVEL * (i + 1)] * FRAME)
                else:
                    model.talking.discard(i)
                    frames.pop(leg, None)
            # Bookkeeping.
            assert len(bridge) == len(model.members) <= max_members
            assert {index[x] for x in bridge.legs} == set(model.members)
            assert bridge.ticking == bool(model.members)
            for j, x in enumerate(legs):
                assert (x.mode == "mix") == (j in model.members)
                assert (x._mix is not None) == (j in model.members)
            # One tick: what each leg is sent.
            sent.clear()
            bridge.mix_once(engine.loop.time())
            got = {index[x]: decode(x, p) for x, p in sent}
            assert len(got) == len(sent)  # one frame per member
            assert set(got) == set(model.members)
            for j, pcm in got.items():
                want = model.expected(j)
                assert len(pcm) == FRAME_BYTES // 2
                assert all(abs(s - want) <= max(40, want // 14) for s in pcm), (j, want, pcm[:4])
        bridge.close()
        assert not bridge.ticking and len(bridge) == 0
        assert all(x.mode == "silent" and x._mix is None for x in legs)


class _Leg:
    pass


packet = st.tuples(
    st.integers(0, 0xFFFFFFFF) | st.integers(-2000, 40000),  # absolute, or a step
    st.integers(0, 2000),  # payload length
    st.sampled_from(["PCMU", "PCMA"]),
    st.booleans(),  # loud
)


@pytest.mark.fuzz
@fuzz_settings(100)
@given(events=st.lists(st.none() | packet, max_size=300))
def test_member_takes_hostile_streams_within_bounds(
    events: list[tuple[int, int, str, bool] | None],
) -> None:
    """Any sequence of timestamps (jumps, wraps, reordering, duplicates) and sizes
    into a member, interleaved with ticks: every tick gives None or one 20 ms frame,
    and what the member holds stays bounded."""
    m = Member(None, _Leg(), False, False)  # type: ignore[arg-type]
    ts = 0
    for ev in events:
        if ev is None:
            out = m.pull()
            assert out is None or len(out) == FRAME_BYTES
            assert m.jitter.span() <= MAX_DELAY + MAX_PACKET
            assert len(m.pcm) <= 2 * MAX_DELAY + 2 * MAX_PACKET
            continue
        t, n, codec, loud = ev
        ts = t if t > 40000 or t < 0 else (ts + t) & 0xFFFFFFFF
        ts &= 0xFFFFFFFF
        m.put(ts, (b"\x10" if loud else b"\xff") * n, codec)
        assert len(m.jitter) <= MAX_FRAMES
    if any(ev is not None and (ev[1] == 0 or ev[1] > MAX_PACKET) for ev in events):
        assert m.dropped > 0
