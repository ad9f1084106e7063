"""The box's side of `pbx remote pull-recordings` (console/recordings.py): the listing
holds only finished recordings of the folder, and a part is read only from a file of
that folder, whatever name a request gives (a hypothesis test)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.console import recordings
from tests.fuzzing import fuzz_settings


def test_the_listing_and_the_parts(tmp_path: Path) -> None:
    folder = tmp_path / "calls"
    folder.mkdir()
    data = bytes(range(256)) * 20
    (folder / "20261208-100000-abc-1.wav").write_bytes(data)
    (folder / "20261208-100000-abc-2.wav.part").write_bytes(b"being written")
    (folder / "notes.txt").write_bytes(b"not a recording")
    assert recordings.listing(folder) == {
        "20261208-100000-abc-1.wav": {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    }
    got = recordings.chunk(folder, "20261208-100000-abc-1.wav", 100, 10_000)
    assert got == data[100 : 100 + recordings.CHUNK]
    assert recordings.chunk(folder, "20261208-100000-abc-1.wav", len(data), 64) == b""
    with pytest.raises(recordings.RecordingError, match="no recording"):
        recordings.chunk(folder, "gone.wav", 0, 64)
    assert recordings.listing(tmp_path / "missing") == {}


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.text(max_size=80), st.integers(0, 1 << 20), st.integers(0, 1 << 20))
def test_any_name_reads_only_the_folder(
    tmp_path_factory: pytest.TempPathFactory, name: str, offset: int, length: int
) -> None:
    root = tmp_path_factory.mktemp("r")
    folder = root / "calls"
    folder.mkdir(exist_ok=True)
    (root / "secret.wav").write_bytes(b"SECRET")
    (folder / "a.wav").write_bytes(b"RIFF-audio")
    try:
        got = recordings.chunk(folder, name, offset, length)
    except recordings.RecordingError:
        return
    assert name == "a.wav" and b"SECRET" not in got
    assert len(got) <= recordings.CHUNK
