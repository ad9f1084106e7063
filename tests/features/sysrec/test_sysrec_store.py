"""The system recordings' store (pbx_core/sysrec.py): what it accepts (8 kHz mono
µ-law, A-law, 16-bit PCM, converted to the recorder's µ-law), what it refuses and
why (not a WAV, truncated, another rate, stereo, another format, too long), its
bounds (count, total bytes), whole writes (nothing half-written when refused), and
names that are never paths (a hypothesis test)."""

from __future__ import annotations

import contextlib
import math
import struct
from array import array
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core import sysrec
from pbx_core.media.codecs import g711
from pbx_core.media.wav import parse_wav, wav_bytes
from tests.fuzzing import fuzz_settings

PCM = b"".join(
    struct.pack("<h", int(9000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(8000)
)


def _wav(rate: int = 8000, channels: int = 1, tag: int = 1, bits: int = 16, body: bytes = PCM):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, 2, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body))
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(body)) + b"WAVE" + chunks + body


def test_every_accepted_format_is_stored_as_the_recorder_writes(tmp_path: Path) -> None:
    want = g711.ulaw_encode(PCM)
    for fmt in ("pcm", "ulaw", "alaw"):
        size = sysrec.save(tmp_path, f"g-{fmt}", wav_bytes(PCM, fmt))
        stored = (tmp_path / f"g-{fmt}.wav").read_bytes()
        assert size == len(stored) == sysrec.HEADER + 8000
        assert parse_wav(stored).format == "ulaw"
        body = stored[sysrec.HEADER :]
        if fmt == "alaw":  # A-law's steps are not µ-law's: close, not equal
            got, ref = (array("h", g711.ulaw_decode(b)) for b in (body, want))
            diff = [abs(a - b) for a, b in zip(got, ref, strict=True)]
            assert body != want and max(diff) < 600  # of a 9000 amplitude
        else:
            assert body == want
    assert sorted(sysrec.listing(tmp_path)) == ["g-alaw", "g-pcm", "g-ulaw"]
    assert sysrec.listing(tmp_path)["g-pcm"]["seconds"] == 1.0


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"hello, not a wav at all", "not a WAV file"),
        (_wav(rate=16000), "16000 Hz, not 8000 Hz"),
        (_wav(rate=44100, channels=2), "44100 Hz"),
        (_wav(channels=2), "2 channels, not 1"),
        (_wav()[:-100], "truncated"),
        (_wav()[:30], "truncated"),
        (_wav()[:40], "no data chunk"),
        (_wav(tag=3, bits=32), "format 3 with 32 bits"),
        (_wav(body=b""), "holds no audio"),
        (_wav(body=b"\0\0" * 8000 * (sysrec.MAX_SECONDS + 1)), "bytes; at most"),
        (wav_bytes(bytes(16000 * (sysrec.MAX_SECONDS + 1)), "ulaw"), "at most 120 s"),
    ],
)
def test_a_bad_file_is_refused_with_its_reason_and_nothing_written(
    tmp_path: Path, data: bytes, why: str
) -> None:
    with pytest.raises(sysrec.SysrecError, match=why):
        sysrec.save(tmp_path, "greeting", data)
    assert list(tmp_path.iterdir()) == []


def test_a_replacement_is_whole_and_the_bounds_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysrec.save(tmp_path, "1", wav_bytes(PCM, "ulaw"))
    first = (tmp_path / "1.wav").read_bytes()
    with pytest.raises(sysrec.SysrecError):
        sysrec.save(tmp_path, "1", b"RIFF....WAVE")
    assert (tmp_path / "1.wav").read_bytes() == first  # the old one stays
    monkeypatch.setattr(sysrec, "MAX_COUNT", 2)
    sysrec.save(tmp_path, "2", wav_bytes(PCM, "ulaw"))
    with pytest.raises(sysrec.SysrecError, match="2 system recordings already"):
        sysrec.save(tmp_path, "3", wav_bytes(PCM, "ulaw"))
    sysrec.save(tmp_path, "2", wav_bytes(PCM[:8000], "ulaw"))  # replacing one is fine
    monkeypatch.setattr(sysrec, "MAX_TOTAL_BYTES", len(first) + 6000)
    with pytest.raises(sysrec.SysrecError, match="no room"):
        sysrec.save(tmp_path, "2", wav_bytes(PCM, "ulaw"))
    sysrec.delete(tmp_path, "2")
    with pytest.raises(sysrec.SysrecError, match="no system recording"):
        sysrec.delete(tmp_path, "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.wav"]  # no .part left


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.text(max_size=80), st.integers(0, 1 << 20))
def test_any_name_stays_in_the_folder(
    tmp_path_factory: pytest.TempPathFactory, name: str, offset: int
) -> None:
    root = tmp_path_factory.mktemp("r")
    folder = root / "system"
    folder.mkdir()
    (root / "secret.wav").write_bytes(b"SECRET")
    (folder / "a.wav").write_bytes(b"RIFF-audio")
    try:
        got = sysrec.chunk(folder, name, offset, 1 << 20)
    except sysrec.SysrecError:
        got = b""
    assert b"SECRET" not in got and len(got) <= sysrec.CHUNK
    for call in (sysrec.delete, lambda f, n: sysrec.save(f, n, b"junk")):
        with contextlib.suppress(sysrec.SysrecError):
            call(folder, name)
    assert (root / "secret.wav").exists()


@given(st.binary(max_size=600))
@fuzz_settings(300)
@pytest.mark.fuzz
def test_any_bytes_are_converted_or_refused(data: bytes) -> None:
    try:
        out = sysrec.to_stored(b"RIFF" + data[:4] + b"WAVE" + data[4:])
    except sysrec.SysrecError:
        return
    assert parse_wav(out).format == "ulaw"
