"""The tone detector the audio tests rely on (tests/media/baresip.py): it must say
"no tone" for digital silence and noise, or a call that carried no audio at all
would pass the echo and two-party tests (the old detector returned the first
candidate when every power was zero)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import fuzz_settings
from tests.media.baresip import dominant_frequency, dominant_tone, sine_wav
from tests.media.baresip import wav_samples as _wav_samples

FREQS = [440.0, 1000.0]
N = 8000 * 3  # three seconds, as the call tests record


def sine(hz: float, amplitude: float, n: int = N) -> list[int]:
    return [int(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n)]


def test_digital_silence_is_no_tone() -> None:
    assert dominant_tone([0] * N, FREQS) is None
    assert dominant_tone([0] * N, list(reversed(FREQS))) is None


def test_white_noise_is_no_tone() -> None:
    rng = random.Random(11)
    for level in (30, 3000, 20000):
        noise = [int(rng.gauss(0, level)) for _ in range(N)]
        assert dominant_tone(noise, FREQS) is None, level


def test_a_faint_tone_is_no_tone() -> None:
    # -54 dBFS: below the floor, whatever the ratio between the bins.
    assert dominant_tone(sine(440, 60), FREQS) is None


def test_a_tone_buried_in_noise_is_no_tone() -> None:
    rng = random.Random(5)
    noisy = [s + int(rng.gauss(0, 6000)) for s in sine(1000, 1000)]
    assert dominant_tone(noisy, FREQS) is None


def test_each_tone_is_found() -> None:
    assert dominant_tone(sine(440, 8000), FREQS) == 440.0
    assert dominant_tone(sine(1000, 8000), FREQS) == 1000.0
    # with some line noise and at a modest level
    rng = random.Random(7)
    noisy = [s + int(rng.gauss(0, 100)) for s in sine(1000, 1500)]
    assert dominant_tone(noisy, FREQS) == 1000.0


def test_two_tones_at_once_is_no_single_tone() -> None:
    both = [a + b for a, b in zip(sine(440, 6000), sine(1000, 6000), strict=True)]
    assert dominant_tone(both, FREQS) is None


def test_recordings_of_silence_and_of_a_tone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    silent = sine_wav(tmp_path / "silent.wav", 0.0, 3.0, amplitude=0)
    assert _wav_samples(silent) == [0] * N
    assert dominant_frequency(silent, FREQS) is None
    tone = sine_wav(tmp_path / "tone.wav", 440.0, 3.0)
    assert dominant_frequency(tone, FREQS) == 440.0


@pytest.mark.fuzz
@fuzz_settings(50)
@given(
    st.lists(st.integers(-32768, 32767), min_size=0, max_size=4000),
    st.sampled_from([[440.0, 1000.0], [1000.0, 440.0], [261.63, 329.63, 392.0]]),
)
def test_any_input_gives_a_candidate_or_none(samples: list[int], freqs: list[float]) -> None:
    got = dominant_tone(samples, freqs)
    assert got is None or got in freqs
    if not any(samples):
        assert got is None
