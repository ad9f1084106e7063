"""Staged configuration editing, in the spirit of OpenWrt's uci.

The console edits a copy of the tables in RAM; nothing reaches /data until `commit`,
which hands the whole set to the store's `Generations.commit` (checked first, written
atomically, the daemon reloads it). `revert` drops the copy. Every change is checked
against the table's schema before it is accepted: a bad command changes nothing.
Cross-table rules (a DID naming an unknown extension, ...) are checked at commit.

Addressing (see README.md):

    TABLE                      a whole table
    TABLE[KEY]                 a row by its key columns, comma separated; a prefix of
                               the key is enough when it names one row: subscriber[101]
    TABLE[@N]                  the N-th row (1-based)
    TABLE[...].COLUMN          one value
    settings.NAME              the value of a pbx_settings row (absent = its default)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pbx_core.console import auth
from pbx_core.store import schema as sch
from pbx_core.store.dbtext import Column, ColumnType, Table, Value, format_table, parse_table
from pbx_core.store.errors import DbTextError, StoreError

_PATH = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[([^\]]*)\])?(?:\.([A-Za-z_][A-Za-z0-9_]*))?")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SETTINGS = "settings"
HIDDEN = "********"


class ConfigError(Exception):
    """A command that cannot be done; the message says why. Nothing was changed."""


@dataclass(frozen=True)
class Path:
    table: str
    selector: str | None
    column: str | None

    @property
    def is_setting(self) -> bool:
        return self.table == SETTINGS


def parse_path(text: str) -> Path:
    m = _PATH.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"bad path {text!r}: expected TABLE[KEY].COLUMN or settings.NAME")
    table, sel, col = m.groups()
    if table == SETTINGS and (sel is not None or col is None):
        raise ConfigError(f"bad path {text!r}: settings are addressed as settings.NAME")
    return Path(table, sel, col)


def schema_named(name: str, table: Table | None = None) -> sch.TableSchema | None:
    if table is not None:
        return sch.schema_for(table)
    for s in sch.SCHEMAS:  # a new table: Kamailio's shape for the shared names
        if s.name == name and s.dialect in ("kamailio", "pbx"):
            return s
    return None


def copy_table(t: Table) -> Table:
    return Table(t.name, t.columns, list(t.rows), file=t.name)


def convert(col: Column, text: str) -> Value:
    """A typed value from what the user typed; empty is NULL."""
    if text == "":
        if not col.null and not col.auto:
            raise ConfigError(f"column {col.name!r} cannot be empty")
        return None
    if col.type.is_int:
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ConfigError(f"column {col.name!r} takes an integer, not {text!r}")
        return int(text)
    if col.type is ColumnType.DOUBLE:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"column {col.name!r} takes a number, not {text!r}") from None
    if not text.isprintable():
        raise ConfigError(f"column {col.name!r}: control characters are not allowed")
    return text


def shown(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class Staging:
    """The tables being edited. `load` gives the committed tables (a fresh copy)."""

    def __init__(self, load: Callable[[], dict[str, Table]]) -> None:
        self.load = load
        self.base: dict[str, Table] = {}
        self.tables: dict[str, Table] = {}
        self.revert()

    # ------------------------------------------------------------------ state
    def revert(self) -> None:
        self.base = {n: copy_table(t) for n, t in self.load().items()}
        self.tables = {n: copy_table(t) for n, t in self.base.items()}

    def committed(self) -> None:
        """The staged tables are now the committed ones."""
        self.base = {n: copy_table(t) for n, t in self.tables.items()}

    def replace_all(self, tables: Mapping[str, Table]) -> None:
        self.tables = {n: copy_table(t) for n, t in tables.items()}

    @property
    def dirty(self) -> bool:
        return self.changes() != []

    def changes(self) -> list[str]:
        """Staged changes, one line each: + added row, - removed row, tables too."""
        out: list[str] = []
        for name in sorted(set(self.base) | set(self.tables)):
            old, new = self.base.get(name), self.tables.get(name)
            if old is None:
                out.append(f"+ table {name}")
                continue
            if new is None:
                out.append(f"- table {name}")
                continue
            if old.columns != new.columns:
                out.append(f"~ {name}: columns now {' '.join(c.name for c in new.columns)}")
            old_rows = [self._row_text(old, r) for r in range(len(old.rows))]
            new_rows = [self._row_text(new, r) for r in range(len(new.rows))]
            out += [f"- {name} {t}" for t in old_rows if t not in new_rows]
            out += [f"+ {name} {t}" for t in new_rows if t not in old_rows]
        return out

    def _row_text(self, table: Table, r: int) -> str:
        pairs = []
        for col, v in zip(table.columns, table.rows[r], strict=True):
            if v is None:
                continue
            text = HIDDEN if self._hidden(table, r, col.name) else shown(v)
            pairs.append(f"{col.name}={text}")
        return " ".join(pairs)

    # ------------------------------------------------------------------ rows
    def table(self, name: str) -> Table:
        t = self.tables.get(name)
        if t is None:
            raise ConfigError(f"no table {name!r} (tables: {', '.join(sorted(self.tables))})")
        return t

    @staticmethod
    def key_columns(table: Table) -> tuple[str, ...]:
        s = sch.schema_for(table)
        if s is not None and s.key and all(table.has(k) for k in s.key):
            return s.key
        return ("id",) if table.has("id") else ()

    def selector(self, table: Table, r: int) -> str:
        """The shortest way to name row r: its key (as far as needed), else @N."""
        keys = self.key_columns(table)
        vals = [table.rows[r][table.index(k)] for k in keys]
        if keys and all(v is not None for v in vals):
            for n in range(1, len(keys) + 1):
                prefix = vals[:n]
                if [self._key(table, i)[:n] for i in range(len(table.rows))].count(prefix) == 1:
                    return ",".join(shown(v) for v in prefix)
        return f"@{r + 1}"

    def _key(self, table: Table, r: int) -> list[Value]:
        return [table.rows[r][table.index(k)] for k in self.key_columns(table)]

    def find(self, table: Table, selector: str) -> int:
        if selector.startswith("@"):
            if not selector[1:].isdigit() or not 1 <= int(selector[1:]) <= len(table.rows):
                raise ConfigError(f"{table.name}: no row {selector} ({len(table.rows)} rows)")
            return int(selector[1:]) - 1
        keys = self.key_columns(table)
        if not keys:
            raise ConfigError(f"{table.name} has no key columns: name rows as @N")
        wanted = selector.split(",")
        if len(wanted) > len(keys):
            raise ConfigError(f"{table.name} is keyed by {', '.join(keys)}: too many values")
        hits = [
            r
            for r in range(len(table.rows))
            if [shown(v) for v in self._key(table, r)[: len(wanted)]] == wanted
        ]
        if not hits:
            raise ConfigError(f"{table.name}: no row with {self._key_text(keys, wanted)}")
        if len(hits) > 1:
            raise ConfigError(
                f"{table.name}: {len(hits)} rows with {self._key_text(keys, wanted)}; "
                f"give more of the key ({', '.join(keys)}) or @N"
            )
        return hits[0]

    @staticmethod
    def _key_text(keys: tuple[str, ...], values: list[str]) -> str:
        return ", ".join(f"{k}={v}" for k, v in zip(keys, values, strict=False))

    @staticmethod
    def _hidden(table: Table, r: int, column: str) -> bool:
        if table.name != "pbx_settings" or column != "value" or not table.has("name"):
            return False
        return table.rows[r][table.index("name")] == auth.SETTING

    # ------------------------------------------------------------------ checks
    def _accept(self, new: Table) -> None:
        """Schema-check a changed table, then stage it; on any problem, stage nothing."""
        s = sch.schema_for(new)
        try:
            format_table(new)
        except DbTextError as e:
            raise ConfigError(e.message) from None
        if s is not None:
            errors = sch.check_table(new, s)
            if errors:
                raise ConfigError("; ".join(e.message for e in errors[:3]))
        self.tables[new.name] = new

    def _with_column(self, table: Table, name: str) -> Table:
        """`table` with column `name` added from its schema (others get its default)."""
        if table.has(name):
            return table
        s = sch.schema_for(table)
        spec = s.spec(name) if s is not None else None
        if spec is None:
            known = ", ".join(c.name for c in table.columns)
            raise ConfigError(f"{table.name} has no column {name!r} (columns: {known})")
        col = spec.column()
        fill = spec.default
        if fill is None and not col.null and table.rows:
            col = Column(col.name, col.type, True, col.auto)  # filled in per row later
        col = Column(col.name, col.type, col.null, col.auto, len(table.columns) + 1)
        rows = [(*row, fill) for row in table.rows]
        return Table(table.name, (*table.columns, col), rows, file=table.name)

    # ------------------------------------------------------------------ commands
    def show(self, name: str | None = None) -> list[str]:
        if name == SETTINGS:
            return [f"settings.{k}={v}" for k, v in self.settings().items()]
        names = [name] if name else sorted(self.tables)
        out: list[str] = []
        for n in names:
            t = self.table(n)
            for r in range(len(t.rows)):
                sel = self.selector(t, r)
                for col, v in zip(t.columns, t.rows[r], strict=True):
                    if v is not None:
                        text = HIDDEN if self._hidden(t, r, col.name) else shown(v)
                        out.append(f"{n}[{sel}].{col.name}={text}")
        return out

    def settings(self) -> dict[str, str]:
        values = {k: shown(s.default) for k, s in sch.SETTINGS.items()}
        t = self.tables.get("pbx_settings")
        if t is not None:
            for _r, rec in t.records():
                if rec.get("value") is not None:
                    values[str(rec["name"])] = shown(rec["value"])
        if values.get(auth.SETTING):
            values[auth.SETTING] = HIDDEN
        return values

    def setting(self, name: str) -> str:
        """The raw value of a setting (the default when absent)."""
        spec = sch.SETTINGS.get(name)
        if spec is None:
            raise ConfigError(f"unknown setting {name!r} (known: {', '.join(sch.SETTINGS)})")
        t = self.tables.get("pbx_settings")
        if t is not None and t.has("name") and t.has("value"):
            for row in t.rows:
                if row[t.index("name")] == name and row[t.index("value")] is not None:
                    return shown(row[t.index("value")])
        return shown(spec.default)

    def get(self, path: Path) -> str:
        if path.is_setting:
            assert path.column is not None  # noqa: S101  # parse_path guarantees it
            value = self.setting(path.column)
            return HIDDEN if path.column == auth.SETTING and value else value
        t = self.table(path.table)
        if path.selector is None:
            raise ConfigError("get needs a row: TABLE[KEY].COLUMN")
        r = self.find(t, path.selector)
        if path.column is None:
            return self._row_text(t, r)
        if not t.has(path.column):
            raise ConfigError(f"{t.name} has no column {path.column!r}")
        if self._hidden(t, r, path.column):
            return HIDDEN
        return shown(t.rows[r][t.index(path.column)])

    def set(self, path: Path, text: str, *, internal: bool = False) -> None:
        if path.is_setting:
            assert path.column is not None  # noqa: S101  # parse_path guarantees it
            self.set_setting(path.column, text, internal=internal)
            return
        if path.selector is None or path.column is None:
            raise ConfigError("set needs TABLE[KEY].COLUMN=VALUE")
        t = self.table(path.table)
        r = self.find(t, path.selector)
        if self._hidden(t, r, path.column) and not internal:
            raise ConfigError("the admin password is changed with `passwd`")
        t = self._with_column(t, path.column)
        i = t.index(path.column)
        rows = list(t.rows)
        row = list(rows[r])
        row[i] = convert(t.columns[i], text)
        rows[r] = tuple(row)
        self._accept(Table(t.name, t.columns, rows, file=t.name))

    def set_setting(self, name: str, text: str, *, internal: bool = False) -> None:
        spec = sch.SETTINGS.get(name)
        if spec is None:
            raise ConfigError(f"unknown setting {name!r} (known: {', '.join(sch.SETTINGS)})")
        if name == auth.SETTING and not internal:
            raise ConfigError("the admin password is changed with `passwd`")
        if text != "" and spec.type is int and not re.fullmatch(r"-?[0-9]+", text):
            raise ConfigError(f"setting {name!r} takes an integer, not {text!r}")
        if text != "" and spec.choices and text not in spec.choices:
            raise ConfigError(f"setting {name!r} is one of {', '.join(spec.choices)}")
        if not text.isprintable():
            raise ConfigError(f"setting {name!r}: control characters are not allowed")
        t = self.tables.get("pbx_settings") or sch.PBX_SETTINGS.empty()
        rows = [row for row in t.rows if row[t.index("name")] != name]
        if text != "":
            value_i = t.index("value")
            row: list[Value] = [None] * len(t.columns)
            row[t.index("name")], row[value_i] = name, text
            rows.append(tuple(row))
        self._accept(Table("pbx_settings", t.columns, rows, file="pbx_settings"))

    def add(self, name: str, assignments: Mapping[str, str]) -> str:
        """Add a row; returns its selector."""
        if not _TABLE_NAME.fullmatch(name):
            raise ConfigError(f"bad table name {name!r}")
        t = self.tables.get(name)
        if t is None:
            s = schema_named(name)
            if s is None:
                raise ConfigError(f"no table {name!r} and no schema to create it from")
            t = s.empty()
        for col_name in assignments:
            t = self._with_column(t, col_name)
        s = sch.schema_for(t)
        row: list[Value] = []
        for col in t.columns:
            spec = s.spec(col.name) if s is not None else None
            if col.name in assignments:
                row.append(convert(col, assignments[col.name]))
            elif col.auto:
                ids = [v for v in (r[t.index(col.name)] for r in t.rows) if isinstance(v, int)]
                row.append(max(ids, default=0) + 1)
            elif spec is not None and spec.need:
                raise ConfigError(f"{name}: column {col.name!r} is required")
            elif spec is not None and spec.default is not None and not col.null:
                row.append(spec.default)
            elif col.null:
                row.append(None)
            else:
                raise ConfigError(f"{name}: column {col.name!r} needs a value")
        new = Table(t.name, t.columns, [*t.rows, tuple(row)], file=t.name)
        self._accept(new)
        return self.selector(new, len(new.rows) - 1)

    def delete(self, path: Path) -> None:
        if path.is_setting:
            assert path.column is not None  # noqa: S101  # parse_path guarantees it
            if path.column == auth.SETTING:
                raise ConfigError("the admin password is changed with `passwd`")
            self.set_setting(path.column, "")
            return
        if path.column is not None:
            raise ConfigError("delete takes a row (TABLE[KEY]); to clear a value: set ...=")
        t = self.table(path.table)
        if path.selector is None:
            raise ConfigError("delete needs a row: TABLE[KEY] (a whole table cannot be deleted)")
        r = self.find(t, path.selector)
        rows = t.rows[:r] + t.rows[r + 1 :]
        self._accept(Table(t.name, t.columns, rows, file=t.name))

    def export(self, name: str) -> str:
        return format_table(self.table(name))

    def import_table(self, name: str, text: str) -> int:
        """Replace (or add) a table from dbtext; returns its row count."""
        if not _TABLE_NAME.fullmatch(name):
            raise ConfigError(f"bad table name {name!r}")
        try:
            t = parse_table(text.encode(), name)
        except DbTextError as e:
            raise ConfigError(str(e)) from None
        self._accept(copy_table(t))
        return len(t.rows)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_tables(files: Mapping[str, bytes]) -> dict[str, Table]:
    """Tables from raw dbtext files (a push); every error at once as ConfigError."""
    out: dict[str, Table] = {}
    problems: list[str] = []
    for name, data in sorted(files.items()):
        if not _TABLE_NAME.fullmatch(name):
            problems.append(f"bad table name {name!r}")
            continue
        try:
            out[name] = copy_table(parse_table(data, name))
        except DbTextError as e:
            problems += [str(x) for x in getattr(e, "errors", (e,))]
    if problems:
        raise ConfigError("; ".join(problems[:5]))
    return out


def check(tables: Mapping[str, Table]) -> None:
    """The store's full check (schemas and cross-table rules), as ConfigError."""
    from pbx_core.store.build import check_tables  # noqa: PLC0415  # heavy; only at commit

    try:
        report = check_tables(tables)
    except StoreError as e:
        raise ConfigError(str(e)) from None
    if report.errors:
        more = len(report.errors) - 5
        tail = f" (and {more} more)" if more > 0 else ""
        raise ConfigError("; ".join(str(e) for e in report.errors[:5]) + tail)
