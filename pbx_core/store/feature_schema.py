"""The features' own tables and settings, joined to the core's (issue 12).

A feature declares `tables` and `settings` (features/api.py); the composition roots
(app.py for the daemon, cli.py for `pbx db` and the console) hand the registry's
features to `register_features` before anything reads the store. From then on
`schema.SCHEMAS`, `schema.PBX_TABLES` and `schema.SETTINGS` hold the core's and the
features' together, so `pbx db check` and `compile`, the judge, the snapshot, the
console and the generated docs treat a feature's table or setting as the core's own,
with no code per feature. The store never imports a feature: it is handed plain data.

Rules, each broken one an error at start (`SchemaClash`, naming the feature):

- a table is named `pbx_<lowercase letters, digits, _>`, is strict (an unknown
  column is an error), of dialect "pbx", built (no `future`), with unique column
  names, key columns among them, and a row bound (`max_rows`, default
  DEFAULT_ROWS, at most MAX_ROWS: the daemon keeps a feature's rows in RAM);
- a setting is an int or str with a default of that type (in `choices` if any); an
  int setting gives its range (`lo`..`hi`) and its default lies in it; a default
  (a setting's, a column's) passes its own `check`;
- a destination type a feature declares (`destination_types`) is a word of a-z,
  0-9 and _, not the core's own (extension, hangup) nor another feature's; a type
  the core lists as not built yet (ivr, voicemail, external) becomes built when a
  feature declares it. Every table that names a destination accepts it;
- a destination column pair in a feature's table (`destination()`: NAME_type, NAME)
  is checked as a DID's destination is;
- a column of internal numbers (`dials=TYPE`) names one of the feature's own
  destination types, in a table with a key (the first key column is the target);
- no name (table or setting) clashes with the core's or another feature's.

Registering a feature again replaces what it declared before (tests, a second start
in one process); `unregister` takes it out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from pbx_core.store import schema as sch
from pbx_core.store.settings import CORE_SETTINGS, Setting

TABLE_NAME = re.compile(r"pbx_[a-z0-9_]{1,48}")
SETTING_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
DEST_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
CORE_OWN_DEST_TYPES = ("extension", "hangup")  # the core routes these itself
DEFAULT_ROWS = 1_000
MAX_ROWS = 10_000
MAX_TABLES = 16  # per feature
MAX_SETTINGS = 64  # per feature
INT_LIMIT = 2**31 - 1  # as judge.INT_MAX


@dataclasses.dataclass(frozen=True)
class Declared:
    """What one feature declared, checked."""

    tables: tuple[sch.TableSchema, ...] = ()
    settings: tuple[Setting, ...] = ()
    destination_types: tuple[str, ...] = ()


_declared: dict[str, Declared] = {}


class SchemaClash(ValueError):  # noqa: N818  # the name says what it is
    """A feature's table or setting breaks a rule or clashes with another's."""


class Declares(Protocol):
    """What `register_features` reads of a feature (api.Feature has it)."""

    @property
    def name(self) -> str: ...

    @property
    def tables(self) -> tuple[sch.TableSchema, ...]: ...

    @property
    def settings(self) -> tuple[Setting, ...]: ...

    @property
    def destination_types(self) -> tuple[str, ...]: ...


def _check_table(t: sch.TableSchema, owner: str) -> sch.TableSchema:
    if not isinstance(t, sch.TableSchema):
        raise SchemaClash(f"feature {owner}: {t!r} is not a TableSchema")
    where = f"feature {owner}: table {t.name!r}"
    if not TABLE_NAME.fullmatch(t.name):
        raise SchemaClash(f"{where}: a feature's table is named pbx_<a-z, 0-9, _> (at most 52)")
    if t.dialect != "pbx" or not t.strict:
        raise SchemaClash(f"{where}: a feature's table is dialect 'pbx' and strict")
    if t.future:
        raise SchemaClash(f"{where}: a feature's own table is built (no `future`)")
    if not t.specs:
        raise SchemaClash(f"{where}: no columns")
    names = [s.name for s in t.specs]
    for s in t.specs:
        if not isinstance(s, sch.Spec) or not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", s.name):
            raise SchemaClash(f"{where}: column {getattr(s, 'name', s)!r} is not a column name")
        if names.count(s.name) > 1:
            raise SchemaClash(f"{where}: column {s.name!r} declared twice")
        if s.future:
            raise SchemaClash(f"{where}: column {s.name!r}: a feature's own column is built")
        if s.need and s.default is not None:
            raise SchemaClash(f"{where}: column {s.name!r} is required and has a default")
        if s.check is not None and s.default is not None:
            problem = sch.run_check(s.check, s.default)
            if problem:
                raise SchemaClash(f"{where}: column {s.name!r}: its default {problem}")
    for type_col, target_col in t.destinations:
        type_spec = t.spec(type_col)
        if type_spec is None or not type_spec.dest or t.spec(target_col) is None:
            raise SchemaClash(f"{where}: destination ({type_col}, {target_col}) is not a pair")
    paired = {c for c, _ in t.destinations}
    for s in t.specs:
        if s.dest and s.name not in paired:
            raise SchemaClash(
                f"{where}: destination type column {s.name!r} has no target column "
                f"{s.name.removesuffix('_type')!r} (declare both with destination())"
            )
    missing = [k for k in t.key if k not in names]
    if missing:
        raise SchemaClash(f"{where}: key column {missing[0]!r} is not a column")
    rows = t.max_rows or DEFAULT_ROWS
    if not 1 <= rows <= MAX_ROWS:
        raise SchemaClash(f"{where}: max_rows {t.max_rows} is not 1..{MAX_ROWS}")
    return dataclasses.replace(t, max_rows=rows, owner=owner)


def _check_setting(st: Setting, owner: str) -> Setting:
    if not isinstance(st, Setting):
        raise SchemaClash(f"feature {owner}: {st!r} is not a Setting")
    where = f"feature {owner}: setting {st.name!r}"
    if not SETTING_NAME.fullmatch(st.name):
        raise SchemaClash(f"{where}: a setting is named with a-z, 0-9, _ (at most 48)")
    if st.future:
        raise SchemaClash(f"{where}: a feature's own setting is built (no `future`)")
    if st.type is int:
        if isinstance(st.default, bool) or not isinstance(st.default, int):
            raise SchemaClash(f"{where}: an int setting has an int default")
        if st.choices:
            raise SchemaClash(f"{where}: choices are for str settings (an int has lo..hi)")
        if st.lo is None or st.hi is None or not -INT_LIMIT <= st.lo <= st.hi <= INT_LIMIT:
            raise SchemaClash(f"{where}: an int setting gives its range lo..hi")
        if not st.lo <= st.default <= st.hi:
            raise SchemaClash(f"{where}: default {st.default} is not in {st.lo}..{st.hi}")
    elif st.type is str:
        if not isinstance(st.default, str):
            raise SchemaClash(f"{where}: a str setting has a str default")
        if st.lo is not None or st.hi is not None:
            raise SchemaClash(f"{where}: lo..hi is for int settings")
        if st.choices and st.default not in st.choices:
            raise SchemaClash(f"{where}: default {st.default!r} is not one of its choices")
    else:
        raise SchemaClash(f"{where}: a setting is int or str")
    if st.check is not None:
        problem = sch.run_check(st.check, st.default)
        if problem:
            raise SchemaClash(f"{where}: its default {problem}")
    return dataclasses.replace(st, owner=owner)


def _check_dest_type(t: str, owner: str) -> str:
    if not isinstance(t, str) or not DEST_TYPE_NAME.fullmatch(t):
        raise SchemaClash(f"feature {owner}: destination type {t!r} is not a word (a-z, 0-9, _)")
    if t in CORE_OWN_DEST_TYPES:
        raise SchemaClash(f"feature {owner}: destination type {t!r} is already the core's")
    return t


def _validated(declared: Mapping[str, Declared]) -> dict[str, Declared]:
    """Every feature's declarations checked, and against each other and the core's."""
    tables_at = {t.name: "the core" for t in sch.CORE_SCHEMAS}
    settings_at = dict.fromkeys(CORE_SETTINGS, "the core")
    dests_at: dict[str, str] = {}
    out: dict[str, Declared] = {}
    for owner, d in declared.items():
        if len(d.tables) > MAX_TABLES or len(d.settings) > MAX_SETTINGS:
            raise SchemaClash(
                f"feature {owner}: at most {MAX_TABLES} tables and {MAX_SETTINGS} settings"
            )
        checked = Declared(
            tuple(_check_table(t, owner) for t in d.tables),
            tuple(_check_setting(s, owner) for s in d.settings),
            tuple(_check_dest_type(t, owner) for t in d.destination_types),
        )
        for t in checked.tables:
            for s in t.specs:
                if s.dials and (s.dials not in checked.destination_types or not t.key):
                    raise SchemaClash(
                        f"feature {owner}: table {t.name!r}: column {s.name!r} dials "
                        f"{s.dials!r}: a destination type of its own, in a table with a key"
                    )
            other = tables_at.get(t.name)
            if other is not None:
                raise SchemaClash(f"feature {owner}: table {t.name!r} is already {other}'s")
            tables_at[t.name] = f"feature {owner}"
        for st in checked.settings:
            other = settings_at.get(st.name)
            if other is not None:
                raise SchemaClash(f"feature {owner}: setting {st.name!r} is already {other}'s")
            settings_at[st.name] = f"feature {owner}"
        for dt in checked.destination_types:
            other = dests_at.get(dt)
            if other is not None:
                raise SchemaClash(f"feature {owner}: destination type {dt!r} is already {other}'s")
            dests_at[dt] = f"feature {owner}"
        out[owner] = checked
    return out


def _apply(declared: Mapping[str, Declared]) -> None:
    _declared.clear()
    _declared.update(declared)
    tables = tuple(t for d in declared.values() for t in d.tables)
    settings = {s.name: s for d in declared.values() for s in d.settings}
    sch.SCHEMAS = (*sch.CORE_SCHEMAS, *tables)
    sch.PBX_TABLES = tuple(s for s in sch.SCHEMAS if s.dialect == "pbx")
    sch.SETTINGS = {**CORE_SETTINGS, **settings}
    declared_types = [t for d in declared.values() for t in d.destination_types]
    sch.DEST_TYPES = (
        *sch.CORE_DEST_TYPES,
        *(t for t in declared_types if t not in sch.CORE_DEST_TYPES),
    )
    sch.FUTURE_DEST_TYPES = {
        t: what for t, what in sch.CORE_FUTURE_DEST_TYPES.items() if t not in declared_types
    }
    sch.BUILT_DEST_TYPES = tuple(t for t in sch.DEST_TYPES if t not in sch.FUTURE_DEST_TYPES)


def register_feature_schemas(
    tables: Iterable[sch.TableSchema],
    settings: Iterable[Setting],
    owner: str,
    destination_types: Iterable[str] = (),
) -> None:
    """Join one feature's tables, settings and destination types to the core's
    (replacing what `owner` declared before); SchemaClash, changing nothing, when a
    rule is broken."""
    if not owner:
        raise SchemaClash("a feature's tables and settings need the feature's name")
    wanted = {k: v for k, v in _declared.items() if k != owner}
    wanted[owner] = Declared(tuple(tables), tuple(settings), tuple(destination_types))
    _apply(_validated(wanted))


def register_features(features: Iterable[Declares]) -> None:
    """The composition roots' one call: every feature's declarations, checked
    together; they replace whatever was registered before. SchemaClash, changing
    nothing, when a rule is broken."""
    wanted: dict[str, Declared] = {}
    for f in features:
        if f.name in wanted:
            raise SchemaClash(f"two features are named {f.name!r}")
        wanted[f.name] = Declared(tuple(f.tables), tuple(f.settings), tuple(f.destination_types))
    _apply(_validated(wanted))


def unregister_feature_schemas(owner: str | None = None) -> None:
    """Take a feature's declarations out (None: every feature's)."""
    _apply({} if owner is None else {k: v for k, v in _declared.items() if k != owner})


def owners() -> dict[str, str]:
    """Table and setting name -> the feature that declared it."""
    out = {t.name: o for o, d in _declared.items() for t in d.tables}
    out.update({s.name: o for o, d in _declared.items() for s in d.settings})
    return out


def destination_owners() -> dict[str, str]:
    """Destination type -> the feature that declared it."""
    return {t: o for o, d in _declared.items() for t in d.destination_types}
