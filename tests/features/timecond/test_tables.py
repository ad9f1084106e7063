"""`pbx db check` on the time condition tables: a bad time spec, a time group or a
destination that does not exist, a code out of range are refused at their row and
column; the tables that pass are the ones the harness tests use."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pbx_core.store.build import check_dir
from tests.features.timecond.test_timecond import TABLES

ROOT = Path(__file__).resolve().parents[3]
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"


def tables(tmp: Path, **changed: list[str]) -> Path:
    d = tmp / "cfg"
    shutil.copytree(FACTORY, d)
    for name, lines in {**TABLES, **changed}.items():
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def test_the_harness_tables_pass(tmp_path: Path) -> None:
    report = check_dir(tables(tmp_path))
    assert report.errors == [] and report.warnings == []


@pytest.mark.parametrize(
    ("table", "row", "says"),
    [
        ("pbx_time_group", "hours:0800-1790:mon-fri:*:*", "minutes 0-59"),
        ("pbx_time_group", "hours:*:monday:*:*", "'monday' is not one of mon..sun"),
        ("pbx_time_group", "hours:*:*:*:13", "13 is not 1-12"),
        ("pbx_time_condition", "x:nohours:extension:101:hangup::", "no name 'nohours'"),
        ("pbx_time_condition", "x:hours:timecond:nope:hangup::", "no timecond 'nope'"),
        ("pbx_time_condition", "x:hours:extension:109:hangup::", "'109' is not an extension"),
        ("pbx_time_condition", "x:hours:hangup::ivr:main:", "no ivr 'main' in pbx_ivr_menu"),
        ("pbx_time_condition", "x:hours:hangup::voicemail:101:", "101 has no voicemail"),
        ("pbx_time_condition", "x:hours:hangup::hangup::100", "expected at most 99"),
    ],
)
def test_a_bad_row_is_refused_where_it_is(tmp_path: Path, table: str, row: str, says: str) -> None:
    lines = [*TABLES[table], row]
    d = tables(tmp_path, **{table: lines})
    errors = check_dir(d).errors
    assert len(errors) == 1, errors
    (e,) = errors
    assert e.file.endswith(table) and e.line == len(lines)
    assert says in e.message, e.message
    assert e.column > 0, e


def test_pbx_db_check_knows_the_tables(tmp_path: Path) -> None:
    d = tables(tmp_path, pbx_time_group=[*TABLES["pbx_time_group"], "x:25-26:*:*:*"])
    out = subprocess.run(
        [sys.executable, "-m", "pbx_core", "db", "check", str(d)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out
    assert f"{d}/pbx_time_group:5:" in out.stdout + out.stderr, out
    assert "a time is HH:MM or HHMM" in out.stdout + out.stderr, out
