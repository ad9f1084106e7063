"""`pbx db check` on what a table directory may really hold: entries that are not
table files, tables Kamailio loads but a user would not expect (warnings), tables
far larger than memory should be spent on, and (fuzz) arbitrary bytes."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.store import cli
from pbx_core.store.build import check_dir
from pbx_core.store.compile import compile_dir
from pbx_core.store.dbtext import TableFile, parse_table
from pbx_core.store.errors import DbTextError, StoreError
from pbx_core.store.generations import Store
from pbx_core.store.snapshot import Snapshot
from tests.fuzzing import fuzz_settings

ROOT = Path(__file__).resolve().parent.parent.parent
FACTORY = ROOT / "rootfs_overlay/etc/pbx/factory"


def _copy(tmp: Path) -> Path:
    d = tmp / "cfg"
    shutil.copytree(FACTORY, d)
    return d


def _check(d: Path) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = cli.check(str(d), out)
    return status, out.getvalue().splitlines()


# ------------------------------------------------------------ not table files


def _directory(p: Path) -> None:
    p.mkdir()


def _loop(p: Path) -> None:
    os.symlink(p.name, p)


def _two_link_loop(p: Path) -> None:
    os.symlink(p.name + "-b", p)
    os.symlink(p.name, p.with_name(p.name + "-b"))


def _broken(p: Path) -> None:
    os.symlink("no-such-file", p)


def _fifo(p: Path) -> None:
    os.mkfifo(p)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_directory, "a directory, not a table file"),
        (_loop, "symbolic link loop, not a table file"),
        (_two_link_loop, "symbolic link loop, not a table file"),
        (_broken, "broken symbolic link, not a table file"),
        (_fifo, "a FIFO, not a table file"),  # and reading it does not block
    ],
    ids=["directory", "self-loop", "two-link-loop", "broken-link", "fifo"],
)
def test_an_entry_that_is_not_a_table_file_is_an_error(
    tmp_path: Path, make: object, message: str
) -> None:
    d = _copy(tmp_path)
    assert callable(make)
    make(d / "pbx_extra")
    status, lines = _check(d)
    assert status == 1
    assert f"{d}/pbx_extra: {message}" in lines
    with pytest.raises(StoreError, match="pbx_extra"):
        Store(d, runtime_dir=tmp_path / "run")  # the daemon refuses it too


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_table_is_an_error(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "pbx_trunk").chmod(0)
    status, lines = _check(d)
    assert status == 1
    assert f"{d}/pbx_trunk: cannot read: Permission denied" in lines


def test_a_link_to_a_table_file_is_followed(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "pbx_trunk").rename(tmp_path / "trunks")
    os.symlink(tmp_path / "trunks", d / "pbx_trunk")
    assert _check(d)[0] == 0


def test_hidden_files_are_not_tables(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / ".subscriber.swp").write_bytes(b"\xff\xfe not a table")
    assert _check(d)[0] == 0


# ------------------------------------------------------------ warnings

KAM_SUBSCRIBER = (
    "id(int,auto) username(string) domain(string) password(string,null) ha1(string,null) "
    "ha1b(string,null)\n"
)


def _kamailio(tmp: Path, subscriber_rows: str, version_rows: str) -> Path:
    d = tmp / "kam"
    d.mkdir()
    (d / "subscriber").write_text(KAM_SUBSCRIBER + subscriber_rows)
    (d / "version").write_text(
        "id(int,auto) table_name(string) table_version(int)\n" + version_rows
    )
    return d


def test_duplicate_ids_are_a_warning(tmp_path: Path) -> None:
    d = _kamailio(
        tmp_path,
        "1:1001:pbx.local:a::\n2:1002:pbx.local:b::\n1:1003:pbx.local:c::\n",
        "1:subscriber:7\n",
    )
    status, lines = _check(d)
    assert status == 0, lines
    assert (
        f"warning: {d}/subscriber:4:1: duplicate id 1 (first at line 2): Kamailio loads both rows"
        in lines
    )


@pytest.mark.parametrize(
    ("versions", "warning"),
    [
        ("", "{d}/version: no version row for table 'subscriber': kamailio's modules refuse "
         "the table without one (expected subscriber:7)"),
        ("1:subscriber:6\n", "{d}/version:2:14: table 'subscriber' has version 6, kamailio's "
         "modules expect 7 for these columns and refuse another"),
    ],
    ids=["missing", "mismatched"],
)  # fmt: skip
def test_version_rows_are_warnings(tmp_path: Path, versions: str, warning: str) -> None:
    d = _kamailio(tmp_path, "1:1001:pbx.local:a::\n", versions)
    status, lines = _check(d)
    assert status == 0, lines
    assert "warning: " + warning.format(d=d) in lines
    assert lines[-1] == f"{d}: ok, 2 tables"


def test_matching_version_rows_give_no_warning(tmp_path: Path) -> None:
    d = _kamailio(tmp_path, "1:1001:pbx.local:a::\n", "1:subscriber:7\n")
    assert _check(d) == (0, [f"{d}: ok, 2 tables"])


# ------------------------------------------------------------ memory

_MEASURE = textwrap.dedent(
    """
    import resource, sys
    from pbx_core.store.build import check_dir
    from pbx_core.store.compile import compile_dir
    from pbx_core.store.snapshot import Snapshot
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.argv[1] == "check":
        report = check_dir(sys.argv[2])
        assert not report.errors, report.errors
    else:
        compile_dir(sys.argv[2], sys.argv[3])
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    if sys.argv[1] == "compile":
        with Snapshot(sys.argv[3]) as snap:
            assert snap.user("100042", "pbx.local") is not None
            assert snap.number("100042") is not None
            assert len(snap.table_names()) == 2
    print(growth)
    """
)


@pytest.mark.slow
def test_memory_is_bounded_by_the_row_not_the_file(tmp_path: Path) -> None:
    """A 50 MB subscriber table: checking it, and compiling it, grows the process by
    less than 64 MB (checking took 1 GB when tables were read whole). What grows is
    a hash per row (index.py) and one LMDB write batch, never the table."""
    d = tmp_path / "big"
    d.mkdir()
    (d / "pbx_settings").write_text("name(string) value(string,null)\ndomain:pbx.local\n")
    with (d / "subscriber").open("w") as f:
        f.write(KAM_SUBSCRIBER)
        for i in range(520_000):
            h = f"{i:032x}"
            f.write(f"{i + 1}:{100000 + i}:pbx.local::{h}:{h}\n")
    size = (d / "subscriber").stat().st_size
    assert size > 45 * 2**20
    for step in ("check", "compile"):
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, step, str(d), str(tmp_path / "s.mdb")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        growth = int(out.stdout)
        assert growth < 64 * 2**20, (step, growth)


# ------------------------------------------------------------ fuzz

_HEADERS = [
    "id(int,auto) username(string) domain(string) password(string,null) ha1(string,null)",
    "username(str) domain(str) password(str,null) ha1(str,null)",
    "name(string) value(string,null)",
    "id(int,auto) name(string) host(string) port(int)",
    "a(int) b(double,null) c(str)",
    "x(blob,null)",
]
_NAMES = ["subscriber", "pbx_settings", "pbx_trunk", "version", "notes", "location"]
_FIELD = st.one_of(
    st.sampled_from(["", "1", "-1", "1001", "pbx.local", "secret", "x" * 40, "2147483648", "1.5",
                     "\\:", "\\", "\\q", "sec_rate", "domain", "0", "99999999999", "\r"]),
    st.text(max_size=12),
)  # fmt: skip


@st.composite
def _table_bytes(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from(_HEADERS))
    rows = draw(st.lists(st.lists(_FIELD, min_size=0, max_size=7).map(":".join), max_size=6))
    text = header + "\n" + "\n".join(rows) + draw(st.sampled_from(["\n", "", "\n\n"]))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = draw(st.binary(max_size=40)) + data
    return data


@pytest.mark.fuzz
@fuzz_settings(60)
@given(st.dictionaries(st.sampled_from(_NAMES), _table_bytes(), max_size=4))
def test_fuzz_check_only_reports_and_what_it_accepts_loads(
    tmp_path_factory: pytest.TempPathFactory, tables: dict[str, bytes]
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    d = tmp / "cfg"
    d.mkdir()
    for name, data in tables.items():
        (d / name).write_bytes(data)
        # The whole-file parser and the row-by-row reader agree.
        try:
            whole = parse_table(data, name, str(d / name))
        except DbTextError:
            whole = None
        if whole is not None:
            streamed = TableFile(d / name)
            assert [row for _ref, row in streamed.iter_rows()] == whole.rows
            assert streamed.errors == []
    try:
        report = check_dir(d)  # only StoreErrors may escape, and none should
    except StoreError as exc:
        pytest.fail(f"check raised instead of reporting: {exc!r}")
    status, _lines = _check(d)
    assert status == (1 if report.errors else 0)
    if report.errors:
        with pytest.raises(StoreError):
            Store(d, runtime_dir=tmp / "run")
        return
    config = compile_dir(d, tmp / "s.mdb")
    with Snapshot(tmp / "s.mdb") as snap:
        assert sorted(snap.table_names()) == sorted(tables)
        assert snap.settings == config.settings
    Store(d, runtime_dir=tmp / "run").close()  # the daemon loads it


def test_a_table_with_errors_and_duplicates_is_reported_not_raised(tmp_path: Path) -> None:
    """Found by the fuzz test: the second pass that confirms a duplicate key read the
    table's own dbtext error as a sign the file had changed."""
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "pbx_settings").write_bytes(b"name(string) value(string,null)\n:\n1\n1\n")
    report = check_dir(d)  # raised the table's first error before
    null = "empty field (NULL) in column 'name', which is not null"
    assert [str(e) for e in report.errors] == [f"{d}/pbx_settings:2:1: {null}"]


