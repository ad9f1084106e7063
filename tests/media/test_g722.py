"""G.722 (64 kbit/s) against libspandsp, an independent fixed-point implementation,
loaded with ctypes: codewords byte for byte, decoded samples exactly.

libspandsp2 is installed by build.sh (APT_TEST_PKGS), so a missing library is a
failure, not a skip.  One known difference, checked precisely: libspandsp 0.0.6
casts the receive QMF output to 16 bits where G.722 limits it, so where the
synthesis overflows (full-scale input only) its sample wraps to the other sign while
ours saturates; everywhere else the samples must be equal.
"""

from __future__ import annotations

import ctypes
import math
import random
import time
from array import array
from collections.abc import Iterator
from typing import Any

import pytest

from pbx_core.media.codecs import g722

LIBSPANDSP = "/usr/lib/x86_64-linux-gnu/libspandsp.so.2"
RATE = 16000
FRAME = 320  # 20 ms at 16 kHz


class Spandsp:
    """The few libspandsp G.722 calls the tests need (spandsp/g722.h)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        for name in ("g722_encode_init", "g722_decode_init"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        for name in ("g722_encode", "g722_decode"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        for name in ("g722_encode_free", "g722_decode_free"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p]

    def encode(self, frames: list[bytes]) -> list[bytes]:
        """One encoder state across all frames (rate 64000, options 0: 16 kHz)."""
        state = self.lib.g722_encode_init(None, 64000, 0)
        assert state, "g722_encode_init failed"
        try:
            out = []
            for pcm in frames:
                buf = ctypes.create_string_buffer(len(pcm) // 4)
                n = self.lib.g722_encode(state, buf, pcm, len(pcm) // 2)
                out.append(buf.raw[:n])
            return out
        finally:
            self.lib.g722_encode_free(state)

    def decode(self, payloads: list[bytes]) -> list[bytes]:
        state = self.lib.g722_decode_init(None, 64000, 0)
        assert state, "g722_decode_init failed"
        try:
            out = []
            for data in payloads:
                buf = ctypes.create_string_buffer(4 * len(data))
                n = self.lib.g722_decode(state, buf, data, len(data))
                out.append(buf.raw[: 2 * n])
            return out
        finally:
            self.lib.g722_decode_free(state)


@pytest.fixture(scope="module")
def spandsp() -> Spandsp:
    try:
        return Spandsp(ctypes.CDLL(LIBSPANDSP))
    except (OSError, AttributeError) as exc:
        pytest.fail(
            f"cannot load the G.722 reference {LIBSPANDSP} ({exc}): install libspandsp2 "
            "(./build.sh does, from APT_TEST_PKGS)"
        )


def _pcm(samples: Iterator[float] | list[int]) -> bytes:
    return array("h", (max(-32768, min(32767, round(s))) for s in samples)).tobytes()


def _sine(freq: float, level_db: float, seconds: float = 0.25) -> bytes:
    amp = 32767 * 10 ** (level_db / 20)
    return _pcm(amp * math.sin(2 * math.pi * freq * i / RATE) for i in range(int(RATE * seconds)))


def _square(freq: float, seconds: float = 0.25) -> bytes:
    half = RATE / freq / 2
    return _pcm([32767 if int(i / half) % 2 else -32768 for i in range(int(RATE * seconds))])


def _noise(seed: int, peak: int, seconds: float = 0.25) -> bytes:
    rng = random.Random(seed)
    return _pcm([rng.randint(-peak - 1, peak) for _ in range(int(RATE * seconds))])


def _chirp(f0: float, f1: float, level_db: float, seconds: float = 0.5) -> bytes:
    amp = 32767 * 10 ** (level_db / 20)
    n = int(RATE * seconds)
    k = (f1 - f0) / seconds
    return _pcm(
        amp * math.sin(2 * math.pi * (f0 * t + k * t * t / 2)) for t in (i / RATE for i in range(n))
    )


VECTORS: dict[str, bytes] = {
    "silence": bytes(2 * RATE // 4),
    "sine-300Hz--6dB": _sine(300, -6),
    "sine-1kHz--20dB": _sine(1000, -20),
    "sine-3.4kHz--3dB": _sine(3400, -3),
    "sine-5kHz--12dB": _sine(5000, -12),
    "sine-7kHz--1dB": _sine(7000, -1),
    "sine-1kHz-full-scale": _sine(1000, 0),
    "sine-200Hz--50dB": _sine(200, -50),
    "square-500Hz-full-scale": _square(500),
    "square-4kHz-full-scale": _square(4000),
    "noise-full-scale": _noise(722, 32767),
    "noise--20dB": _noise(64, 3277),
    "chirp-50Hz-7.9kHz--6dB": _chirp(50, 7900, -6),
    "chirp-7.9kHz-50Hz-full-scale": _chirp(7900, 50, 0),
}


def _frames(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _ours_encode(frames: list[bytes]) -> list[bytes]:
    enc = g722.Encoder()
    return [enc.encode(f) for f in frames]


def _ours_decode(payloads: list[bytes]) -> list[bytes]:
    dec = g722.Decoder()
    return [dec.decode(p) for p in payloads]


def _unsaturated(codewords: bytes) -> list[int]:
    """Our decoder's receive-QMF outputs before G.722's limiter, read from its delay
    lines one codeword at a time (the tests' window into where 16 bits overflow)."""
    dec = g722.Decoder()
    taps = (3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11)  # G.722 Table 11
    values = []
    for code in codewords:
        dec.decode(bytes([code]))
        values.append(sum(d * t for d, t in zip(dec._diff, taps[::-1], strict=True)) >> 11)
        values.append(sum(x * t for x, t in zip(dec._sum, taps, strict=True)) >> 11)
    return values


def _assert_same_samples(codewords: bytes, ours: bytes, theirs: bytes) -> int:
    """Equal where the synthesis fits 16 bits; where it overflows, ours is saturated
    and libspandsp's is the same value wrapped to 16 bits (its cast).  Returns the
    number of overflowing samples."""
    a = array("h", ours)
    b = array("h", theirs)
    assert len(a) == len(b) == 4 * len(codewords) // 2
    overflows = 0
    for i, (x, y, u) in enumerate(zip(a, b, _unsaturated(codewords), strict=True)):
        if -32768 <= u <= 32767:
            assert x == y == u, f"sample {i}: ours {x}, libspandsp {y}"
        else:
            overflows += 1
            assert x == (32767 if u > 0 else -32768), f"sample {i}: ours {x}, not saturated"
            assert (y - u) % 65536 == 0, f"sample {i}: libspandsp {y} is not {u} wrapped"
    return overflows


# Vectors whose decoded output may exceed 16 bits (the QMF overshoots near full scale).
MAY_OVERFLOW = {n for n in VECTORS if "full-scale" in n or n.endswith("-1dB")}


@pytest.mark.parametrize("name", VECTORS)
def test_bit_exact_with_libspandsp(spandsp: Spandsp, name: str) -> None:
    pcm = VECTORS[name]
    frames = _frames(pcm, 2 * FRAME)
    ours = _ours_encode(frames)
    theirs = spandsp.encode(frames)
    assert [len(f) for f in ours] == [len(f) // 4 for f in frames]
    assert b"".join(ours) == b"".join(theirs)

    codewords = b"".join(theirs)
    decoded = b"".join(_ours_decode(_frames(codewords, FRAME // 2)))
    reference = b"".join(spandsp.decode(_frames(codewords, FRAME // 2)))
    overflows = _assert_same_samples(codewords, decoded, reference)
    if name not in MAY_OVERFLOW:
        assert overflows == 0
        assert decoded == reference


def test_decoding_arbitrary_codewords(spandsp: Spandsp) -> None:
    """Every byte is a codeword; random streams reach codes an encoder rarely emits
    (and the limiters), and a run of each code drives the scale factors to their
    bounds."""
    rng = random.Random(9)
    stream = bytes(rng.randrange(256) for _ in range(4000))
    stream += b"".join(bytes([c]) * 40 for c in range(256))
    payloads = _frames(stream, 160)
    ours = b"".join(_ours_decode(payloads))
    assert _assert_same_samples(stream, ours, b"".join(spandsp.decode(payloads))) > 0
    assert set(stream) == set(range(256))


def test_state_carries_across_frames(spandsp: Spandsp) -> None:
    """A stream cut at odd places (any multiple of two samples) encodes and decodes
    exactly as in one piece, and as libspandsp with its own state carried over."""
    pcm = VECTORS["chirp-50Hz-7.9kHz--6dB"] + VECTORS["noise--20dB"]
    rng = random.Random(3)
    cuts: list[bytes] = []
    pos = 0
    while pos < len(pcm):
        size = 4 * rng.randint(0, 90)
        cuts.append(pcm[pos : pos + size])
        pos += size
    whole = g722.encode(pcm)
    ours = _ours_encode(cuts)
    assert b"".join(ours) == whole == b"".join(spandsp.encode(cuts))

    pieces = [whole[i : i + n] for i, n in _random_spans(len(whole), rng)]
    decoded = _ours_decode(pieces)
    assert b"".join(decoded) == g722.decode(whole) == b"".join(spandsp.decode(pieces))
    # a fresh decoder per frame is not the same thing: the state matters
    restarted = b"".join(g722.decode(p) for p in _frames(whole, FRAME // 2))
    assert restarted != b"".join(decoded)


def _random_spans(total: int, rng: random.Random) -> Iterator[tuple[int, int]]:
    pos = 0
    while pos < total:
        n = rng.randint(0, 200)
        yield pos, n
        pos += n


def test_round_trip_quality() -> None:
    """Independent of any reference: two tones, one per band, come back delayed by
    the QMF pair (22 samples) with a signal-to-noise ratio fit for speech."""
    src = array("h", _sine(1000, -20, seconds=0.5))
    src = array("h", (a + b for a, b in zip(src, array("h", _sine(5100, -20, 0.5)), strict=True)))
    out = array("h", g722.decode(g722.encode(src.tobytes())))
    delay = 22
    pairs = list(zip(src[1000:-delay], out[1000 + delay :], strict=True))
    signal = sum(s * s for s, _ in pairs)
    noise = sum((s - o) ** 2 for s, o in pairs)
    assert 10 * math.log10(signal / noise) > 20


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="multiple of 4 bytes"):
        g722.Encoder().encode(bytes(6))
    assert g722.encode(b"") == b""
    assert g722.decode(b"") == b""


def test_speed_per_frame(record_property: Any) -> None:
    """Encode + decode of one 20 ms frame, reported (pure Python: about a
    millisecond or more per direction; G.722<->G.722 relaying needs none)."""
    pcm = VECTORS["noise--20dB"][: 2 * FRAME * 10]
    frames = _frames(pcm, 2 * FRAME)
    enc = g722.Encoder()
    dec = g722.Decoder()
    start = time.perf_counter()
    for f in frames:
        dec.decode(enc.encode(f))
    per_frame_us = (time.perf_counter() - start) / len(frames) * 1e6
    record_property("g722_encode_decode_us_per_20ms_frame", round(per_frame_us))
    assert per_frame_us < 20_000  # even a loaded CI core must keep up with real time
