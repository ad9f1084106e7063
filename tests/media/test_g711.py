"""G.711 against a reference written from the ITU-T G.711 tables (decision levels and
quantised values, Tables 1 and 2), independent of the table builder in the codec."""

from __future__ import annotations

import bisect
import struct

from hypothesis import given
from hypothesis import strategies as st

from pbx_core.media.codecs import g711

# µ-law (G.711 Table 2, 14-bit magnitudes): the first interval [0, 1) then segments of
# 16 intervals whose width doubles: 2 (from 1), 4 (from 31), 8 (from 95) ... 256.
MU_DECISIONS = [0, *range(1, 31, 2)]
start = 31
for width in (4, 8, 16, 32, 64, 128, 256):
    MU_DECISIONS += list(range(start, start + 16 * width, width))
    start += 16 * width
MU_TOP = start  # 8159: beyond it the encoder saturates
# A-law (Table 1, 12-bit magnitudes): segments 0 and 1 step 2, then 4, 8 ... 128.
A_DECISIONS = list(range(0, 64, 2))
start = 64
for width in (4, 8, 16, 32, 64, 128):
    A_DECISIONS += list(range(start, start + 16 * width, width))
    start += 16 * width
A_TOP = start  # 4096


def _interval_value(decisions: list[int], top: int, k: int) -> float:
    lo = decisions[k]
    hi = decisions[k + 1] if k + 1 < len(decisions) else top
    return 0 if (k == 0 and decisions is MU_DECISIONS) else (lo + hi) / 2


def ref_ulaw_encode(x: int) -> int:
    positive = x >= 0
    m = (x if positive else ~x) >> 2  # ones' complement for negatives (G.191)
    k = bisect.bisect_right(MU_DECISIONS, min(m, MU_TOP - 1)) - 1
    code = 0x7F - k  # sent inverted: step 0 -> 0x7F (then sign bit)
    return code | 0x80 if positive else code


def ref_alaw_encode(x: int) -> int:
    positive = x >= 0
    m = (x if positive else ~x) >> 3
    k = bisect.bisect_right(A_DECISIONS, m) - 1
    return ((k | 0x80) if positive else k) ^ 0x55


def ref_ulaw_decode(code: int) -> int:
    k = 0x7F - (code & 0x7F)
    v = _interval_value(MU_DECISIONS, MU_TOP, k) * 4
    return int(v if code & 0x80 else -v)


def ref_alaw_decode(code: int) -> int:
    c = code ^ 0x55
    v = _interval_value(A_DECISIONS, A_TOP, c & 0x7F) * 8
    return int(v if c & 0x80 else -v)


def test_decision_tables_have_128_steps() -> None:
    assert len(MU_DECISIONS) == 128 and MU_TOP == 8159
    assert len(A_DECISIONS) == 128 and A_TOP == 4096


def test_every_code_decodes_to_the_table_value() -> None:
    for code in range(256):
        assert g711.ulaw_decode_sample(code) == ref_ulaw_decode(code), hex(code)
        assert g711.alaw_decode_sample(code) == ref_alaw_decode(code), hex(code)


def test_known_itu_values() -> None:
    # Largest magnitudes: µ-law 8031 (times 4), A-law 4032 (times 8); smallest A-law 1 (times 8).
    assert g711.ulaw_decode_sample(0x80) == 32124 and g711.ulaw_decode_sample(0x00) == -32124
    assert g711.ulaw_decode_sample(0xFF) == 0 and g711.ulaw_decode_sample(0x7F) == 0
    assert g711.alaw_decode_sample(0xAA) == 32256 and g711.alaw_decode_sample(0x2A) == -32256
    assert g711.alaw_decode_sample(0xD5) == 8 and g711.alaw_decode_sample(0x55) == -8
    assert g711.ulaw_encode_sample(0) == 0xFF and g711.alaw_encode_sample(0) == 0xD5


def test_encoder_on_all_65536_inputs() -> None:
    for x in range(-32768, 32768):
        assert g711.ulaw_encode_sample(x) == ref_ulaw_encode(x), x
        assert g711.alaw_encode_sample(x) == ref_alaw_encode(x), x


def test_encode_decode_round_trip_every_code() -> None:
    for code in range(256):
        # µ-law has two zeros (0x7F, 0xFF): -0 re-encodes as +0.
        expected = 0xFF if code == 0x7F else code
        assert g711.ulaw_encode_sample(g711.ulaw_decode_sample(code)) == expected
        assert g711.alaw_encode_sample(g711.alaw_decode_sample(code)) == code


def test_buffer_functions_match_samples() -> None:
    codes = bytes(range(256))
    pcm = g711.ulaw_decode(codes)
    assert struct.unpack("<256h", pcm) == tuple(g711.ulaw_decode_sample(c) for c in codes)
    pcm = g711.alaw_decode(codes)
    assert struct.unpack("<256h", pcm) == tuple(g711.alaw_decode_sample(c) for c in codes)
    assert g711.ulaw_encode(g711.ulaw_decode(codes)) == codes.replace(b"\x7f", b"\xff")
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def test_transcoding_tables_go_through_linear() -> None:
    for code in range(256):
        assert g711.ULAW_TO_ALAW[code] == ref_alaw_encode(ref_ulaw_decode(code))
        assert g711.ALAW_TO_ULAW[code] == ref_ulaw_encode(ref_alaw_decode(code))


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_encode_buffers(samples: list[int]) -> None:
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    assert g711.ulaw_encode(pcm) == bytes(ref_ulaw_encode(x) for x in samples)
    assert g711.alaw_encode(pcm) == bytes(ref_alaw_encode(x) for x in samples)


def test_odd_length_pcm_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="even"):
        g711.ulaw_encode(b"\x00\x01\x02")
