"""ITU-T G.711 µ-law and A-law, table-driven (no audioop: it left Python in 3.13).

Theory of operation
-------------------
G.711 maps a 14-bit (µ-law) or 13-bit (A-law) uniform sample to an 8-bit code made of
a sign, a 3-bit segment and a 4-bit step.  Within a segment the steps are equal; each
segment doubles the step of the one below (G.711 Tables 1 and 2).  Linear samples here
are 16-bit: µ-law uses the top 14 bits, A-law the top 13, as the ITU-T G.191 software
tools do, and a negative sample takes its magnitude as the ones' complement (``~x``),
which makes the quantiser exactly symmetric (``x`` and ``~x`` differ only in the sign
bit of their code).  µ-law codes are sent bit-inverted, A-law codes with the even
bits inverted (XOR 0x55), G.711 §2 and §3.

Everything is precomputed once at import as byte tables, so the per-packet work is
done by C code in the interpreter:

* decoding: two ``bytes.translate`` calls give the low and high bytes of each
  16-bit sample, interleaved by slice assignment;
* encoding: a 65,536-entry table indexed by the sample as an unsigned 16-bit number,
  looked up by one ``operator.itemgetter`` call for a frame (twice as fast as
  ``map``, which whole clips use); the table is built segment by segment from byte
  runs, so building it costs microseconds, not a 65,536-step Python loop;
* µ-law ↔ A-law: one ``bytes.translate`` (decode then re-encode, precomputed).

Linear PCM is little-endian signed 16-bit (the WAV layout) everywhere in pbx_core.media.
"""

from __future__ import annotations

import operator
import sys
from array import array

__all__ = [
    "ALAW_TO_ULAW",
    "ULAW_TO_ALAW",
    "alaw_decode",
    "alaw_decode_sample",
    "alaw_encode",
    "alaw_encode_sample",
    "ulaw_decode",
    "ulaw_decode_sample",
    "ulaw_encode",
    "ulaw_encode_sample",
]

_LITTLE = sys.byteorder == "little"
_GETTER_MAX = 4096  # samples encoded by one itemgetter call (twice map's speed)


def _ulaw_value(code: int) -> int:
    """µ-law code -> 16-bit linear (G.711 Table 2, scaled by 4)."""
    c = ~code & 0xFF
    exponent = (c >> 4) & 7
    mantissa = c & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if c & 0x80 else magnitude


def _alaw_value(code: int) -> int:
    """A-law code -> 16-bit linear (G.711 Table 1, scaled by 8)."""
    c = code ^ 0x55
    exponent = (c >> 4) & 7
    mantissa = c & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if c & 0x80 else -magnitude


_ULAW_VALUES = [_ulaw_value(c) for c in range(256)]
_ALAW_VALUES = [_alaw_value(c) for c in range(256)]


def _ulaw_magnitude_codes() -> bytes:
    """The positive µ-law code of every 14-bit magnitude 0..8191, built from runs.

    Step 0 holds magnitude 0 alone, the other 15 steps of segment 0 are 2 wide,
    segment s >= 1 has 16 steps 2**(s+1) wide; magnitudes past the last decision
    level (8159) saturate at the top code.  Codes are sent inverted: step k -> 0xFF-k."""
    out = bytearray([0xFF])
    sizes = [2] * 15 + [2 ** (seg + 1) for seg in range(1, 8) for _ in range(16)]
    for k, size in enumerate(sizes, start=1):
        out += bytes([0xFF - k]) * size
    out += out[-1:] * (8192 - len(out))
    return bytes(out)


def _alaw_magnitude_codes() -> bytes:
    """The A-law step (segment << 4 | step, before sign and inversion) of every 12-bit
    magnitude 0..4095: segments 0 and 1 have steps 2 wide, segment s >= 2 steps 2**s."""
    out = bytearray()
    sizes = [2] * 32 + [2**seg for seg in range(2, 8) for _ in range(16)]
    for k, size in enumerate(sizes):
        out += bytes([k]) * size
    return bytes(out)


def _expand(positive: bytes, negative: bytes, scale: int) -> bytes:
    """Index by unsigned 16-bit sample: 0..32767 use ``x >> shift``, 32768..65535
    (x = -32768..-1) use ``~x >> shift``, which runs from the top magnitude down to 0."""
    table = bytearray()
    for code in positive:
        table += bytes([code]) * scale
    for code in reversed(negative):
        table += bytes([code]) * scale
    return bytes(table)


_ULAW_MAG = _ulaw_magnitude_codes()
_ALAW_MAG = _alaw_magnitude_codes()
_ULAW_ENC = _expand(_ULAW_MAG, bytes(c & 0x7F for c in _ULAW_MAG), 4)
_ALAW_ENC = _expand(
    bytes((c | 0x80) ^ 0x55 for c in _ALAW_MAG), bytes(c ^ 0x55 for c in _ALAW_MAG), 8
)


def _byte_tables(values: list[int]) -> tuple[bytes, bytes]:
    lo = bytes(v & 0xFF for v in values)
    hi = bytes((v >> 8) & 0xFF for v in values)
    return lo, hi


_ULAW_LO, _ULAW_HI = _byte_tables(_ULAW_VALUES)
_ALAW_LO, _ALAW_HI = _byte_tables(_ALAW_VALUES)

ULAW_TO_ALAW = bytes(_ALAW_ENC[v & 0xFFFF] for v in _ULAW_VALUES)
ALAW_TO_ULAW = bytes(_ULAW_ENC[v & 0xFFFF] for v in _ALAW_VALUES)


def ulaw_decode_sample(code: int) -> int:
    return _ULAW_VALUES[code]


def alaw_decode_sample(code: int) -> int:
    return _ALAW_VALUES[code]


def ulaw_encode_sample(sample: int) -> int:
    """One 16-bit signed sample (-32768..32767) -> µ-law code."""
    return _ULAW_ENC[sample & 0xFFFF]


def alaw_encode_sample(sample: int) -> int:
    return _ALAW_ENC[sample & 0xFFFF]


def _decode(data: bytes, lo: bytes, hi: bytes) -> bytes:
    out = bytearray(2 * len(data))
    first, second = (lo, hi) if _LITTLE else (hi, lo)
    out[0::2] = data.translate(first)
    out[1::2] = data.translate(second)
    return bytes(out)


def _encode(pcm: bytes, table: bytes) -> bytes:
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    samples = array("H", pcm)
    if not _LITTLE:
        samples.byteswap()
    if 1 < len(samples) <= _GETTER_MAX:  # a frame: one C call looks every sample up
        return bytes(operator.itemgetter(*samples)(table))
    return bytes(map(table.__getitem__, samples))


def ulaw_decode(data: bytes) -> bytes:
    """µ-law bytes -> 16-bit little-endian PCM (twice as long)."""
    return _decode(data, _ULAW_LO, _ULAW_HI)


def alaw_decode(data: bytes) -> bytes:
    return _decode(data, _ALAW_LO, _ALAW_HI)


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> µ-law bytes (half as long)."""
    return _encode(pcm, _ULAW_ENC)


def alaw_encode(pcm: bytes) -> bytes:
    return _encode(pcm, _ALAW_ENC)
