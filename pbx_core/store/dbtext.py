"""dbtext tables: the text format of SER's and Kamailio's db_text module.

Theory of operation. Kamailio's loader (src/modules/db_text/dbt_file.c,
`dbt_load_file`) is a character state machine; this module accepts exactly the files
it accepts and reads the same values, with a few deliberate differences listed under
"Stricter than Kamailio" in README.md (each one is a file Kamailio would load with
silently wrong content).

* The first line is the header: column definitions `name(type)`, `name(type,null)` or
  `name(int,auto)`. Kamailio skips spaces around them, picks the type by the first
  letter of the type word (i int, d double, s str, b blob, t time) and turns `str`
  into `string` when the word contains an `i`. The attribute is picked by its first
  letter too (n null; a auto, on one int column only). A CR before the header's LF
  becomes part of a column name and fails: CRLF files are rejected.
* Every other non-empty line is a row. Fields are separated by `:`; inside strings
  `\\:` `\\\\` `\\n` `\\r` `\\t` `\\0` are escapes and any other escape is an error.
  An empty field is NULL (an error in a column without `null`, except the auto column,
  which then takes the next counter value). One trailing `:` is tolerated.
* Kamailio only appends a row when it sees the newline after it, so a last row
  without one is silently dropped; we load it and warn.
* Ints are `-?[0-9]+` (C int, 32 bits); doubles `-?[0-9]+(\\.[0-9]*)?` without
  exponent, written back with two decimals (`%.2f`).
"""

from __future__ import annotations

import enum
import errno
import io
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pbx_core.store.errors import DbTextError, raise_all

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
MAX_ERRORS_PER_FILE = 50

Value = int | float | str | None


class ColumnType(enum.Enum):
    """A column type; the value is the word Kamailio's writer prints."""

    INT = "int"
    DOUBLE = "double"
    STR = "str"
    STRING = "string"
    BLOB = "blob"
    DATETIME = "time"

    @property
    def is_text(self) -> bool:
        return self in (ColumnType.STR, ColumnType.STRING, ColumnType.BLOB)

    @property
    def is_int(self) -> bool:
        return self in (ColumnType.INT, ColumnType.DATETIME)


_TYPE_BY_LETTER = {
    "i": ColumnType.INT,
    "d": ColumnType.DOUBLE,
    "s": ColumnType.STR,
    "b": ColumnType.BLOB,
    "t": ColumnType.DATETIME,
}
# Type words seen in SER and Kamailio table files; others load but get a warning.
_USUAL_TYPE_WORDS = {"int", "integer", "double", "str", "string", "blob", "time"}

