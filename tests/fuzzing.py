"""The suite's fuzz budget: one knob for every fuzz and property test that feeds hostile input.

Fuzz tests carry `@pytest.mark.fuzz` and take their settings from `fuzz_settings(n)`: `n`
examples in `./build.sh test` (a bounded budget), `n * PBX_FUZZ_SCALE` in `./build.sh fuzz`
(which sets the scale, default 50 there, and runs only the fuzz tests).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_MAX_SCALE = 10_000


def fuzz_scale() -> int:
    """The multiplier from PBX_FUZZ_SCALE (1 when unset; bad values are an error, not 1)."""
    raw = os.environ.get("PBX_FUZZ_SCALE", "1")
    try:
        scale = int(raw)
    except ValueError:
        raise ValueError(f"PBX_FUZZ_SCALE must be a whole number, not {raw!r}") from None
    if not 1 <= scale <= _MAX_SCALE:
        raise ValueError(f"PBX_FUZZ_SCALE must be 1..{_MAX_SCALE}, not {scale}")
    return scale


def fuzz_settings(examples: int) -> settings:
    """Hypothesis settings for a fuzz test that runs `examples` inputs in the normal suite."""
    return settings(
        max_examples=examples * fuzz_scale(),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
