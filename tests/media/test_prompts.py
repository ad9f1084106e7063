"""prompts_build: the tune, the resampler, and (with espeak-ng) a few prompts."""

from __future__ import annotations

import itertools
import math
import shutil
import struct
from pathlib import Path

import pytest

from pbx_core.media import prompts_build
from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.wav import parse_wav
from tests.conftest import need


def test_music_on_hold_is_32_seconds_loud_enough_and_narrowband(tmp_path: Path) -> None:
    assert prompts_build.main([str(tmp_path), "--only", "music-on-hold"]) == 0
    audio = parse_wav((tmp_path / "music-on-hold.wav").read_bytes())
    samples = struct.unpack(f"<{len(audio.pcm) // 2}h", audio.pcm)
    assert len(samples) == 32 * 8000
    peak = max(map(abs, samples))
    assert 16000 < peak <= 32767 * 10 ** (-6 / 20) + 1
    block = list(samples[8000:12000])
    # Its energy sits in the voice band: far more at the chord notes than at 3.9 kHz.
    assert goertzel_power(block, 261.63) > 30 * goertzel_power(block, 3900)
    # Seamless loop: the jump across the loop point is no bigger than within the tune.
    steps = [abs(b - a) for a, b in itertools.pairwise(samples)]
    assert abs(samples[0] - samples[-1]) <= max(steps)
    assert "music-on-hold\t(music)" in (tmp_path / "prompts.txt").read_text()


def test_resampler_keeps_a_tone_and_removes_aliases() -> None:
    rate = 22050
    tone = [int(8000 * math.sin(2 * math.pi * 1000 * i / rate)) for i in range(rate // 4)]
    out = prompts_build.resample(tone, rate)
    assert abs(len(out) - 2000) <= 1
    assert goertzel_power(out[200:1800], 1000) > 1000 * goertzel_power(out[200:1800], 2000)
    high = [int(8000 * math.sin(2 * math.pi * 6000 * i / rate)) for i in range(rate // 4)]
    folded = prompts_build.resample(high, rate)  # 6 kHz would alias to 2 kHz
    assert max(map(abs, folded[200:1800])) < 400


def test_unknown_prompt_fails(tmp_path: Path) -> None:
    if shutil.which("espeak-ng") is None:
        assert prompts_build.main([str(tmp_path), "--only", "nope"]) == 2
    else:
        assert prompts_build.main([str(tmp_path), "--only", "nope"]) == 1
    assert not (tmp_path / "nope.wav").exists()


@pytest.mark.tools("espeak-ng")
@pytest.mark.parametrize("use_sox", [True, False])
def test_spoken_prompts_are_8khz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_sox: bool
) -> None:
    if use_sox:
        need("sox")
    if not use_sox:
        real = shutil.which
        monkeypatch.setattr(shutil, "which", lambda name: None if name == "sox" else real(name))
    assert prompts_build.main([str(tmp_path), "--only", "digit-5", "welcome"]) == 0
    for name in ("digit-5", "welcome"):
        audio = parse_wav((tmp_path / f"{name}.wav").read_bytes())
        samples = struct.unpack(f"<{len(audio.pcm) // 2}h", audio.pcm)
        assert 0.2 < len(samples) / 8000 < 3
        assert max(map(abs, samples)) > 16000  # normalised to -3 dBFS
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