def test_problems_are_capped_per_table(tmp_path: Path) -> None:
    """A million bad rows cost a page of messages, not a million: the first 50 of each
    table's schema errors (two a row here), and the count of the rest."""
    d = tmp_path / "cfg"
    d.mkdir()
    rows = "".join(f"{i}:{100 + i}:x:99999:1:1:1:1\n" for i in range(1, 121))
    header = "id(int,auto) name(string) host(string) port(int) enabled(int) register(int) "
    (d / "pbx_trunk").write_text(header + "register_expires(int) max_channels(int)\n" + rows)
    report = check_dir(d)
    assert len(report.errors) == 51
    assert str(report.errors[-1]) == f"{d}/pbx_trunk: 190 more errors not shown"
    assert "expected at most 65535" in str(report.errors[0])


def test_a_format_1_snapshot_still_opens(tmp_path: Path) -> None:
    """Devices upgraded from format 1 (each table's rows in one value) keep working
    until their next commit writes format 2."""
    import lmdb
    import msgpack

    compile_dir(FACTORY, tmp_path / "s.mdb")
    with Snapshot(tmp_path / "s.mdb") as snap:
        want = snap.table("subscriber")
    assert want is not None
    env = lmdb.open(str(tmp_path / "s.mdb"), subdir=False, max_dbs=16, lock=False)
    with env.begin(write=True) as txn:
        meta, tables = env.open_db(b"meta", txn=txn), env.open_db(b"tables", txn=txn)
        txn.put(b"format", msgpack.packb(1), db=meta)
        for key in [k for k, _v in txn.cursor(db=tables) if k.startswith(b"subscriber")]:
            txn.delete(key, db=tables)
        cols = [[c.name, c.type.value, c.null, c.auto] for c in want.columns]
        rows = [list(r) for r in want.rows]
        txn.put(b"subscriber", msgpack.packb({"c": cols, "r": rows}), db=tables)
    env.close()
    with Snapshot(tmp_path / "s.mdb") as snap:
        got = snap.table("subscriber")
        assert got is not None
        assert got.rows == want.rows
        assert "subscriber" in snap.table_names()
