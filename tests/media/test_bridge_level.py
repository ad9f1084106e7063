"""A level bridge's per-member gain (media/bridge.py `Member.leveled`, `ramp`): a loud
frame is capped at LEVEL_CAP, the gain comes back slowly and without a step, a
member's first frame fades in, and a frame below the cap at unity passes as it is."""

from __future__ import annotations

import itertools
import math
import struct

from pbx_core.media.bridge import ATTACK, LEVEL_CAP, LEVEL_RELEASE, UNITY, Member, MixBridge, ramp
from pbx_core.media.mixer import samples


def frame(amplitude: int, hz: float = 500.0) -> bytes:
    return struct.pack(
        "<160h", *(int(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(160))
    )


def member(gain: int = UNITY) -> Member:
    m = Member.__new__(Member)
    m.gain = gain
    return m


def peak(pcm: bytes) -> int:
    return max(abs(v) for v in samples(pcm))


def test_a_loud_frame_is_capped_and_a_soft_one_passes() -> None:
    m = member()
    loud = frame(32000)
    out = m.leveled(loud)
    assert peak(out[2 * ATTACK :]) <= (LEVEL_CAP + 1) * 256 < peak(loud)  # after the attack
    assert peak(out) < peak(loud)
    assert m.gain < UNITY
    soft = frame(4000)
    fresh = member()
    assert fresh.leveled(soft) is soft  # unity, below the cap: untouched


def test_the_gain_comes_back_slowly_after_a_loud_frame() -> None:
    m = member()
    m.leveled(frame(32000))
    low = m.gain
    gains = []
    for _ in range(5):
        m.leveled(frame(4000))
        gains.append(m.gain)
    assert gains == [min(UNITY, low + LEVEL_RELEASE * (i + 1)) for i in range(5)]


def test_the_first_frame_fades_in_and_the_ramp_has_no_step() -> None:
    m = member(gain=0)  # a member that just joined
    out = samples(m.leveled(frame(8000, hz=50.0)))  # a slow wave: mostly one sign
    assert abs(out[0]) < 50 and m.gain == UNITY
    steps = [abs(b - a) for a, b in itertools.pairwise(out)]
    assert max(steps) < 600  # a ramp, not a jump (50 Hz at 8000: ~315 per sample at most)
    down = ramp(samples(frame(8000, hz=50.0)), UNITY, 0)  # a leave fades out
    assert abs(down[-1]) < 100


class _Loop:
    def time(self) -> float:
        return 0.0


class _Engine:
    loop = _Loop()


def test_a_member_leaving_mid_sentence_fades_out_for_the_others() -> None:
    bridge = MixBridge(_Engine(), level=True)  # type: ignore[arg-type]
    stay, leave = object(), object()
    for leg in (stay, leave):
        bridge._members[leg] = Member(bridge, leg, muted=False, deaf=False)  # type: ignore[arg-type]
    m = bridge._members[leave]  # type: ignore[index]
    for k in range(4):  # it was talking: buffered, playing, at unity
        m.jitter.put(160 * k, frame(8000, hz=50.0), 160)
    m.playing, m.gain = True, UNITY
    bridge._members.pop(leave)  # type: ignore[arg-type]
    bridge._fade_out(m)
    (clip,) = bridge._clips
    tail = samples(clip.pcm)
    assert abs(tail[-1]) < 100 and max(abs(v) for v in tail) > 1000  # heard, then faded
    quiet = Member(bridge, leave, muted=False, deaf=False)  # type: ignore[arg-type]
    bridge._fade_out(quiet)  # nothing buffered: nothing to fade
    assert len(bridge._clips) == 1
