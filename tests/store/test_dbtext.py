"""dbtext reader and writer: every shape loads, round-trips, and bad files fail with
the exact file:line:column message."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx_core.store import dbtext
from pbx_core.store.dbtext import Column, ColumnType, Table, format_table, parse_table
from pbx_core.store.errors import DbTextError, MultiError
from tests.fuzzing import fuzz_settings

VECTORS = Path(__file__).parent / "vectors"
KAMAILIO_TABLES = Path("/usr/share/kamailio/dbtext/kamailio")


def parse(text: str, name: str = "t") -> Table:
    return parse_table(text.encode(), name)


def error_of(text: str) -> str:
    with pytest.raises(DbTextError) as info:
        parse(text)
    return str(info.value)


# ------------------------------------------------------------------ shapes


def test_header_shapes() -> None:
    t = parse("id(int,auto) a(str) b(string,null) c(double) d(blob) e(time,null) f(integer)\n")
    assert [(c.name, c.type, c.null, c.auto) for c in t.columns] == [
        ("id", ColumnType.INT, False, True),
        ("a", ColumnType.STR, False, False),
        ("b", ColumnType.STRING, True, False),
        ("c", ColumnType.DOUBLE, False, False),
        ("d", ColumnType.BLOB, False, False),
        ("e", ColumnType.DATETIME, True, False),
        ("f", ColumnType.INT, False, False),
    ]
    assert t.rows == []


def test_header_kamailio_leniencies() -> None:
    # Kamailio skips spaces anywhere around definitions and needs none between them.
    t = parse("  a ( int , null )b(STRING)  \n")
    assert [(c.name, c.type, c.null) for c in t.columns] == [
        ("a", ColumnType.INT, True),
        ("b", ColumnType.STRING, False),
    ]


def test_type_words_by_first_letter_warn_when_unusual() -> None:
    t = parse("a(datetime) b(sometext) c(int,nullable)\n")
    assert [c.type for c in t.columns] == [ColumnType.DOUBLE, ColumnType.STR, ColumnType.INT]
    assert [str(w) for w in t.warnings] == [
        "t:1:3: type 'datetime' of 'a' is read as double (first letter d)",
        "t:1:15: unusual type word 'sometext' read as str",
        "t:1:31: attribute 'nullable' read as null",
    ]


def test_rows_values_escapes_nulls() -> None:
    t = parse(
        "id(int) name(str) q(double,null) note(string,null)\n"
        "1:nick:0.34:a\\tgood\\: friend\n"
        "\n"
        "-2:co\\\\le:-3.75:line\\nbreak\\r\\0end\n"
        "3:bob::\n"
        "4:x:7.:\n"
        "5:y:1\n"
    )
    assert t.rows == [
        (1, "nick", 0.34, "a\tgood: friend"),
        (-2, "co\\le", -3.75, "line\nbreak\r\0end"),
        (3, "bob", None, None),
        (4, "x", 7.0, None),
        (5, "y", 1.0, None),  # one field short: Kamailio reads the last column as NULL
    ]
    assert t.lines == [2, 4, 5, 6, 7]
    assert t.where(1, "note") == (4, 17)


def test_one_trailing_delimiter_tolerated() -> None:
    assert parse("a(int) b(str)\n1:x:\n").rows == [(1, "x")]
    assert error_of("a(int) b(str)\n1:x::\n") == "t:2:4: too many fields: the header has 2 columns"


def test_auto_column_fills_nulls_like_kamailio() -> None:
    t = parse("id(int,auto) v(str)\n:a\n7:b\n:c\n")
    assert t.rows == [(1, "a"), (7, "b"), (2, "c")]


def test_last_row_without_newline_loads_with_warning() -> None:
    t = parse("a(int)\n1\n2")
    assert t.rows == [(1,), (2,)]
    assert [str(w) for w in t.warnings] == [
        "t:3:2: last row has no newline: Kamailio ignores such a row"
    ]


def test_utf8_values() -> None:
    assert parse("n(str)\nMüller ☎\n").rows == [("Müller ☎",)]


# ------------------------------------------------------------------ errors

INT_A = "expected an integer in column 'a': digits with an optional '-'"
NUM_B = "expected a number in column 'b': digits with an optional '-' and '.', no exponent"
ERRORS = [
    ("", "t:1:1: empty file: expected a header line"),
    ("a(int)", "t:1:7: header line must end with a newline"),
    ("\n", "t:1:1: empty header: expected column definitions like name(type)"),
    ("a(int) b(str)\r\n", "t:1:14: header ends with CR: dbtext lines end with LF, not CRLF"),
    ("a(int)\r\n", "t:1:7: header ends with CR: dbtext lines end with LF, not CRLF"),
    ("a b(int)\n", "t:1:3: expected '(' and a type after column name 'a'"),
    ("(int)\n", "t:1:1: expected a column name before '('"),
    ("a(x)\n", "t:1:3: expected a type for column 'a': int, double, str, string, blob or time"),
    ("a(int\n", "t:1:6: expected ')' to close column 'a'"),
    ("a(int,null\n", "t:1:11: expected ')' to close column 'a'"),
    ("a(int,)\n", "t:1:7: expected 'null' or 'auto' after ',' in column 'a'"),
    ("a(str,auto)\n", "t:1:7: auto column 'a' must be int, not str"),
    ("a(int,auto) b(int,auto)\n", "t:1:19: second auto column 'b': a table has at most one"),
    ("a(int) a(str)\n", "t:1:8: duplicate column 'a'"),
    (
        "a(int) b(str)\nx:1\n",
        "t:2:1: expected an integer in column 'a': digits with an optional '-'",
    ),
    (
        "a(int) b(str)\n1-:1\n",
        "t:2:2: expected an integer in column 'a': digits with an optional '-'",
    ),
    (
        "a(int) b(str)\n-:1\n",
        "t:2:2: expected an integer in column 'a': digits with an optional '-'",
    ),
    (
        "a(str) b(int)\nx:1\r\n",
        "t:2:4: expected an integer in column 'b': digits with an optional '-'"
        " (CRLF line endings?)",
    ),
    (
        "a(int) b(double)\n1:1e5\n",
        "t:2:4: " + NUM_B,
    ),
    (
        "a(int) b(double)\n1:.5\n",
        "t:2:3: " + NUM_B,
    ),
    ("a(int)\n2147483648\n", "t:2:1: integer out of range in column 'a': -2147483648..2147483647"),
    ("a(str) b(int)\n:1\n", "t:2:1: empty field (NULL) in column 'a', which is not null"),
    ("a(str) b(str) c(str)\nx\n", "t:2:2: row has 1 fields, expected 3 (missing b, c)"),
    ("a(str)\nx\\q\n", "t:2:2: invalid escape '\\q': expected one of \\: \\\\ \\n \\r \\t \\0"),
    ("a(str)\nab\\\n", "t:2:3: backslash at end of line: nothing to escape"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_malformed_exact_message(text: str, message: str) -> None:
    assert error_of(text) == message


def test_not_utf8() -> None:
    with pytest.raises(DbTextError) as info:
        parse_table(b"a(str)\nab\xff\n", "t")
    assert str(info.value) == "t:2:3: not valid UTF-8 text"


def test_all_row_errors_reported_and_table_never_half_loaded() -> None:
    with pytest.raises(MultiError) as info:
        parse("a(int) b(str)\n1:ok\nx:1\n2:fine\n3:a\\z\n")
    assert [str(e) for e in info.value.errors] == [
        "t:3:1: expected an integer in column 'a': digits with an optional '-'",
        "t:5:4: invalid escape '\\z': expected one of \\: \\\\ \\n \\r \\t \\0",
    ]
    assert str(info.value).endswith("(and 1 more)")


def test_load_dir_leaves_out_bad_tables(tmp_path: Path) -> None:
    (tmp_path / "good").write_text("a(int)\n1\n")
    (tmp_path / "bad").write_text("a(int)\nx\n")
    (tmp_path / ".hidden").write_text("garbage")
    loaded = dbtext.load_dir(tmp_path)
    assert list(loaded.tables) == ["good"]
    assert [str(e) for e in loaded.errors] == [
        f"{tmp_path}/bad:2:1: expected an integer in column 'a': digits with an optional '-'"
    ]


# ------------------------------------------------------------------ vectors and round trip


def _vector_files() -> list[Path]:
    return sorted(p for p in VECTORS.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", _vector_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_vectors_round_trip(path: Path, tmp_path: Path) -> None:
    t = dbtext.read_table(path)
    dbtext.write_table(tmp_path, t)
    again = dbtext.read_table(tmp_path / path.name)
    assert again.columns == t.columns
    assert again.rows == t.rows
    assert format_table(again) == format_table(t)


@pytest.mark.skipif(not KAMAILIO_TABLES.is_dir(), reason="Kamailio's dbtext tables not installed")
def test_every_kamailio_shipped_table_loads_and_round_trips() -> None:
    tables = dbtext.read_dir(KAMAILIO_TABLES)
    assert len(tables) > 50
    for t in tables.values():
        text = format_table(t)
        assert parse(text, t.name).rows == t.rows
    assert (0, "subscriber", 7) in tables["version"].rows


def test_writer_escapes_and_canonical_header() -> None:
    t = Table(
        "x",
        (
            Column("id", ColumnType.INT, auto=True),
            Column("s", ColumnType.STRING, null=True),
            Column("d", ColumnType.DOUBLE),
            Column("t", ColumnType.DATETIME),
        ),
        [(1, "a:b\\c\nd\te\rf\0", 2.5, 1700000000), (2, None, -0.001, 0)],
    )
    text = format_table(t)
    assert text == (
        "id(int,auto) s(string,null) d(double) t(time)\n"
        "1:a\\:b\\\\c\\nd\\te\\rf\\0:2.50:1700000000\n"
        "2::-0.00:0\n"
    )
    assert parse(text, "x").rows == [(1, "a:b\\c\nd\te\rf\0", 2.5, 1700000000), (2, None, -0.0, 0)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "x:2: column 'v': None in a column that is not null"),
        (
            "",
            "x:2: column 'v': dbtext cannot store an empty string"
            " (it reads back as NULL); use None",
        ),
        (1, "x:2: column 'v': expected str, got int"),
    ],
)
def test_writer_refuses_what_would_not_read_back(value: object, message: str) -> None:
    t = Table("x", (Column("v", ColumnType.STR),), [(value,)])  # type: ignore[list-item]
    with pytest.raises(DbTextError) as info:
        format_table(t)
    assert str(info.value) == message


def test_write_table_writes_nothing_on_bad_value(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("v(int)\n1\n")
    bad = Table("x", (Column("v", ColumnType.INT),), [(1,), (2**40,)])
    with pytest.raises(DbTextError):
        dbtext.write_table(tmp_path, bad)
    assert (tmp_path / "x").read_text() == "v(int)\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


# ------------------------------------------------------------------ properties

_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
_cols = st.lists(
    st.sampled_from(
        [
            (ColumnType.INT, st.integers(dbtext.INT_MIN, dbtext.INT_MAX)),
            (ColumnType.STRING, _text),
            (ColumnType.STR, _text),
            (ColumnType.BLOB, _text),
            (ColumnType.DATETIME, st.integers(0, dbtext.INT_MAX)),
            (ColumnType.DOUBLE, st.integers(-(10**9), 10**9).map(lambda c: c / 100)),
        ]
    ),
    min_size=1,
    max_size=6,
)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    kinds = draw(_cols)
    nulls = [draw(st.booleans()) for _ in kinds]
    columns = tuple(
        Column(f"c{i}", k[0], null=n) for i, (k, n) in enumerate(zip(kinds, nulls, strict=True))
    )
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = []
        for (_kind, values), col in zip(kinds, columns, strict=True):
            if col.null and draw(st.booleans()):
                row.append(None)
            else:
                row.append(draw(values))
        rows.append(tuple(row))
    return Table("t", columns, rows)


@settings(max_examples=150, deadline=None)
@given(tables())
def test_parse_of_format_is_identity(t: Table) -> None:
    back = parse_table(format_table(t).encode(), "t")
    assert back.columns == t.columns
    assert back.rows == t.rows


_alphabet = st.sampled_from([*list("ab1-:.\\\n\r ()ntis,"), "(int)", "(str,null)", "\\:", "é"])


@pytest.mark.fuzz
@fuzz_settings(400)
@given(st.lists(_alphabet, max_size=60).map("".join))
def test_fuzz_only_dbtext_errors_escape(text: str) -> None:
    try:
        t = parse_table(text.encode(), "f")
    except DbTextError:
        return
    assert all(len(r) == len(t.columns) for r in t.rows)


@pytest.mark.fuzz
@fuzz_settings(200)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(DbTextError):
        parse_table(b"a(int) b(str,null) c(double,null)\n" + data, "f")
