"""Call-progress tones (ITU-T E.180 and its supplement: each country's cadences), sans-IO.

A tone is frequencies played together and a cadence of (on, off) periods in
milliseconds that repeats, or plays once for a beep.  ``render`` turns one into
8 kHz 16-bit PCM for one whole cycle; a player loops it.  Every on-period starts at
phase 0 and every frequency is a whole number of hertz, so a continuous tone
rendered for one second loops without a click.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from pbx_core.media.errors import MediaError

__all__ = ["COUNTRIES", "TONE_NAMES", "Tone", "render", "tone"]

RATE = 8000


@dataclass(frozen=True, slots=True)
class Tone:
    """Frequencies (Hz) summed, the cadence as (on_ms, off_ms) pairs (empty means
    continuous), whether the cadence repeats, and the level in dBm0 per frequency."""

    freqs: tuple[float, ...]
    cadence: tuple[tuple[int, int], ...] = ()
    repeat: bool = True
    level_dbm0: float = -13.0


TONE_NAMES = ("dial", "ringback", "busy", "congestion", "callwaiting", "confirmation")


def _t(freqs: tuple[float, ...], *cadence: int, repeat: bool = True) -> Tone:
    pairs = tuple(zip(cadence[0::2], cadence[1::2], strict=True))
    return Tone(freqs, pairs, repeat)


_CEPT = {
    "dial": _t((425,)),
    "ringback": _t((425,), 1000, 4000),
    "busy": _t((425,), 500, 500),
    "congestion": _t((425,), 250, 250),
    "callwaiting": _t((425,), 150, 150, 150, 4000),
    "confirmation": _t((425,), 100, 100, 100, 100, 100, 100, repeat=False),
}

# Country cadences (ITU-T E.180 supplement, as the national operators publish them).
COUNTRIES: dict[str, dict[str, Tone]] = {
    "us": {
        "dial": _t((350, 440)),
        "ringback": _t((440, 480), 2000, 4000),
        "busy": _t((480, 620), 500, 500),
        "congestion": _t((480, 620), 250, 250),
        "callwaiting": _t((440,), 300, 9700),
        "confirmation": _t((350, 440), 100, 100, 100, 100, 100, 100, repeat=False),
    },
    "uk": {
        "dial": _t((350, 440)),
        "ringback": _t((400, 450), 400, 200, 400, 2000),
        "busy": _t((400,), 375, 375),
        "congestion": _t((400,), 400, 350, 225, 525),
        "callwaiting": _t((400,), 100, 3000),
        "confirmation": _t((350, 440), 100, 100, 100, 100, 100, 100, repeat=False),
    },
    "de": {
        **_CEPT,
        "busy": _t((425,), 480, 480),
        "congestion": _t((425,), 240, 240),
        "callwaiting": _t((425,), 200, 200, 200, 5000),
    },
    "fr": {
        **_CEPT,
        "dial": _t((440,)),
        "ringback": _t((440,), 1500, 3500),
        "busy": _t((440,), 500, 500),
        "congestion": _t((440,), 250, 250),
        "callwaiting": _t((440,), 300, 10000),
        "confirmation": _t((440,), 100, 100, 100, 100, 100, 100, repeat=False),
    },
    "it": {
        **_CEPT,
        "dial": _t((425,), 200, 200, 600, 1000),
        "congestion": _t((425,), 200, 200),
        "callwaiting": _t((425,), 400, 100, 250, 100, 150, 14000),
    },
    "nl": {**_CEPT, "callwaiting": _t((425,), 500, 9500)},
    "es": {
        **_CEPT,
        "ringback": _t((425,), 1500, 3000),
        "busy": _t((425,), 200, 200),
        "congestion": _t((425,), 200, 200, 200, 200, 200, 600),
        "callwaiting": _t((425,), 175, 175, 175, 3500),
    },
    "at": {
        **_CEPT,
        "dial": _t((420,)),
        "ringback": _t((420,), 1000, 5000),
        "busy": _t((420,), 400, 400),
        "congestion": _t((420,), 200, 200),
        "callwaiting": _t((420,), 40, 1960),
        "confirmation": _t((420,), 100, 100, 100, 100, 100, 100, repeat=False),
    },
    "ch": {
        **_CEPT,
        "congestion": _t((425,), 200, 200),
        "callwaiting": _t((425,), 200, 200, 200, 4000),
    },
    "au": {
        **_CEPT,
        "dial": _t((413, 438)),
        "ringback": _t((413, 438), 400, 200, 400, 2000),
        "busy": _t((425,), 375, 375),
        "congestion": _t((425,), 375, 375),
        "callwaiting": _t((425,), 200, 100, 200, 4400),
        "confirmation": _t((413, 438), 100, 100, 100, 100, 100, 100, repeat=False),
    },
    "jp": {
        **_CEPT,
        "dial": _t((400,)),
        "ringback": _t((400, 416), 1000, 2000),  # 400 Hz modulated by 16 Hz, as two tones
        "busy": _t((400,), 500, 500),
        "congestion": _t((400,), 500, 500),
        "callwaiting": _t((400,), 100, 100, 100, 3000),
        "confirmation": _t((400,), 100, 100, 100, 100, 100, 100, repeat=False),
    },
    "eu": _CEPT,
}
COUNTRIES["gb"] = COUNTRIES["uk"]
COUNTRIES["ca"] = COUNTRIES["us"]


def tone(name: str, country: str = "us") -> Tone:
    """The tone ``name`` (see TONE_NAMES) of a country (ISO 3166 alpha-2, lower case;
    "eu" is the CEPT recommendation).  Unknown names raise MediaError."""
    table = COUNTRIES.get(country.lower())
    if table is None:
        raise MediaError(f"no tone table for country {country!r} (have {sorted(COUNTRIES)})")
    found = table.get(name.lower())
    if found is None:
        raise MediaError(f"no tone {name!r} (have {', '.join(TONE_NAMES)})")
    return found


def _sine_block(freqs: tuple[float, ...], amplitude: float, count: int) -> list[int]:
    steps = [2.0 * math.pi * f / RATE for f in freqs]
    return [round(amplitude * sum(math.sin(step * i) for step in steps)) for i in range(count)]


def render(t: Tone) -> bytes:
    """One cycle of the tone as 8 kHz 16-bit little-endian PCM (one second for a
    continuous tone)."""
    # dBm0 -> 16-bit peak: 0 dBm0 is 3.17 dB below a full-scale sine (G.711 §A.2).
    amplitude = 32767 * 10 ** ((t.level_dbm0 - 3.17) / 20)
    samples: list[int] = []
    if not t.cadence:
        samples = _sine_block(t.freqs, amplitude, RATE)
    else:
        for on_ms, off_ms in t.cadence:
            samples += _sine_block(t.freqs, amplitude, on_ms * RATE // 1000)
            samples += [0] * (off_ms * RATE // 1000)
    return struct.pack(f"<{len(samples)}h", *samples)
