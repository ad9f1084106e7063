"""A power cut while a message is recorded loses at most that message (issue 15).

The recorder writes NAME.part and renames it only when complete, so a cut leaves a
.part file and never a truncated message. Nothing counts a .part against a quota, so
at the next start the engine removes them: otherwise each cut would keep up to a
message's worth of the 64 MiB /data partition for ever."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.media.recorder import remove_partial
from tests.features.voicemail.test_voicemail import TABLES, _box, _leave, _wav
from tests.harness.office import Office, offices


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables=TABLES)


def test_a_cut_recording_is_removed_at_start_and_the_box_kept(office: Office) -> None:
    _leave(office, office.phone("102").call("*96100"))
    ((msg_id, meta),) = _box(office, "100")
    kept = _wav(office, f"100-{msg_id}")
    assert kept.is_file()
    size = kept.stat().st_size
    # What a cut leaves: the message being recorded, and a call recording, unfinished.
    root = kept.parent.parent
    cut = [kept.with_name("100-9999999999999.wav.part"), root / "calls" / "x.wav.part"]
    for part in cut:
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(b"RIFF" + bytes(4000))
    office.restart()
    assert [p for p in cut if p.exists()] == []
    assert _box(office, "100") == [(msg_id, meta)]
    assert kept.stat().st_size == size


def test_remove_partial_touches_only_part_files(tmp_path: Path) -> None:
    (tmp_path / "voicemail").mkdir()
    keep = [tmp_path / "voicemail" / "100-1.wav", tmp_path / "notes.txt"]
    for p in keep:
        p.write_bytes(b"x")
    (tmp_path / "voicemail" / "100-2.wav.part").write_bytes(b"x")
    (tmp_path / "a.part").write_bytes(b"x")
    assert remove_partial(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["100-1.wav", "notes.txt"]
    assert remove_partial(tmp_path / "missing") == 0
