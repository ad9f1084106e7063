"""Compile tables into the LMDB snapshot the running PBX reads.

The snapshot is one LMDB file (subdir=False) with a named database per lookup, keys in
UTF-8 and values in msgpack (records packed as arrays, see model.pack):

| database | key | value |
|---|---|---|
| meta | format, digest, dialplan, settings, versions | format, SHA-256 of tables, ... |
| tables | table name; name NUL chunk | {"c": columns, "n": chunks}; a chunk of rows |
| user | user@domain | User (HA1s and settings) |
| alias | alias@domain or alias | Alias |
| contact | user@domain | list of Contact (static location rows) |
| number | internal number | Destination |
| did | number or * | Did |
| trunk, group | name, number | Trunk, RingGroup |
| speed | owner/code or */code | SpeedDial |

The tables database keeps the tables as loaded, for `pbx db dump`, in chunks of
CHUNK rows (`chunk_key`).

It is written to a temporary file, synced and renamed into place: a reader sees the
old file or the new one, whole. Entries are produced one at a time and written in
batches of write transactions (the file is invisible until the rename), so compiling
a large table costs a row and a batch of memory, not the table.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from pbx_core.store.build import build_config, scan_dir, streamed_users
from pbx_core.store.dbtext import (
    Column,
    ColumnType,
    Table,
    TableFile,
    Value,
    format_header,
    format_row,
    fsync_dir,
)
from pbx_core.store.errors import StoreError, raise_all
from pbx_core.store.model import Config, Destination, User, pack
from pbx_core.store.schema import RowSource

FORMAT = 2
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
    "speed",
)
MAX_KEY = 511  # LMDB's default maximum key size
CHUNK = 1000  # rows per value of the tables database
BATCH_BYTES = 4 << 20  # bytes per write transaction: memory is a batch, never the tables


def chunk_key(name: str, n: int) -> str:
    """Key of the n-th chunk of a table's rows (the table's own key holds its columns)."""
    return f"{name}\0{n:08d}"


def tables_digest(tables: Mapping[str, RowSource]) -> str:
    """SHA-256 over the tables as the writer prints them: equal digests, equal tables.
    Row by row: memory is one row."""
    h = hashlib.sha256()
    for name in sorted(tables):
        table = tables[name]
        h.update(name.encode() + b"\0")
        h.update(format_header(table.columns).encode())
        for ref, row in table.iter_rows():
            h.update(format_row(table.columns, row, name, ref.index + 2).encode())
        h.update(b"\0")
    return h.hexdigest()


def table_from_value(name: str, value: Mapping[str, Any], chunks: Iterable[Any] = ()) -> Table:
    cols = tuple(Column(n, ColumnType(t), bool(nl), bool(a)) for n, t, nl, a in value["c"])
    return Table(name, cols, [tuple(r) for chunk in chunks for r in chunk])


def _static_entries(config: Config) -> Iterator[tuple[str, str, Any]]:
    yield "meta", "format", FORMAT
    yield "meta", "dialplan", pack(config.dialplan)
    yield "meta", "settings", config.settings
    yield "meta", "versions", config.versions
    for db, items in (
        ("user", config.users),
        ("alias", config.aliases),
        ("contact", config.contacts),
        ("number", config.numbers),
        ("did", config.dids),
        ("trunk", config.trunks),
        ("group", config.groups),
        ("speed", config.speed_dials),
    ):
        for k, v in items.items():
            yield db, k, pack(v)


def _entries(
    config: Config, tables: Mapping[str, RowSource], users: Iterable[User]
) -> Iterator[tuple[str, str, Any]]:
    """Every (database, key, value) of the snapshot, produced one at a time; the
    digest (`tables_digest`) is taken on the way through the tables."""
    yield from _static_entries(config)
    domain = str(config.settings.get("domain", ""))
    for user in users:
        yield "user", user.aor, pack(user)
        if user.domain == domain and user.username not in config.numbers:
            yield "number", user.username, pack(Destination("extension", user.username))
    digest = hashlib.sha256()
    for name in sorted(tables):
        table = tables[name]
        digest.update(name.encode() + b"\0")
        digest.update(format_header(table.columns).encode())
        cols = [[c.name, c.type.value, c.null, c.auto] for c in table.columns]
        chunk: list[list[Value]] = []
        n = 0
        for ref, row in table.iter_rows():
            digest.update(format_row(table.columns, row, name, ref.index + 2).encode())
            chunk.append(list(row))
            if len(chunk) == CHUNK:
                yield "tables", chunk_key(name, n), chunk
                chunk, n = [], n + 1
        if chunk:
            yield "tables", chunk_key(name, n), chunk
            n += 1
        digest.update(b"\0")
        yield "tables", name, {"c": cols, "n": n}
    yield "meta", "digest", digest.hexdigest()


def write_snapshot(
    config: Config,
    out: str | os.PathLike[str],
    *,
    sync: bool = True,
    tables: Mapping[str, RowSource] | None = None,
    users: Iterable[User] = (),
) -> Path:
    """Write `config` as an LMDB snapshot at `out`, atomically. `tables` (default
    `config.tables`) and `users` (besides `config.users`) are read one row at a time
    and written in batches, so memory does not grow with them."""
    out = Path(out)
    sources: Mapping[str, RowSource] = config.tables if tables is None else tables
    tmp = out.with_name(f".{out.name}.tmp")
    size = sum(_size(t) for t in sources.values())
    map_size = max(1 << 24, size * 8)
    for _attempt in range(4):
        _remove(tmp)
        try:
            _write_env(tmp, _entries(config, sources, users), map_size, out)
            break
        except lmdb.MapFullError:
            map_size *= 4
        except lmdb.Error as e:
            _remove(tmp)
            raise StoreError(f"{out}: cannot write snapshot: {e}") from None
        except StoreError:
            _remove(tmp)
            raise
    else:
        _remove(tmp)
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


def _size(table: RowSource) -> int:
    """Bytes of a table, to size the map: the file's, or an estimate for one in memory."""
    if isinstance(table, TableFile):
        try:
            return table.path.stat().st_size
        except OSError:
            return 0
    return 64 * len(table.columns) * (1 + len(getattr(table, "rows", ())))


