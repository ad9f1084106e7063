"""DTMF, sans-IO: RFC 4733 telephone-events, SIP INFO bodies, in-band detection.

Theory of operation
-------------------
RFC 4733 §2.5: a key press is one *event*, identified by the RTP timestamp of its
first packet.  The sender sends a start packet (marker bit), updates with a growing
duration while the key is held, and the end packet (E bit) three times.  Packets
are lost and repeated, so ``Rfc4733Receiver`` keys on the timestamp: the first
packet seen of a new timestamp starts an event (whether or not the start packet
itself arrived), the first end of it ends it, everything else is a duplicate.

SIP INFO (not standardised; the de-facto formats every phone uses):
``application/dtmf-relay`` with ``Signal=5`` / ``Duration=160`` lines, and
``application/dtmf`` with the bare digit.

In-band: the eight DTMF frequencies (ITU-T Q.23) are measured over blocks of 205
samples (25.6 ms at 8 kHz, the classic Goertzel block) as single DFT bins — what
the Goertzel recursion computes — taken here as two dot products, which the
interpreter runs in C.  A digit is accepted when one row and one column tone stand
out (each ≥ 6 dB above the other tones of its group, twist within 8 dB, the pair
holding most of the block's energy) in two consecutive blocks (≥ 40 ms, Q.24),
and released after two blocks without it.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass
from operator import mul

from pbx_core.media.errors import MediaError
from pbx_core.media.events import DtmfEvent, DtmfSource

__all__ = [
    "DIGITS",
    "DTMF_FREQUENCIES",
    "MAX_PRESS_MS",
    "InbandDetector",
    "Rfc4733Receiver",
    "TelephoneEvent",
    "dtmf_info_body",
    "goertzel_power",
    "parse_dtmf_info",
    "rfc4733_packets",
]

# RFC 4733 §3.2 event codes 0..15.
DIGITS = "0123456789*#ABCD"
ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    _KEYPAD[r][c]: (ROWS[r], COLS[c]) for r in range(4) for c in range(4)
}
_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """An RFC 4733 §2.3 payload: event code, end bit, volume (-dBm0), duration
    (timestamp units)."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None

    def pack(self) -> bytes:
        return _EVENT.pack(
            self.event, (0x80 if self.end else 0) | (self.volume & 0x3F), self.duration & 0xFFFF
        )

    @classmethod
    def unpack(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise MediaError("telephone-event payload shorter than 4 bytes", 400)
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)


