"""ITU-T G.722 at 64 kbit/s (mode 1): 16 kHz wideband speech as one byte per pair of
samples, in pure Python.

Theory of operation
-------------------
G.722 splits the 16 kHz signal with a 24-tap quadrature mirror filter (QMF) into a
lower band (0-4 kHz) and a higher band (4-8 kHz), each at 8 kHz, and codes each
band with its own backward-adaptive ADPCM (G.722 §3 encoder, §4 decoder):

* lower band: 6 bits per sample (QUANTL, 60 levels), of which the top 4 drive the
  predictor and scale-factor adaptation (INVQAL, LOGSCL, SCALEL) so that the 48 and
  56 kbit/s modes, which drop low bits, stay in step;
* higher band: 2 bits per sample (QUANTH, INVQAH, LOGSCH, SCALEH);
* both bands share block 4 (RECONS, PARREC, UPPOL1/2, UPZERO, FILTEP/FILTEZ,
  PREDIC): a pole-zero predictor with two poles and six zeros whose sign-sign
  coefficient updates keep encoder and decoder in lock-step without side
  information.

The codeword is ``IH << 6 | IL`` (G.722 §1.4.4: the higher-band bits are the most
significant).  All arithmetic is the recommendation's fixed-point arithmetic, with
its saturations, so the output is bit-exact with other fixed-point
implementations: the tests compare against libspandsp byte for byte.  The ADPCM
works on 15-bit band signals; linear PCM in and out is 16-bit little-endian (the
WAV layout used throughout pbx_core.media), so the QMF carries one extra bit of
scaling each way (``>> 14`` on analysis, ``>> 11`` on synthesis with saturation).

State lives in one ``Encoder`` or ``Decoder`` per direction of a call: ADPCM is
backward-adaptive, so every frame of a stream must go through the same object, in
order.  Pure Python costs about 1.5 ms per 20 ms frame each way (see the
tests); relaying G.722 to G.722 needs no codec at all.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left

__all__ = ["Decoder", "Encoder", "decode", "encode"]

_LITTLE = sys.byteorder == "little"

# QMF coefficients (G.722 Table 11) in the order they meet the delay line, oldest
# sample first; the second phase uses the same taps reversed.
_QMF_A = (3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11)
_QMF_B = _QMF_A[::-1]

# QUANTL decision levels (G.722 Table 14), magnitude index 1..29, scaled by 8.
_Q6 = (
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650,
    714, 786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195,
    2557, 2919,
)  # fmt: skip
# QUANTL output code for interval m, negative and positive differences (Table 14).
_ILN = (
    0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
    15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4,
)  # fmt: skip
_ILP = (
    0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44,
    43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32,
)  # fmt: skip

# Inverse quantiser outputs (Table 15 QQ6 / QQ4, Table 16 QQ2), indexed by code.
_QM6 = (
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512,
    -12280, -11192, -10232, -9360, -8576, -7856, -7192, -6576, -6000, -5456,
    -4944, -4464, -4008, -3576, -3168, -2776, -2400, -2032, -1688, -1360,
    -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192,
    10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576,
    3168, 2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
)  # fmt: skip
_QM4 = (
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
    20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
)  # fmt: skip
_QM2 = (-7408, -1616, 7408, 1616)

# Log scale-factor multipliers: lower band by the 4-bit code's magnitude class
# (Table 17 via RIL -> IL4), higher band by the 2-bit code (Table 18).
_RL42 = (0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0)
_WL = (-60, -30, 58, 172, 334, 538, 1198, 3042)
_WL_BY_CODE = tuple(_WL[_RL42[c]] for c in range(16))
_WH_BY_CODE = (798, -214, 798, -214)  # WH[RH2[ih]]

# SCALEL/SCALEH antilog table (G.722 Table 19), 2 ** (i / 32) scaled by 2 ** 11.
_ILB = (
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599,
    2656, 2714, 2774, 2834, 2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371,
    3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
)  # fmt: skip

_NB_MAX_LOW = 18432  # LOGSCL upper limit
_NB_MAX_HIGH = 22528  # LOGSCH upper limit


def _sat16(v: int) -> int:
    return -32768 if v < -32768 else 32767 if v > 32767 else v


class _Band:
    """One sub-band's adaptive state (G.722 block 3 and block 4 variables)."""

    __slots__ = ("a1", "a2", "b", "d", "det", "nb", "p1", "p2", "r1", "s", "sz")

    def __init__(self, det: int) -> None:
        self.s = 0  # predictor output SL / SH
        self.sz = 0  # zero-section output SZL / SZH
        self.r1 = 0  # reconstructed signal, one sample ago
        self.a1 = 0  # pole coefficients
        self.a2 = 0
        self.p1 = 0  # partial reconstructed signal, one and two samples ago
        self.p2 = 0
        self.b = [0] * 6  # zero coefficients BL1..BL6
        self.d = [0] * 6  # quantised differences DLT1..DLT6 (newest first)
        self.nb = 0  # log scale factor NBL / NBH
        self.det = det  # scale factor DETL / DETH

    def adapt(self, dq: int, wl: int, nb_max: int, shift_base: int) -> None:
        """Blocks 3 and 4 for one sample: scale factor from the log multiplier
        ``wl``, then the predictor from the quantised difference ``dq``.

        Saturations the recommendation applies but that cannot trigger are left
        out: DET <= 16384 keeps |dq| <= 12404, so ``dq + dq`` fits 16 bits; the
        leaky updates keep BLi within [-32768, 32767] (128 + 32767 * 255/256 rounds
        down to 32767) and |AL1| <= 15360 + 12288."""
        nb = ((self.nb * 127) >> 7) + wl  # LOGSCL / LOGSCH, leakage 127/128
        nb = 0 if nb < 0 else nb_max if nb > nb_max else nb
        self.nb = nb
        mantissa = _ILB[(nb >> 6) & 31]  # SCALEL / SCALEH
        shift = shift_base - (nb >> 11)
        self.det = (mantissa << -shift if shift < 0 else mantissa >> shift) << 2

        # RECONS and PARREC
        r = self.s + dq
        r = -32768 if r < -32768 else 32767 if r > 32767 else r
        p = self.sz + dq
        p = -32768 if p < -32768 else 32767 if p > 32767 else p
        neg_p = p < 0
        flip1 = neg_p != (self.p1 < 0)
        a1 = self.a1
        # UPPOL2 (G.722 §3.6.5): sign-sign update with leakage, |a2| <= 0.75
        wd = a1 << 2
        wd = -32768 if wd < -32768 else 32767 if wd > 32767 else wd
        if not flip1:
            wd = -wd if wd != -32768 else 32767
        a2 = (-128 if neg_p != (self.p2 < 0) else 128) + (wd >> 7) + ((self.a2 * 32512) >> 15)
        a2 = -12288 if a2 < -12288 else 12288 if a2 > 12288 else a2
        # UPPOL1: |a1| <= 1 - 2**-4 - a2
        a1 = (-192 if flip1 else 192) + ((a1 * 32640) >> 15)
        limit = 15360 - a2
        a1 = -limit if a1 < -limit else limit if a1 > limit else a1
        # FILTEP
        r2 = r + r
        r2 = -32768 if r2 < -32768 else 32767 if r2 > 32767 else r2
        r1 = self.r1 + self.r1
        r1 = -32768 if r1 < -32768 else 32767 if r1 > 32767 else r1
        sp = ((a1 * r2) >> 15) + ((a2 * r1) >> 15)
        sp = -32768 if sp < -32768 else 32767 if sp > 32767 else sp
        self.r1 = r
        self.a1 = a1
        self.a2 = a2
        self.p2 = self.p1
        self.p1 = p

        # UPZERO (sign-sign, against DLT delayed 1..6), DELAYA, FILTEZ
        d = self.d
        if dq == 0:
            b = [(bi * 32640) >> 15 for bi in self.b]
        else:
            up = 128 if dq > 0 else -128
            b = [
                ((bi * 32640) >> 15) + (up if di >= 0 else -up)
                for bi, di in zip(self.b, d, strict=True)
            ]
        self.b = b
        d.insert(0, dq)
        d.pop()
        sz = (
            ((b[0] * (d[0] + d[0])) >> 15)
            + ((b[1] * (d[1] + d[1])) >> 15)
            + ((b[2] * (d[2] + d[2])) >> 15)
            + ((b[3] * (d[3] + d[3])) >> 15)
            + ((b[4] * (d[4] + d[4])) >> 15)
            + ((b[5] * (d[5] + d[5])) >> 15)
        )
        sz = -32768 if sz < -32768 else 32767 if sz > 32767 else sz
        self.sz = sz
        # PREDIC
        sp += sz
        self.s = -32768 if sp < -32768 else 32767 if sp > 32767 else sp


