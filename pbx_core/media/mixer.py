"""N-party audio mixing, sans-IO: each party hears the sum of the others (sum minus
self) saturated to 16 bits, for conference and paging.

Frames are 16-bit little-endian PCM of equal length; a party with nothing to say
this tick passes None (silence, and it costs nothing).
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Hashable, Mapping
from typing import TypeVar

__all__ = ["mix", "mix_minus", "pack", "samples", "saturate", "sum_frames"]

K = TypeVar("K", bound=Hashable)

_LITTLE = sys.byteorder == "little"


def samples(pcm: bytes) -> array[int]:
    """16-bit LE PCM as an array of samples."""
    a = array("h", pcm)
    if not _LITTLE:
        a.byteswap()
    return a


def pack(values: list[int] | array[int]) -> bytes:
    """Samples (already within 16 bits) as 16-bit LE PCM."""
    a = values if isinstance(values, array) else array("h", values)
    if not _LITTLE:
        a = array("h", a)
        a.byteswap()
    return a.tobytes()


def sum_frames(frames: list[array[int]]) -> list[int]:
    """The sample-by-sample sum of equal-length frames (not saturated)."""
    if len(frames) == 1:
        return list(frames[0])
    if len(frames) == 2:
        return list(map(operator.add, frames[0], frames[1]))
    return list(map(sum, zip(*frames, strict=True)))


_samples = samples
_pack = pack


def saturate(values: list[int]) -> list[int]:
    """Clamp to -32768..32767 (only walks the list again when something overflowed)."""
    if values and (max(values) > 32767 or min(values) < -32768):
        return [32767 if v > 32767 else -32768 if v < -32768 else v for v in values]
    return values


def mix(frames: list[bytes]) -> bytes:
    """The saturated sum of frames of equal length."""
    if not frames:
        return b""
    if len(frames) == 1:
        return frames[0]
    arrays = [_samples(f) for f in frames]
    _check_lengths(arrays)
    return _pack(saturate(list(map(sum, zip(*arrays, strict=True)))))


def _check_lengths(arrays: list[array[int]]) -> None:
    if len({len(a) for a in arrays}) > 1:
        raise ValueError("mixer frames must all have the same length")


def mix_minus(frames: Mapping[K, bytes | None], frame_bytes: int) -> dict[K, bytes]:
    """What each party hears: the sum of every other party's frame, saturated.

    ``frames`` maps every party to its frame this tick (None: silent).  Parties that
    are silent hear the full mix; each speaker hears the mix without itself, so
    nobody hears their own echo."""
    speaking = {k: _samples(f) for k, f in frames.items() if f is not None}
    silence = bytes(frame_bytes)
    if not speaking:
        return dict.fromkeys(frames, silence)
    arrays = list(speaking.values())
    _check_lengths(arrays)
    if len(arrays[0]) * 2 != frame_bytes:
        raise ValueError("mixer frames must be frame_bytes long")
    total = list(map(sum, zip(*arrays, strict=True))) if len(arrays) > 1 else list(arrays[0])
    everyone = _pack(saturate(total))
    out: dict[K, bytes] = {}
    for k in frames:
        own = speaking.get(k)
        if own is None:
            out[k] = everyone
        elif len(speaking) == 1:
            out[k] = silence
        else:
            out[k] = _pack(saturate(list(map(operator.sub, total, own))))
    return out