_INT_RE = re.compile(r"-?[0-9]+")
_DOUBLE_RE = re.compile(r"-?[0-9]+(?:\.[0-9]*)?")
_UNESCAPE = {":": ":", "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}
_ESCAPE_RE = re.compile(r"[\\:\n\r\t\0]")
_ESCAPE = {"\\": "\\\\", ":": "\\:", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
_VALID_ESCAPES = "\\: \\\\ \\n \\r \\t \\0"


@dataclass(frozen=True)
class Column:
    """One column of a table header. `pos` is its 1-based column in the header line."""

    name: str
    type: ColumnType
    null: bool = False
    auto: bool = False
    pos: int = field(default=0, compare=False)

    def definition(self) -> str:
        attr = ",null" if self.null else ",auto" if self.auto else ""
        return f"{self.name}({self.type.value}{attr})"


@dataclass
class Table:
    """A loaded table: its columns and rows, plus where each row came from.

    `lines[i]` is the 1-based source line of `rows[i]` and `starts[i]` the 1-based
    column where each of its fields starts; both are empty for tables built in code.
    """

    name: str
    columns: tuple[Column, ...]
    rows: list[tuple[Value, ...]] = field(default_factory=list)
    file: str = ""
    lines: list[int] = field(default_factory=list, compare=False, repr=False)
    starts: list[tuple[int, ...]] = field(default_factory=list, compare=False, repr=False)
    warnings: list[DbTextError] = field(default_factory=list, compare=False, repr=False)

    def index(self, column: str) -> int:
        for i, col in enumerate(self.columns):
            if col.name == column:
                return i
        raise KeyError(column)

    def has(self, column: str) -> bool:
        return any(col.name == column for col in self.columns)

    def where(self, row: int, column: str | None = None) -> tuple[int, int]:
        """(line, column) of a row, or of one of its fields, for messages."""
        if row >= len(self.lines):
            return (0, 0)
        if column is None or not self.has(column):
            return (self.lines[row], 0)
        return (self.lines[row], self.starts[row][self.index(column)])

    def error(self, row: int, column: str | None, message: str) -> DbTextError:
        line, col = self.where(row, column)
        return DbTextError(self.file or self.name, line, col, message)

    def records(self) -> Iterator[tuple[int, dict[str, Value]]]:
        names = [c.name for c in self.columns]
        for i, row in enumerate(self.rows):
            yield i, dict(zip(names, row, strict=True))

    def iter_rows(self) -> Iterator[Row]:
        """Each row with where it came from (as `TableFile.iter_rows`)."""
        file = self.file or self.name
        for i, row in enumerate(self.rows):
            line = self.lines[i] if i < len(self.lines) else 0
            starts = self.starts[i] if i < len(self.starts) else ()
            yield RowRef(file, line, starts, self.columns, i), row


# --------------------------------------------------------------------------- reading


def parse_header(header: str, file: str) -> tuple[tuple[Column, ...], list[DbTextError]]:
    """Parse the header line (without its LF) as dbt_load_file's first state does."""
    warnings: list[DbTextError] = []

    def err(i: int, message: str) -> DbTextError:
        return DbTextError(file, 1, i + 1, message)

    cols: list[Column] = []
    names: set[str] = set()
    have_auto = False
    n = len(header)
    i = 0
    while True:
        while i < n and header[i] == " ":
            i += 1
        if i == n:
            if not cols:
                raise err(i, "empty header: expected column definitions like name(type)")
            break
        if header[i] == "\r" and i == n - 1:
            raise err(i, "header ends with CR: dbtext lines end with LF, not CRLF")
        start = i
        while i < n and header[i] not in " (":
            i += 1
        name = header[start:i]
        if not name:
            raise err(i, "expected a column name before '('")
        while i < n and header[i] == " ":
            i += 1
        if i == n or header[i] != "(":
            if "\r" in name:
                raise err(start, "header ends with CR: dbtext lines end with LF, not CRLF")
            raise err(i, f"expected '(' and a type after column name {name!r}")
        i += 1
        while i < n and header[i] == " ":
            i += 1
        if i == n or header[i].lower() not in _TYPE_BY_LETTER:
            raise err(
                i,
                f"expected a type for column {name!r}: int, double, str, string, blob or time",
            )
        ctype = _TYPE_BY_LETTER[header[i].lower()]
        tstart = i
        while i < n and header[i] not in "),":
            if ctype is ColumnType.STR and header[i] in "iI":
                ctype = ColumnType.STRING
            i += 1
        word = header[tstart:i].strip()
        if word.lower() == "datetime":
            warnings.append(
                err(tstart, f"type 'datetime' of {name!r} is read as double (first letter d)")
            )
        elif word.lower() not in _USUAL_TYPE_WORDS:
            warnings.append(err(tstart, f"unusual type word {word!r} read as {ctype.value}"))
        null = auto = False
        if i < n and header[i] == ",":
            i += 1
            while i < n and header[i] == " ":
                i += 1
            c = header[i].lower() if i < n else ""
            if c == "n":
                null = True
            elif c == "a" and ctype is ColumnType.INT and not have_auto:
                auto = have_auto = True
            elif c == "a" and ctype is ColumnType.INT:
                raise err(i, f"second auto column {name!r}: a table has at most one")
            elif c == "a":
                raise err(i, f"auto column {name!r} must be int, not {ctype.value}")
            else:
                raise err(i, f"expected 'null' or 'auto' after ',' in column {name!r}")
            astart = i
            while i < n and header[i] != ")":
                i += 1
            attr = header[astart:i].strip()
            if attr.lower() not in ("null", "auto"):
                meaning = "null" if null else "auto"
                warnings.append(err(astart, f"attribute {attr!r} read as {meaning}"))
        if i == n:
            raise err(i, f"expected ')' to close column {name!r}")
        if name in names:
            raise err(start, f"duplicate column {name!r}")
        names.add(name)
        cols.append(Column(name, ctype, null, auto, start + 1))
        i += 1
    return tuple(cols), warnings


def _split_fields(line: str) -> tuple[list[str], list[int]] | int:
    """Split a row at unescaped ':'; returns (raw fields, 0-based starts) or the
    0-based offset of a backslash that ends the line."""
    if "\\" not in line:
        parts = line.split(":")
        starts = [0]
        for p in parts[:-1]:
            starts.append(starts[-1] + len(p) + 1)
        return parts, starts
    parts = []
    starts = [0]
    begin = 0
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            if i + 1 == n:
                return i
            i += 2
            continue
        if c == ":":
            parts.append(line[begin:i])
            begin = i + 1
            starts.append(begin)
        i += 1
    parts.append(line[begin:])
    return parts, starts


def _unescape(raw: str) -> str | int:
    """The value of a string field, or the offset of a bad escape in it."""
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        j = raw.find("\\", i)
        if j < 0:
            out.append(raw[i:])
            break
        out.append(raw[i:j])
        nxt = raw[j + 1] if j + 1 < n else ""
        if nxt not in _UNESCAPE:
            return j
        out.append(_UNESCAPE[nxt])
        i = j + 2
    return "".join(out)


def _bad_char(raw: str, pattern: re.Pattern[str]) -> int:
    """Offset of the first character where `raw` stops matching a number pattern."""
    m = pattern.match(raw)
    if m is None:
        return 1 if raw.startswith("-") else 0
    return m.end()


def _parse_row(
    columns: Sequence[Column],
    parts: Sequence[str],
    starts: Sequence[int],
    *,
    fname: str,
    lineno: int,
    auto_counter: int,
) -> tuple[Value, ...] | DbTextError:
    """Convert the raw fields of one row, or say what is wrong with the first bad one."""
    row: list[Value] = []
    for col, raw, start in zip(columns, parts, starts, strict=True):
        where = start + 1
        value: Value
        if raw == "":
            if col.null:
                value = None
            elif col.auto:
                value = auto_counter + 1
            else:
                return DbTextError(
                    fname,
                    lineno,
                    where,
                    f"empty field (NULL) in column {col.name!r}, which is not null",
                )
        elif col.type.is_int:
            if _INT_RE.fullmatch(raw) is None:
                off = _bad_char(raw, _INT_RE)
                return DbTextError(
                    fname,
                    lineno,
                    where + off,
                    f"expected an integer in column {col.name!r}: digits with an optional '-'"
                    + _crlf_hint(raw, off),
                )
            value = int(raw)
            if not INT_MIN <= value <= INT_MAX:
                return DbTextError(
                    fname,
                    lineno,
                    where,
                    f"integer out of range in column {col.name!r}: {INT_MIN}..{INT_MAX}",
                )
        elif col.type is ColumnType.DOUBLE:
            if _DOUBLE_RE.fullmatch(raw) is None:
                off = _bad_char(raw, _DOUBLE_RE)
                return DbTextError(
                    fname,
                    lineno,
                    where + off,
                    f"expected a number in column {col.name!r}: digits with an optional '-' "
                    "and '.', no exponent" + _crlf_hint(raw, off),
                )
            value = float(raw)
            if math.isinf(value):
                return DbTextError(fname, lineno, where, f"number too large in {col.name!r}")
        elif "\\" in raw:
            un = _unescape(raw)
            if isinstance(un, int):
                bad = raw[un + 1 : un + 2]
                return DbTextError(
                    fname,
                    lineno,
                    where + un,
                    f"invalid escape '\\{bad}': expected one of {_VALID_ESCAPES}",
                )
            value = un
        else:
            value = raw
        row.append(value)
    return tuple(row)


def _crlf_hint(raw: str, off: int) -> str:
    return " (CRLF line endings?)" if raw[off : off + 1] == "\r" else ""


MAX_LINE = 1 << 20  # bytes in one line: a row (or header) longer than this is an error


@dataclass(frozen=True, slots=True)
class RowRef:
    """Where a row came from, for messages: file, 1-based line (0 for tables built in
    code), the 1-based column where each field starts, and its index among the rows."""

    file: str
    line: int
    starts: tuple[int, ...]
    columns: tuple[Column, ...]
    index: int

    def error(self, column: str | None, message: str) -> DbTextError:
        col = 0
        if column is not None and self.starts:
            for i, c in enumerate(self.columns):
                if c.name == column:
                    col = self.starts[i]
        return DbTextError(self.file, self.line, col, message)


Row = tuple[RowRef, tuple[Value, ...]]


def _decode(raw: bytes, fname: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        col = len(raw[: e.start].decode("utf-8", "replace")) + 1
        raise DbTextError(fname, lineno, col, "not valid UTF-8 text") from None


class _Lines:
    """The lines of a binary stream, each at most MAX_LINE bytes: (number, text
    without its LF, had an LF) or a DbTextError for a line that is not UTF-8 or is
    too long (the rest of it is skipped)."""

    def __init__(self, f: BinaryIO, fname: str) -> None:
        self.f = f
        self.fname = fname
        self.lineno = 0

    def next(self) -> tuple[str, bool] | DbTextError | None:
        raw = self.f.readline(MAX_LINE + 1)
        if not raw:
            return None
        self.lineno += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = self.f.readline(MAX_LINE)
            return DbTextError(self.fname, self.lineno, 0, f"line longer than {MAX_LINE} bytes")
        newline = raw.endswith(b"\n")
        try:
            return _decode(raw[:-1] if newline else raw, self.fname, self.lineno), newline
        except DbTextError as e:
            return e


class _Reader:
    """One pass over a table file: the header at construction, then `rows()` yields
    every good row and keeps the problems in `errors` (at most MAX_ERRORS_PER_FILE)
    and `warnings`. Memory is one line at a time."""

    def __init__(self, f: BinaryIO, fname: str) -> None:
        self.fname = fname
        self.lines = _Lines(f, fname)
        self.errors: list[DbTextError] = []
        self.warnings: list[DbTextError] = []
        first = self.lines.next()
        if isinstance(first, DbTextError):
            raise first
        if first is None:
            raise DbTextError(fname, 1, 1, "empty file: expected a header line")
        header, newline = first
        if not newline:
            raise DbTextError(fname, 1, len(header) + 1, "header line must end with a newline")
        self.columns, self.warnings = parse_header(header, fname)

    def rows(self) -> Iterator[Row]:
        fname, columns, errors = self.fname, self.columns, self.errors
        ncols = len(columns)
        auto_counter = 0
        auto_idx = next((i for i, c in enumerate(columns) if c.auto), None)
        index = 0
        while len(errors) < MAX_ERRORS_PER_FILE:
            got = self.lines.next()
            if got is None:
                return
            lineno = self.lines.lineno
            if isinstance(got, DbTextError):
                errors.append(got)
                continue
            rowtext, newline = got
            if not rowtext:
                continue
            if not newline:
                self.warnings.append(
                    DbTextError(
                        fname,
                        lineno,
                        len(rowtext) + 1,
                        "last row has no newline: Kamailio ignores such a row",
                    )
                )
            split = _split_fields(rowtext)
            if isinstance(split, int):
                errors.append(
                    DbTextError(
                        fname, lineno, split + 1, "backslash at end of line: nothing to escape"
                    )
                )
                continue
            parts, starts = split
            if len(parts) == ncols + 1 and parts[-1] == "":
                parts.pop()  # one trailing delimiter
                starts.pop()
            elif len(parts) == ncols - 1:
                # Kamailio reads a row one field short as NULL in the last column.
                parts.append("")
                starts.append(len(rowtext))
            if len(parts) > ncols:
                errors.append(
                    DbTextError(
                        fname,
                        lineno,
                        starts[ncols],
                        f"too many fields: the header has {ncols} columns",
                    )
                )
                continue
            if len(parts) < ncols:
                errors.append(
                    DbTextError(
                        fname,
                        lineno,
                        len(rowtext) + 1,
                        f"row has {len(parts)} fields, expected {ncols}"
                        f" (missing {', '.join(c.name for c in columns[len(parts) :])})",
                    )
                )
                continue
            row = _parse_row(
                columns, parts, starts, fname=fname, lineno=lineno, auto_counter=auto_counter
            )
            if isinstance(row, DbTextError):
                errors.append(row)
                continue
            if auto_idx is not None and parts[auto_idx] == "":
                auto_counter += 1
            yield RowRef(fname, lineno, tuple(s + 1 for s in starts), columns, index), row
            index += 1
        lineno = self.lines.lineno
        errors.append(DbTextError(fname, lineno, 0, "too many errors; stopped checking"))


def _collect(reader: _Reader, name: str) -> Table:
    table = Table(name, reader.columns, file=reader.fname, warnings=reader.warnings)
    for ref, row in reader.rows():
        table.rows.append(row)
        table.lines.append(ref.line)
        table.starts.append(ref.starts)
    raise_all(reader.errors)
    return table


def parse_table(data: bytes, name: str, file: str | None = None) -> Table:
    """Parse one table file. Raises `DbTextError` (all problems of the file at once
    as `MultiError`): a table with an error is never returned in part."""
    fname = file if file is not None else name
    return _collect(_Reader(io.BytesIO(data), fname), name)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_table_file(path: str | os.PathLike[str]) -> tuple[BinaryIO, os.stat_result]:
    """Open a table file for reading, refusing (with the file name) whatever is not a
    regular file: a directory, a symbolic link loop or a broken link, a FIFO (reading
    it would block), a device. A link to a regular file is followed."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            message = "symbolic link loop, not a table file"
        elif e.errno == errno.ENOENT and p.is_symlink():
            message = "broken symbolic link, not a table file"
        else:
            message = f"cannot read: {e.strerror}"
        raise DbTextError(str(p), 0, 0, message) from None
    if not stat.S_ISREG(st.st_mode):
        raise DbTextError(str(p), 0, 0, f"{_kind(st.st_mode)}, not a table file")
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise DbTextError(str(p), 0, 0, f"cannot read: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped since the stat
        os.close(fd)
        raise DbTextError(str(p), 0, 0, f"{_kind(st.st_mode)}, not a table file")
    return os.fdopen(fd, "rb"), st


def read_table(path: str | os.PathLike[str], name: str | None = None) -> Table:
    """Read one table file; its name is the file name unless given."""
    p = Path(path)
    f, _st = open_table_file(p)
    try:
        with f:
            return _collect(_Reader(f, str(p)), name or p.name)
    except OSError as e:
        raise DbTextError(str(p), 0, 0, f"cannot read: {e.strerror}") from None


class TableFile:
    """A table file read row by row, never whole: `rows()` may be called again for
    another pass (memory is one row). The first pass finds the file's problems
    (`errors`, `warnings`); a later pass over a file that changed meanwhile raises."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.file = str(self.path)
        f, st = open_table_file(self.path)
        self._id = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with f:
            reader = self._reader(f)
        self.columns = reader.columns
        self.warnings = list(reader.warnings)
        self.errors: list[DbTextError] = []
        self._passes = 0

    def _reader(self, f: BinaryIO) -> _Reader:
        try:
            return _Reader(f, self.file)
        except OSError as e:
            raise DbTextError(self.file, 0, 0, f"cannot read: {e.strerror}") from None

    def has(self, column: str) -> bool:
        return any(c.name == column for c in self.columns)

    def iter_rows(self) -> Iterator[Row]:
        f, st = open_table_file(self.path)
        with f:
            if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._id:
                raise DbTextError(self.file, 0, 0, "changed while being read: check it again")
            reader = self._reader(f)
            first = self._passes == 0
            self._passes += 1
            try:
                yield from reader.rows()
            except OSError as e:
                raise DbTextError(self.file, 0, 0, f"cannot read: {e.strerror}") from None
        if first:
            self.errors = reader.errors
            self.warnings += reader.warnings
        elif reader.errors != self.errors:  # the same file reads the same
            raise DbTextError(self.file, 0, 0, "changed while being read: check it again")

    def load(self) -> Table:
        """The whole table in memory (for the tables a snapshot keeps)."""
        table = Table(self.name, self.columns, file=self.file)
        for ref, row in self.iter_rows():
            table.rows.append(row)
            table.lines.append(ref.line)
            table.starts.append(ref.starts)
        raise_all(self.errors)
        return table


def table_entries(directory: str | os.PathLike[str]) -> list[Path]:
    """Every entry of a table directory not starting with '.', sorted: each must be
    a table file (`open_table_file` says why one is not)."""
    d = Path(directory)
    try:
        return sorted(p for p in d.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DbTextError(str(d), 0, 0, f"cannot read directory: {e.strerror}") from None


def table_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The regular files among `table_entries`."""
    return [p for p in table_entries(directory) if p.is_file()]


@dataclass
class DirLoad:
    """What `load_dir` found: the tables that loaded, and every problem."""

    tables: dict[str, Table]
    errors: list[DbTextError]
    warnings: list[DbTextError]


def load_dir(directory: str | os.PathLike[str]) -> DirLoad:
    """Read every table file of a directory, collecting errors instead of raising;
    a table with an error is left out of `tables` entirely. A directory without
    tables is an error: there is nothing to serve."""
    result = DirLoad({}, [], [])
    entries = table_entries(directory)
    if not entries:
        result.errors.append(DbTextError(str(directory), 0, 0, "no tables: an empty directory"))
    for p in entries:
        try:
            table = read_table(p)
        except DbTextError as e:
            result.errors.extend(getattr(e, "errors", (e,)))
            continue
        result.tables[table.name] = table
        result.warnings.extend(table.warnings)
    return result


def read_dir(directory: str | os.PathLike[str]) -> dict[str, Table]:
    """Read every table of a directory; raise all errors if there is any."""
    result = load_dir(directory)
    raise_all(result.errors)
    return result.tables


# --------------------------------------------------------------------------- writing


def _check_name(name: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\0" in name or name in ("..",):
        raise DbTextError(name or "<table>", 0, 0, "invalid table name: it is a file name")


def format_value(col: Column, value: Value, where: str, rowno: int) -> str:
    """One field as Kamailio's dbt_print_table writes it."""

    def bad(message: str) -> DbTextError:
        return DbTextError(where, rowno, col.pos, f"column {col.name!r}: {message}")

    if value is None:
        if not col.null:
            raise bad("None in a column that is not null")
        return ""
    if col.type.is_int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"expected int, got {type(value).__name__}")
        if not INT_MIN <= value <= INT_MAX:
            raise bad(f"integer out of range {INT_MIN}..{INT_MAX}")
        return str(value)
    if col.type is ColumnType.DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(f"expected float, got {type(value).__name__}")
        if not math.isfinite(value):
            raise bad("not a finite number")
        return f"{value:.2f}"
    if not isinstance(value, str):
        raise bad(f"expected str, got {type(value).__name__}")
    if value == "":
        raise bad("dbtext cannot store an empty string (it reads back as NULL); use None")
    return _ESCAPE_RE.sub(lambda m: _ESCAPE[m.group()], value)


def format_header(columns: Sequence[Column]) -> str:
    return " ".join(c.definition() for c in columns) + "\n"


def format_table(table: Table) -> str:
    """The whole file; raises `DbTextError` before producing anything if a value
    cannot be written so that it reads back the same."""
    _check_name(table.name)
    if not table.columns:
        raise DbTextError(table.name, 0, 0, "a table needs at least one column")
    seen: set[str] = set()
    autos = 0
    for col in table.columns:
        if not col.name or any(ch in col.name for ch in " (\n\r") or col.name in seen:
            raise DbTextError(table.name, 1, 0, f"invalid or duplicate column name {col.name!r}")
        if col.auto and (col.type is not ColumnType.INT or col.null):
            raise DbTextError(table.name, 1, 0, f"auto column {col.name!r} must be int, not null")
        autos += col.auto
        seen.add(col.name)
    if autos > 1:
        raise DbTextError(table.name, 1, 0, "a table has at most one auto column")
    out = [format_header(table.columns)]
    for k, row in enumerate(table.rows):
        out.append(format_row(table.columns, row, table.name, k + 2))
    return "".join(out)


def format_row(columns: Sequence[Column], row: Sequence[Value], name: str, lineno: int) -> str:
    """One row's line, with its LF."""
    if len(row) != len(columns):
        raise DbTextError(name, lineno, 0, f"row has {len(row)} values, expected {len(columns)}")
    line = ":".join(format_value(c, v, name, lineno) for c, v in zip(columns, row, strict=True))
    # An empty line is skipped as blank: a lone NULL is written as one trailing ':'.
    return (line or ":") + "\n"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write via a temporary file and rename(2): readers see old or new, whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)


def write_table(directory: str | os.PathLike[str], table: Table, *, sync: bool = True) -> Path:
    """Write one table file atomically; nothing is written if a value is invalid."""
    data = format_table(table).encode("utf-8")
    path = Path(directory) / table.name
    try:
        write_file_atomic(path, data, sync=sync)
    except OSError as e:
        raise DbTextError(str(path), 0, 0, f"cannot write: {e.strerror}") from None
    return path


def write_tables(
    directory: str | os.PathLike[str], tables: Iterable[Table], *, sync: bool = True
) -> None:
    for t in tables:
        write_table(directory, t, sync=sync)
