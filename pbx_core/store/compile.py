"""Compile tables into the LMDB snapshot the running PBX reads.

The snapshot is one LMDB file (subdir=False) with a named database per lookup, keys in
UTF-8 and values in msgpack (records packed as arrays, see model.pack):

| database | key | value |
|---|---|---|
| meta | format, digest, dialplan, settings, versions | format, SHA-256 of tables, ... |
| tables | table name | {"c": columns, "r": rows}: the tables as loaded, for `pbx db dump` |
| user | user@domain | User (HA1s and settings) |
| alias | alias@domain or alias | Alias |
| contact | user@domain | list of Contact (static location rows) |
| number | internal number | Destination |
| did | number or * | Did |
| trunk, group, ivr | name, number, name | Trunk, RingGroup, IvrMenu |
| speed | owner/code or */code | SpeedDial |

It is written to a temporary file, synced and renamed into place: a reader sees the
old file or the new one, whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from pbx_core.store.build import build_config
from pbx_core.store.dbtext import Column, ColumnType, Table, format_table, fsync_dir, read_dir
from pbx_core.store.errors import StoreError
from pbx_core.store.model import Config, pack

FORMAT = 1
DATABASES = (
    "meta",
    "tables",
    "user",
    "alias",
    "contact",
    "number",
    "did",
    "trunk",
    "group",
    "ivr",
    "speed",
)
MAX_KEY = 511  # LMDB's default maximum key size


def tables_digest(tables: Mapping[str, Table]) -> str:
    """SHA-256 over the tables as the writer prints them: equal digests, equal tables."""
    h = hashlib.sha256()
    for name in sorted(tables):
        h.update(name.encode() + b"\0")
        h.update(format_table(tables[name]).encode())
        h.update(b"\0")
    return h.hexdigest()


def _table_value(table: Table) -> dict[str, Any]:
    return {
        "c": [[c.name, c.type.value, c.null, c.auto] for c in table.columns],
        "r": [list(r) for r in table.rows],
    }


def table_from_value(name: str, value: Mapping[str, Any]) -> Table:
    cols = tuple(Column(n, ColumnType(t), bool(nl), bool(a)) for n, t, nl, a in value["c"])
    return Table(name, cols, [tuple(r) for r in value["r"]])


def _entries(config: Config, digest: str) -> dict[str, list[tuple[str, Any]]]:
    return {
        "meta": [
            ("format", FORMAT),
            ("digest", digest),
            ("dialplan", pack(config.dialplan)),
            ("settings", config.settings),
            ("versions", config.versions),
        ],
        "tables": [(n, _table_value(t)) for n, t in sorted(config.tables.items())],
        "user": [(k, pack(v)) for k, v in config.users.items()],
        "alias": [(k, pack(v)) for k, v in config.aliases.items()],
        "contact": [(k, pack(v)) for k, v in config.contacts.items()],
        "number": [(k, pack(v)) for k, v in config.numbers.items()],
        "did": [(k, pack(v)) for k, v in config.dids.items()],
        "trunk": [(k, pack(v)) for k, v in config.trunks.items()],
        "group": [(k, pack(v)) for k, v in config.groups.items()],
        "ivr": [(k, pack(v)) for k, v in config.ivrs.items()],
        "speed": [(k, pack(v)) for k, v in config.speed_dials.items()],
    }


def write_snapshot(config: Config, out: str | os.PathLike[str], *, sync: bool = True) -> Path:
    """Write `config` as an LMDB snapshot at `out`, atomically."""
    out = Path(out)
    digest = tables_digest(config.tables)
    packed: dict[str, list[tuple[bytes, bytes]]] = {}
    size = 0
    for db, items in _entries(config, digest).items():
        rows = []
        for k, v in items:
            key = k.encode()
            if not key or len(key) > MAX_KEY:
                raise StoreError(f"{out}: key {k[:40]!r} of {db} is empty or too long")
            val = msgpack.packb(v, use_bin_type=True)
            size += len(key) + len(val) + 64
            rows.append((key, val))
        packed[db] = sorted(rows)
    tmp = out.with_name(f".{out.name}.tmp")
    map_size = max(1 << 20, size * 4)
    for _attempt in range(4):
        _remove(tmp)
        try:
            _write_env(tmp, packed, map_size)
            break
        except lmdb.MapFullError:
            map_size *= 4
        except lmdb.Error as e:
            _remove(tmp)
            raise StoreError(f"{out}: cannot write snapshot: {e}") from None
    else:
        raise StoreError(f"{out}: snapshot does not fit in {map_size} bytes")
    try:
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, out)
        if sync:
            fsync_dir(out.parent)
    except OSError as e:
        _remove(tmp)
        raise StoreError(f"{out}: cannot write snapshot: {e.strerror}") from None
    return out


def _write_env(path: Path, packed: Mapping[str, list[tuple[bytes, bytes]]], map_size: int) -> None:
    env = lmdb.open(
        str(path),
        subdir=False,
        map_size=map_size,
        max_dbs=len(DATABASES),
        lock=False,  # nobody else opens it until it is renamed into place
        sync=False,  # one fsync of the whole file follows
        metasync=False,
    )
    try:
        with env.begin(write=True) as txn:
            for name in DATABASES:
                db = env.open_db(name.encode(), txn=txn)
                for key, val in packed[name]:
                    txn.put(key, val, db=db, append=True)  # keys come sorted
    finally:
        env.close()


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-lock")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"{p}: cannot remove: {e.strerror}") from None


def compile_tables(tables: Mapping[str, Table], out: str | os.PathLike[str]) -> Config:
    """Check and build `tables`, then write the snapshot; raises all errors at once."""
    config = build_config(tables)
    write_snapshot(config, out)
    return config


def compile_dir(directory: str | os.PathLike[str], out: str | os.PathLike[str]) -> Config:
    """`pbx db compile DIR OUT`."""
    return compile_tables(read_dir(directory), out)
