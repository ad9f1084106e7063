"""Runtime state that must survive a reboot, in a writable LMDB on the data partition.

Feature toggles set from phones (DND, call forward, call waiting), the voicemail
index and CDRs. Every write is one short write transaction that commits (and syncs)
before the method returns: the daemon calls these between awaits, never holding a
transaction across one. Nothing is written unless something happened, so an idle PBX
writes nothing. Registrations are not here: they live in RAM.

| database | key | value |
|---|---|---|
| toggle | aor NUL name | msgpack value (bool, str, None) |
| voicemail | mailbox NUL message id | msgpack dict of the message's metadata |
| cdr | 8-byte big-endian sequence number | msgpack dict of the call record |
| feature | feature NUL key | msgpack value a feature kept (`ctx.state_set`) |

A feature's namespace is its own: the host (pbx/features.py) bounds its keys, values
and their count, and writes them from its writer thread.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from pbx_core.store.errors import StoreError

_DBS = ("toggle", "voicemail", "cdr", "feature")
_SEQ = struct.Struct(">Q")
_lock = threading.Lock()
_open_paths: set[str] = set()


def _key(*parts: str) -> bytes:
    for p in parts:
        if "\0" in p or not p:
            raise StoreError(f"invalid state key part {p!r}")
    key = "\0".join(parts).encode()
    if len(key) > 511:
        raise StoreError("state key too long")
    return key


class StateStore:
    """The writable state database. One per process and path; close it when done."""

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = 64 << 20) -> None:
        self.path = Path(path)
        real = os.path.realpath(self.path)
        with _lock:
            if real in _open_paths:
                raise StoreError(f"{self.path}: state database already open in this process")
            _open_paths.add(real)
        self._real = real
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(str(self.path), subdir=False, map_size=map_size, max_dbs=len(_DBS))
            self.dbs = {n: self.env.open_db(n.encode()) for n in _DBS}
        except (lmdb.Error, OSError) as e:
            with _lock:
                _open_paths.discard(real)
            raise StoreError(f"{self.path}: cannot open state database: {e}") from None

    def close(self) -> None:
        if self._real in _open_paths:
            self.env.close()
            with _lock:
                _open_paths.discard(self._real)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- plumbing

    def _write(self, db: str, key: bytes, value: Any | None) -> None:
        """Put (or delete when value is None) in one short transaction."""
        data = None if value is None else msgpack.packb(value, use_bin_type=True)
        for _attempt in range(2):
            try:
                with self.env.begin(write=True) as txn:
                    if data is None:
                        txn.delete(key, db=self.dbs[db])
                    else:
                        txn.put(key, data, db=self.dbs[db])
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.Error as e:
                raise StoreError(f"{self.path}: write failed: {e}") from None
            else:
                return
        raise StoreError(f"{self.path}: state database is full")

    def _read(self, db: str, key: bytes) -> Any:
        with self.env.begin(db=self.dbs[db]) as txn:
            raw = txn.get(key)
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def _prefix(self, db: str, prefix: bytes) -> list[tuple[bytes, Any]]:
        out = []
        with self.env.begin(db=self.dbs[db]) as txn, txn.cursor() as cur:
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append((k, msgpack.unpackb(v, raw=False)))
        return out

    # ------------------------------------------------------------- toggles

    def set_toggle(self, aor: str, name: str, value: bool | str | None) -> None:
        """Set a feature toggle of an extension (None removes it: back to default)."""
        self._write("toggle", _key(aor, name), value)

    def toggle(self, aor: str, name: str, default: Any = None) -> Any:
        v = self._read("toggle", _key(aor, name))
        return default if v is None else v

    def toggles(self, aor: str) -> dict[str, Any]:
        prefix = _key(aor) + b"\0"
        return {k[len(prefix) :].decode(): v for k, v in self._prefix("toggle", prefix)}

    # ------------------------------------------------------------- features' own state

    def set_feature_state(self, feature: str, key: str, value: Any) -> None:
        """Keep `value` (msgpack-able) under `key` in `feature`'s namespace (None
        removes it)."""
        self._write("feature", _key(feature, key), value)

    def feature_state(self, feature: str, limit: int) -> dict[str, Any]:
        """Every key of `feature`'s namespace and its value, at most `limit` of them
        (the host's bound; more is only a namespace written by another version)."""
        prefix = _key(feature) + b"\0"
        out: dict[str, Any] = {}
        with self.env.begin(db=self.dbs["feature"]) as txn, txn.cursor() as cur:
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix) or len(out) >= limit:
                        break
                    out[k[len(prefix) :].decode()] = msgpack.unpackb(v, raw=False)
        return out

    # ------------------------------------------------------------- voicemail

    def add_voicemail(self, mailbox: str, msg_id: str, meta: Mapping[str, Any]) -> None:
        self._write("voicemail", _key(mailbox, msg_id), dict(meta))

    def update_voicemail(self, mailbox: str, msg_id: str, **changes: Any) -> None:
        key = _key(mailbox, msg_id)
        with self.env.begin(write=True, db=self.dbs["voicemail"]) as txn:
            raw = txn.get(key)
            if raw is None:
                raise StoreError(f"no voicemail {msg_id!r} in mailbox {mailbox!r}")
            meta = msgpack.unpackb(raw, raw=False)
            meta.update(changes)
            txn.put(key, msgpack.packb(meta, use_bin_type=True))

    def delete_voicemail(self, mailbox: str, msg_id: str) -> None:
        self._write("voicemail", _key(mailbox, msg_id), None)

    def voicemails(self, mailbox: str) -> list[tuple[str, dict[str, Any]]]:
        """Messages of a mailbox, in message id order."""
        prefix = _key(mailbox) + b"\0"
        return [(k[len(prefix) :].decode(), v) for k, v in self._prefix("voicemail", prefix)]

    # ------------------------------------------------------------- CDRs

    def add_cdr(self, record: Mapping[str, Any]) -> int:
        """Append a call record; returns its sequence number."""
        return self.add_cdrs([record])[0]

    def add_cdrs(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append call records in one transaction (one sync); their sequence numbers."""
        with self.env.begin(write=True, db=self.dbs["cdr"]) as txn:
            with txn.cursor() as cur:
                seq = _SEQ.unpack(cur.key())[0] + 1 if cur.last() else 1
            out = []
            for record in records:
                txn.put(_SEQ.pack(seq), msgpack.packb(dict(record), use_bin_type=True), append=True)
                out.append(seq)
                seq += 1
        return out

    def cdrs(self, since: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """Call records with sequence number >= since, oldest first."""
        with self.env.begin(db=self.dbs["cdr"]) as txn, txn.cursor() as cur:
            if not cur.set_range(_SEQ.pack(since)):
                return
            rows = [(_SEQ.unpack(k)[0], msgpack.unpackb(v, raw=False)) for k, v in cur]
        yield from rows

    def prune_cdrs(self, keep: int) -> int:
        """Drop all but the newest `keep` records; returns how many went."""
        with self.env.begin(write=True, db=self.dbs["cdr"]) as txn:
            total = txn.stat(self.dbs["cdr"])["entries"]
            drop = max(0, total - keep)
            with txn.cursor() as cur:
                cur.first()
                for _ in range(drop):
                    cur.delete()
        return drop
