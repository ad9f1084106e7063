"""The read-only runtime view of a compiled snapshot.

The running PBX never parses text: it opens the snapshot read-only and every lookup
is one LMDB get plus one msgpack decode. The file is never changed after it was
renamed into place (a new configuration is a new file), so it is opened without a
lock file (it may sit on a read-only partition) and one read transaction is held for
the life of the view.

py-lmdb refuses to open the same environment twice in one process, so environments
are shared: every `Snapshot` of the same file (same device and inode) uses one
environment, closed when the last of them is closed.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import lmdb
import msgpack

from pbx_core.store import schema as sch
from pbx_core.store.compile import DATABASES, FORMAT, chunk_key, table_from_value
from pbx_core.store.dbtext import Table
from pbx_core.store.errors import StoreError
from pbx_core.store.model import (
    Alias,
    Contact,
    Destination,
    DialRule,
    Did,
    RingGroup,
    SpeedDial,
    Trunk,
    User,
    speed_key,
    unpack,
)


class _Shared:
    def __init__(self, path: Path, key: tuple[int, int]) -> None:
        self.key = key
        try:
            self.env = lmdb.open(
                str(path),
                subdir=False,
                readonly=True,
                lock=False,  # the file is immutable; no writer to coordinate with
                max_dbs=len(DATABASES),
            )
        except lmdb.Error as e:
            raise StoreError(f"{path}: not an LMDB snapshot: {e}") from None
        try:
            self.txn = self.env.begin(buffers=False)
            self.dbs = {
                name: self.env.open_db(name.encode(), txn=self.txn, create=False)
                for name in DATABASES
            }
        except lmdb.Error as e:
            self.env.close()
            raise StoreError(f"{path}: not a PBX snapshot: {e}") from None
        self.refs = 0


_lock = threading.Lock()
_open: dict[tuple[int, int], _Shared] = {}


def _acquire(path: Path) -> _Shared:
    try:
        st = os.stat(path)
    except OSError as e:
        raise StoreError(f"{path}: cannot open snapshot: {e.strerror}") from None
    key = (st.st_dev, st.st_ino)
    with _lock:
        shared = _open.get(key)
        if shared is None:
            shared = _Shared(path, key)
            _open[key] = shared
        shared.refs += 1
        return shared


def _release(shared: _Shared) -> None:
    with _lock:
        shared.refs -= 1
        if shared.refs == 0:
            del _open[shared.key]
            shared.txn.abort()
            shared.env.close()


class Snapshot:
    """Lookups in one compiled configuration. Close it (or use `with`) when done."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._rows: dict[str, tuple[Mapping[str, Any], ...]] = {}
        self._shared: _Shared | None = _acquire(self.path)
        try:
            self._load_meta()
        except (StoreError, ValueError, TypeError, msgpack.UnpackException) as e:
            self.close()
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"{self.path}: damaged snapshot: {e}") from None

    def _load_meta(self) -> None:
        fmt = self._get("meta", "format")
        if fmt not in (1, FORMAT):  # 1: each table's rows in one value
            raise StoreError(f"{self.path}: snapshot format {fmt!r}, expected {FORMAT}")
        self.digest: str = self._get("meta", "digest")
        self.dialplan: tuple[DialRule, ...] = tuple(
            unpack(DialRule, r) for r in self._get("meta", "dialplan")
        )
        # Every setting: the schema's default where the snapshot has none (one compiled
        # before the setting existed), so the defaults live in schema.SETTINGS only.
        stored: dict[str, str | int] = self._get("meta", "settings") or {}
        self.settings: dict[str, str | int] = {
            **{name: spec.default for name, spec in sch.SETTINGS.items()},
            **stored,
        }
        self.versions: dict[str, int] = self._get("meta", "versions")

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            _release(shared)

    @property
    def closed(self) -> bool:
        return self._shared is None

    def _raw(self, db: str, key: str) -> bytes | None:
        shared = self._shared
        if shared is None:
            raise StoreError(f"{self.path}: snapshot is closed")
        raw: bytes | None = shared.txn.get(key.encode(), db=shared.dbs[db])
        return raw

    def _get(self, db: str, key: str) -> Any:
        raw = self._raw(db, key)
        if raw is None:
            return None
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)

    def _items(self, db: str) -> Iterator[tuple[str, Any]]:
        shared = self._shared
        if shared is None:
            raise StoreError(f"{self.path}: snapshot is closed")
        with shared.txn.cursor(db=shared.dbs[db]) as cur:
            for k, v in cur:
                yield k.decode(), msgpack.unpackb(v, raw=False, strict_map_key=False)

    # ------------------------------------------------------------- lookups

    def user(self, username: str, domain: str) -> User | None:
        """Credentials and settings of username@domain."""
        raw = self._raw("user", f"{username}@{domain}")
        return None if raw is None else unpack(User, msgpack.unpackb(raw))

    def users(self) -> Iterator[User]:
        for _k, v in self._items("user"):
            yield unpack(User, v)

    def alias(self, username: str, domain: str | None = None) -> Alias | None:
        """alias@domain, else a domain-less alias."""
        if domain is not None:
            v = self._get("alias", f"{username}@{domain}")
            if v is not None:
                return unpack(Alias, v)
        v = self._get("alias", username)
        return None if v is None else unpack(Alias, v)

    def contacts(self, aor: str) -> tuple[Contact, ...]:
        v = self._get("contact", aor)
        return () if v is None else tuple(unpack(Contact, c) for c in v)

    def number(self, number: str) -> Destination | None:
        """What an internal number (extension, ring group, IVR) reaches."""
        v = self._get("number", number)
        return None if v is None else unpack(Destination, v)

    def did(self, number: str) -> Did | None:
        """Where a call to an incoming number goes (the `*` row when not listed)."""
        v = self._get("did", number)
        if v is None:
            v = self._get("did", "*")
        return None if v is None else unpack(Did, v)

    def trunk(self, name: str) -> Trunk | None:
        v = self._get("trunk", name)
        return None if v is None else unpack(Trunk, v)

    def trunks(self) -> list[Trunk]:
        return [unpack(Trunk, v) for _k, v in self._items("trunk")]

    def group(self, number: str) -> RingGroup | None:
        v = self._get("group", number)
        return None if v is None else unpack(RingGroup, v)

    def speed_dial(self, owner: str | None, code: str) -> SpeedDial | None:
        """The owner's own speed dial, else the one for everybody."""
        v = self._get("speed", speed_key(owner, code)) if owner else None
        if v is None:
            v = self._get("speed", speed_key(None, code))
        return None if v is None else unpack(SpeedDial, v)

    def route(self, number: str) -> tuple[DialRule, str] | None:
        """The first dial rule matching `number` and the number to send."""
        for rule in self.dialplan:
            out = rule.match(number)
            if out is not None:
                return rule, out
        return None

    # ------------------------------------------------------------- tables

    def table_names(self) -> list[str]:
        shared = self._shared
        if shared is None:
            raise StoreError(f"{self.path}: snapshot is closed")
        with shared.txn.cursor(db=shared.dbs["tables"]) as cur:
            keys = [k.decode() for k in cur.iternext(keys=True, values=False)]
        return [k for k in keys if "\0" not in k]  # not the chunks of rows

    def table(self, name: str) -> Table | None:
        """A table as compiled (whole, in memory: for `pbx db dump` and the console)."""
        v = self._get("tables", name)
        if v is None:
            return None
        if "r" in v:  # format 1
            return table_from_value(name, v, [v["r"]])
        chunks = (self._get("tables", chunk_key(name, n)) or [] for n in range(int(v["n"])))
        return table_from_value(name, v, chunks)

    def rows(self, name: str) -> tuple[Mapping[str, Any], ...]:
        """A PBX table's rows as read-only mappings with every column of its schema
        (defaults filled in), in file order: how a feature reads its own tables
        (`ctx.rows`). Read once per snapshot (it never changes) and kept; at most the
        schema's `max_rows` (`pbx db check` refuses more). () without the table."""
        got = self._rows.get(name)
        if got is None:
            table = self.table(name)
            schema = sch.schema_for(table) if table is not None else None
            if table is None or schema is None or schema.dialect != "pbx":
                got = ()
            else:
                limit = schema.max_rows or len(table.rows)
                got = tuple(
                    MappingProxyType(rec)
                    for _ref, rec in itertools.islice(sch.records(table, schema), limit)
                )
            self._rows[name] = got
        return got


def open_count() -> int:
    """Environments open in this process (for tests: nothing may leak)."""
    with _lock:
        return len(_open)