def _write_env(
    path: Path, entries: Iterator[tuple[str, str, Any]], map_size: int, out: Path
) -> None:
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
            dbs = {name: env.open_db(name.encode(), txn=txn) for name in DATABASES}
        txn = env.begin(write=True)
        try:
            pending = 0
            for db, k, v in entries:
                value = msgpack.packb(v, use_bin_type=True)
                txn.put(_key(k, db, out), value, db=dbs[db])
                pending += len(value) + 64
                if pending > BATCH_BYTES:  # the file is renamed into place only when whole
                    txn.commit()
                    txn, pending = env.begin(write=True), 0
            txn.commit()
        except BaseException:
            txn.abort()
            raise
    finally:
        env.close()


def _key(k: str, db: str, out: Path) -> bytes:
    key = k.encode()
    if not key or len(key) > MAX_KEY:
        raise StoreError(f"{out}: key {k[:40]!r} of {db} is empty or too long")
    return key


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


def compile_dir(
    directory: str | os.PathLike[str], out: str | os.PathLike[str], *, sync: bool = True
) -> Config:
    """`pbx db compile DIR OUT`: check, then write, each table read row by row (memory
    is a row plus a hash per row, the other tables' model and a write batch). The
    returned Config has no users: they went to the file one at a time."""
    report, sources, builder = scan_dir(directory, contacts=True)
    raise_all(report.errors)
    assert builder is not None  # no errors  # noqa: S101
    write_snapshot(builder.cfg, out, sync=sync, tables=sources, users=streamed_users(builder))
    return builder.cfg