class Rfc4733Receiver:
    """Turns a stream of telephone-event packets into key presses.

    ``feed(timestamp, payload)`` returns ``(started, ended)``: the digit of a newly
    started event (or None) and ``(digit, duration_ms)`` of an event that just ended
    (or None).  Both can come from one packet (only the end packets got through)."""

    __slots__ = ("_current", "_digit", "_ended", "clock_rate")

    def __init__(self, clock_rate: int = 8000) -> None:
        self.clock_rate = clock_rate
        self._current: int | None = None
        self._ended = True
        self._digit: str | None = None

    @property
    def active(self) -> str | None:
        """The digit of an event that started and has not ended yet."""
        return None if self._ended else self._digit

    def feed(self, timestamp: int, payload: bytes) -> tuple[str | None, tuple[str, int] | None]:
        ev = TelephoneEvent.unpack(payload)
        digit = ev.digit
        if digit is None:
            return None, None  # flash hook and other events: not a key press
        started: str | None = None
        if self._current is None or timestamp != self._current:
            if self._current is not None:
                diff = ((timestamp - self._current + 0x80000000) & 0xFFFFFFFF) - 0x80000000
                if diff < 0:
                    return None, None  # a late packet of an earlier event
            self._current = timestamp
            self._digit = digit
            self._ended = False
            started = digit
        if ev.end and not self._ended:
            self._ended = True
            return started, (digit, ev.duration * 1000 // self.clock_rate)
        return started, None

    def expire(self) -> str | None:
        """End the current event without its end packet (all three lost); returns its
        digit, or None if nothing was active."""
        if self._ended:
            return None
        self._ended = True
        return self._digit


MAX_PRESS_MS = 8000  # the longest key press we relay or play (RFC 4733: 65535 samples)


def rfc4733_packets(
    digit: str,
    duration_ms: int = 100,
    ptime_ms: int = 20,
    volume: int = 10,
    clock_rate: int = 8000,
) -> list[tuple[float, bytes, bool]]:
    """The packets of one key press as ``(offset in seconds, payload, marker)``:
    a start with the marker bit, an update per ptime, and the end sent three times
    (RFC 4733 §2.5.1.4).  All share the RTP timestamp of the event's start."""
    if len(digit) != 1 or digit.upper() not in DIGITS:
        raise MediaError(f"{digit!r} is not a DTMF digit", 400)
    code = DIGITS.index(digit.upper())
    step = ptime_ms * clock_rate // 1000
    total = max(step, duration_ms * clock_rate // 1000)
    total = min(total, 0xFFFF)
    out: list[tuple[float, bytes, bool]] = []
    elapsed = step
    while elapsed < total:
        update = TelephoneEvent(code, False, volume, elapsed).pack()
        out.append(((elapsed - step) / clock_rate, update, not out))
        elapsed += step
    end = TelephoneEvent(code, True, volume, total).pack()
    at = (total - step) / clock_rate if out else 0.0
    first = not out
    out.extend((at + i * step / clock_rate, end, first and i == 0) for i in range(3))
    return out


def parse_dtmf_info(content_type: str, body: bytes, side: str = "") -> DtmfEvent | None:
    """The key press carried by a SIP INFO, or None when the body type is not DTMF.

    ``content_type`` is the media type (parameters are ignored).  A DTMF body type
    with no usable digit raises MediaError with status 400."""
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if kind == "application/dtmf-relay":
        signal: str | None = None
        duration: int | None = None
        for line in text.splitlines():
            name, sep, value = line.partition("=")
            if not sep:
                continue
            name, value = name.strip().lower(), value.strip()
            if name == "signal":
                signal = value
            elif name == "duration" and value.isascii() and value.isdigit() and len(value) < 7:
                # RFC 4733's duration field holds 65535 samples: a longer press is
                # played as that long (it sizes the tones and packets we send).
                duration = min(int(value), MAX_PRESS_MS)
        if signal is None:
            raise MediaError("application/dtmf-relay body has no Signal line", 400)
        digit = _info_digit(signal)
        return DtmfEvent(digit, DtmfSource.INFO, duration if duration is not None else 100, side)
    if kind == "application/dtmf":
        return DtmfEvent(_info_digit(text.strip()), DtmfSource.INFO, None, side)
    return None


def _info_digit(value: str) -> str:
    value = value.strip().upper()
    if value.isdigit() and len(value) <= 2 and int(value) < len(DIGITS):
        return DIGITS[int(value)]  # some phones send the event code (10 = *, 11 = #)
    if len(value) == 1 and value in DIGITS:
        return value
    raise MediaError(f"SIP INFO carries {value!r}, not a DTMF digit", 400)


def dtmf_info_body(digit: str, duration_ms: int = 160) -> tuple[str, bytes]:
    """(Content-Type, body) of an application/dtmf-relay SIP INFO for a key press."""
    if len(digit) != 1 or digit.upper() not in DIGITS:
        raise MediaError(f"{digit!r} is not a DTMF digit", 400)
    body = f"Signal={digit.upper()}\r\nDuration={duration_ms}\r\n"
    return "application/dtmf-relay", body.encode()


def goertzel_power(samples: list[int] | array[int], freq: float, rate: int = 8000) -> float:
    """|X(f)|**2 of the samples by the Goertzel recursion (for tests and checks on
    recordings; the detector uses the equivalent dot products)."""
    coeff = 2.0 * math.cos(2.0 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


BLOCK = 205  # samples per analysis block at 8 kHz

_BASIS: list[tuple[list[float], list[float]]] = []


def _basis() -> list[tuple[list[float], list[float]]]:
    """cos/sin tables of the eight DTMF frequencies over one block, computed once:
    every leg has a detector, and building them per leg cost 3,300 sin/cos calls,
    more than the rest of a call's set-up."""
    if not _BASIS:
        _BASIS.extend(
            (
                [math.cos(2 * math.pi * f * i / 8000) for i in range(BLOCK)],
                [math.sin(2 * math.pi * f * i / 8000) for i in range(BLOCK)],
            )
            for f in (*ROWS, *COLS)
        )
    return _BASIS


class InbandDetector:
    """Detects DTMF tones in 8 kHz 16-bit PCM.  ``feed(pcm)`` accepts any amount
    and returns the digits whose press started in it."""

    __slots__ = ("_basis", "_candidate", "_count", "_current", "_pending", "_silent", "min_level")

    def __init__(self, min_level: float = 400.0) -> None:
        # min_level: the smallest tone amplitude accepted (16-bit scale; 400 is
        # about -38 dBFS, below what any phone sends for a key).
        self.min_level = min_level
        self._pending = array("h")
        self._current: str | None = None  # digit being held
        self._candidate: str | None = None
        self._count = 0
        self._silent = 0
        self._basis = _basis()

    def feed(self, pcm: bytes) -> list[str]:
        self._pending.frombytes(pcm[: len(pcm) & ~1])
        found: list[str] = []
        while len(self._pending) >= BLOCK:
            block = self._pending[:BLOCK]
            del self._pending[:BLOCK]
            digit = self._classify(block)
            self._step(digit, found)
        return found

    def _step(self, digit: str | None, found: list[str]) -> None:
        if digit is not None and digit == self._candidate:
            self._count += 1
        else:
            self._candidate = digit
            self._count = 1
        if digit is not None and self._count == 2 and digit != self._current:
            self._current = digit
            self._silent = 0
            found.append(digit)
        if digit != self._current:
            self._silent += 1
            if self._silent >= 2:
                self._current = None
        else:
            self._silent = 0

    def _classify(self, block: array[int]) -> str | None:
        energy = float(sum(map(mul, block, block)))
        n = BLOCK
        # A tone of amplitude A carries n*A*A/2 of energy.
        if energy < n * self.min_level * self.min_level / 2:
            return None
        powers = []
        for cos_t, sin_t in self._basis:
            re = sum(map(mul, block, cos_t))
            im = sum(map(mul, block, sin_t))
            powers.append(re * re + im * im)
        rows, cols = powers[:4], powers[4:]
        r = max(range(4), key=rows.__getitem__)
        c = max(range(4), key=cols.__getitem__)
        pr, pc = rows[r], cols[c]
        # Each tone's energy is 2|X|^2/n; both must reach min_level.
        floor = (self.min_level * n / 2) ** 2
        if pr < floor or pc < floor:
            return None
        if pr > 6.3 * pc or pc > 6.3 * pr:  # twist beyond 8 dB
            return None
        for i in range(4):  # every other tone of the group at least 6 dB lower
            if (i != r and rows[i] * 4 > pr) or (i != c and cols[i] * 4 > pc):
                return None
        if 2 * (pr + pc) / n < 0.6 * energy:  # speech or music, not a clean pair
            return None
        return _KEYPAD[r][c]
