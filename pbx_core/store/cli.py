"""`pbx db check DIR`, `pbx db compile DIR OUT`, `pbx db dump DB [--table T]`,
`pbx db commit DIR ROOT`, `pbx db rollback ROOT`, `pbx db set ROOT NAME=VALUE…`.

Dispatched from pbx_core/cli.py with an argparse Namespace: `db_command` is one of
check, compile, dump; `dir`, `out`, `db`, `table` as the parser defines them.
Problems go to stdout as `file:line:column: message` (warnings prefixed `warning:`),
one per line, all of them; the exit status is 1 if there was any error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from pbx_core.store import schema as sch
from pbx_core.store.build import build_config, check_dir
from pbx_core.store.compile import compile_dir
from pbx_core.store.dbtext import Table, Value, format_table, read_dir
from pbx_core.store.errors import DbTextError, StoreError
from pbx_core.store.generations import CURRENT, SNAPSHOT, Generations
from pbx_core.store.snapshot import Snapshot


def _print_errors(errors: Sequence[DbTextError], out: TextIO, prefix: str = "") -> None:
    for e in errors:
        print(prefix + str(e), file=out)


def _all(e: DbTextError) -> Sequence[DbTextError]:
    return getattr(e, "errors", (e,))


def check(directory: str, out: TextIO) -> int:
    try:
        report = check_dir(directory)
    except DbTextError as e:
        _print_errors(_all(e), out)
        return 1
    _print_errors(report.errors, out)
    _print_errors(report.warnings, out, "warning: ")
    if report.errors:
        print(f"{directory}: {len(report.errors)} error(s)", file=out)
        return 1
    print(f"{directory}: ok, {report.tables} tables", file=out)
    return 0


def snapshot_path(path: str) -> Path:
    """A snapshot file, a directory holding one, or a generation root."""
    p = Path(path)
    if (p / CURRENT).is_symlink():
        return p / CURRENT / SNAPSHOT
    if p.is_dir():
        return p / SNAPSHOT
    return p


def compile_(directory: str, target: str, out: TextIO) -> int:
    dest = Path(target) / SNAPSHOT if Path(target).is_dir() else Path(target)
    try:
        config = compile_dir(directory, dest)
    except DbTextError as e:
        _print_errors(_all(e), out)
        return 1
    except StoreError as e:
        print(e, file=out)
        return 1
    print(
        f"{dest}: {len(config.tables)} tables, {len(config.users)} users, "
        f"{len(config.aliases)} aliases, {len(config.dids)} DIDs",
        file=out,
    )
    return 0


def dump(db: str, table: str | None, out: TextIO, err: TextIO) -> int:
    try:
        with Snapshot(snapshot_path(db)) as snap:
            names = snap.table_names()
            if table is not None:
                if table not in names:
                    print(f"{db}: no table {table!r} (tables: {', '.join(names)})", file=err)
                    return 1
                names = [table]
            for name in names:
                t = snap.table(name)
                if t is None:  # listed a moment ago in the same read transaction
                    continue
                if table is None:
                    out.write(f"==> {name} <==\n")
                out.write(format_table(t))
    except StoreError as e:
        print(e, file=err)
        return 1
    return 0


def commit(directory: str, root: str, out: TextIO) -> int:
    """Check DIR, then write it as a new generation under ROOT and make it current
    (atomic: a power cut leaves the old or the new one). A running daemon on ROOT
    reloads it."""
    if check(directory, out) != 0:
        print(f"{root}: nothing committed", file=out)
        return 1
    try:
        path = Generations(root).commit_dir(directory)  # prunes old generations too
    except (StoreError, OSError) as e:
        print(f"{root}: commit failed, the current configuration is unchanged: {e}", file=out)
        return 1
    print(f"{root}: committed {path.name}", file=out)
    return 0


def rollback(root: str, out: TextIO) -> int:
    try:
        path = Generations(root).rollback()
    except (StoreError, OSError) as e:
        print(f"{root}: rollback failed: {e}", file=out)
        return 1
    print(f"{root}: rolled back to {path.name}", file=out)
    return 0


def read_assignments(texts: Sequence[str]) -> dict[str, str]:
    """NAME=VALUE words (and lines of a --from file: blank lines and # comments
    skipped) -> {name: value}; ValueError names the first bad one."""
    out: dict[str, str] = {}
    for raw in texts:
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or name not in sch.SETTINGS:
            raise ValueError(f"{text!r}: expected NAME=VALUE with a known setting name")
        if not value.isprintable():
            raise ValueError(f"{name}: control characters are not allowed")
        out[name] = value.strip()
    return out


def set_settings(
    root: str, assignments: Mapping[str, str], factory: str | None, out: TextIO
) -> int:
    """Set pbx_settings rows in the current generation under ROOT (an empty value
    removes the row: the default applies) and commit it, checked like any commit;
    nothing is written when every value is already so. With no generation yet, the
    tables of `factory` are the starting point (what the supervisor commits first).
    For settings a machine hands over at boot (firmware/run-qemu.py's fw_cfg)."""
    gens = Generations(root)
    try:
        cur = gens.current()
        if cur is None:
            if factory is None:
                print(f"{root}: no configuration yet (give --factory DIR)", file=out)
                return 1
            tables, expect = read_dir(factory), None
        else:
            tables, expect = gens.tables(), cur.name
        old = tables.get("pbx_settings") or sch.PBX_SETTINGS.empty()
        name_i, value_i = old.index("name"), old.index("value")
        rows = [row for row in old.rows if row[name_i] not in assignments]
        for name, value in assignments.items():
            if value:
                row: list[Value] = [None] * len(old.columns)
                row[name_i], row[value_i] = name, value
                rows.append(tuple(row))
        if expect is not None and sorted(map(str, rows)) == sorted(map(str, old.rows)):
            print(f"{root}: settings unchanged", file=out)
            return 0
        tables = {**tables, "pbx_settings": Table("pbx_settings", old.columns, rows)}
        build_config(tables)  # the checker's every error, before anything is written
        path = gens.commit(tables, expect=expect)
    except DbTextError as e:
        _print_errors(_all(e), out)
        print(f"{root}: nothing committed", file=out)
        return 1
    except (StoreError, OSError) as e:
        print(f"{root}: nothing committed: {e}", file=out)
        return 1
    print(f"{root}: committed {path.name}", file=out)
    return 0


def main(args: argparse.Namespace) -> int:
    command = args.db_command
    if command == "check":
        return check(args.dir, sys.stdout)
    if command == "compile":
        return compile_(args.dir, args.out, sys.stdout)
    if command == "dump":
        return dump(args.db, getattr(args, "table", None), sys.stdout, sys.stderr)
    if command == "commit":
        return commit(args.dir, args.root, sys.stdout)
    if command == "rollback":
        return rollback(args.root, sys.stdout)
    if command == "set":
        texts = list(args.assignments)
        try:
            if args.from_file:
                with open(args.from_file, encoding="utf-8") as f:
                    texts = f.read().splitlines() + texts
            assignments = read_assignments(texts)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            print(f"pbx db set: {e}", file=sys.stderr)
            return 2
        return set_settings(args.root, assignments, args.factory, sys.stdout)
    print(f"pbx db: unknown command {command!r}", file=sys.stderr)
    return 2