def _check_pcm(pcm: bytes) -> None:
    if len(pcm) % 4:
        raise ValueError(
            f"G.722 takes 16-bit PCM in pairs of samples (a multiple of 4 bytes), "
            f"got {len(pcm)} bytes"
        )


class Encoder:
    """16 kHz 16-bit little-endian PCM -> G.722 codewords, one byte per two samples.

    Keeps the QMF delay line and both bands' ADPCM state between calls: use one
    encoder per outgoing stream and feed it the frames in order."""

    __slots__ = ("_high", "_low", "_x_even", "_x_odd")

    def __init__(self) -> None:
        self._low = _Band(det=32)
        self._high = _Band(det=8)
        self._x_even = [0] * 12  # QMF delay line: even (first) samples, oldest first
        self._x_odd = [0] * 12  # odd (second) samples

    def encode(self, pcm: bytes) -> bytes:
        """Encode PCM whose length is a multiple of 4 bytes (ValueError otherwise)."""
        _check_pcm(pcm)
        samples = array("h", pcm)
        if not _LITTLE:
            samples.byteswap()
        out = bytearray(len(samples) // 2)
        low = self._low
        high = self._high
        x_even = self._x_even
        x_odd = self._x_odd
        qmf_a = _QMF_A
        qmf_b = _QMF_B
        q6 = _Q6
        for k in range(len(out)):
            # QMF analysis (G.722 §3.1), two input samples -> one per band
            del x_even[0]
            x_even.append(samples[2 * k])
            del x_odd[0]
            x_odd.append(samples[2 * k + 1])
            sum_a = sum(map(int.__mul__, x_even, qmf_a))
            sum_b = sum(map(int.__mul__, x_odd, qmf_b))
            xl = (sum_b + sum_a) >> 14
            xh = (sum_b - sum_a) >> 14

            # Lower band: SUBTRA, QUANTL (6 bits)
            el = _sat16(xl - low.s)
            mag = el if el >= 0 else ~el
            det = low.det
            # the first interval m in 1..29 with mag < (Q6[m] * det) >> 12, else 30:
            # that is Q6[m] >= ceil((mag + 1) * 4096 / det)
            m = bisect_left(q6, -((-(mag + 1) << 12) // det), 1, 30)
            il = _ILN[m] if el < 0 else _ILP[m]
            # INVQAL works on the top 4 bits only
            ril = il >> 2
            low.adapt((det * _QM4[ril]) >> 15, _WL_BY_CODE[ril], _NB_MAX_LOW, 8)

            # Higher band: SUBTRA, QUANTH (2 bits)
            eh = _sat16(xh - high.s)
            mag = eh if eh >= 0 else ~eh
            det = high.det
            big = mag >= (564 * det) >> 12
            if eh < 0:
                ih = 0 if big else 1
            else:
                ih = 2 if big else 3
            high.adapt((det * _QM2[ih]) >> 15, _WH_BY_CODE[ih], _NB_MAX_HIGH, 10)

            out[k] = (ih << 6) | il
        return bytes(out)


class Decoder:
    """G.722 codewords -> 16 kHz 16-bit little-endian PCM, two samples per byte.

    Keeps both bands' ADPCM state and the QMF delay line between calls: use one
    decoder per incoming stream and feed it the payloads in order."""

    __slots__ = ("_diff", "_high", "_low", "_sum")

    def __init__(self) -> None:
        self._low = _Band(det=32)
        self._high = _Band(det=8)
        self._sum = [0] * 12  # QMF synthesis delay lines (rl + rh, rl - rh), oldest first
        self._diff = [0] * 12

    def decode(self, data: bytes) -> bytes:
        """Decode any number of codewords (every byte value is a valid codeword)."""
        out = array("h", bytes(4 * len(data)))
        low = self._low
        high = self._high
        sums = self._sum
        diffs = self._diff
        qmf_a = _QMF_A
        qmf_b = _QMF_B
        for k, code in enumerate(data):
            il = code & 0x3F
            ih = code >> 6
            # Lower band: INVQBL (all 6 bits) for the output, LIMIT to 15 bits
            det = low.det
            rl = low.s + ((det * _QM6[il]) >> 15)
            rl = -16384 if rl < -16384 else 16383 if rl > 16383 else rl
            ril = il >> 2
            low.adapt((det * _QM4[ril]) >> 15, _WL_BY_CODE[ril], _NB_MAX_LOW, 8)

            # Higher band: INVQAH, RECONS, LIMIT
            dh = (high.det * _QM2[ih]) >> 15
            rh = dh + high.s
            rh = -16384 if rh < -16384 else 16383 if rh > 16383 else rh
            high.adapt(dh, _WH_BY_CODE[ih], _NB_MAX_HIGH, 10)

            # QMF synthesis (G.722 §4.4), one sample per band -> two output samples
            del sums[0]
            sums.append(_sat16(rl + rh))
            del diffs[0]
            diffs.append(_sat16(rl - rh))
            out[2 * k] = _sat16(sum(map(int.__mul__, diffs, qmf_b)) >> 11)
            out[2 * k + 1] = _sat16(sum(map(int.__mul__, sums, qmf_a)) >> 11)
        if not _LITTLE:
            out.byteswap()
        return out.tobytes()


def encode(pcm: bytes) -> bytes:
    """Encode one self-contained clip (a fresh encoder; not for a running stream)."""
    return Encoder().encode(pcm)


def decode(data: bytes) -> bytes:
    """Decode one self-contained clip (a fresh decoder; not for a running stream)."""
    return Decoder().decode(data)
