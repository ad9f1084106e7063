"""Configuration generations: atomic commit, rollback, and noticing a new one.

Layout of a generation root (e.g. /data/config):

    current -> gen-000007        symlink, the configuration in force
    previous -> gen-000006       symlink, what `rollback` returns to
    gen-000007/tables/...        the dbtext tables
    gen-000007/snapshot.mdb      their compiled LMDB snapshot

Commit, as a power cut would see it (see also docs/architecture.md): the new generation is
written under a hidden staging name, every file and directory fsynced, renamed to
gen-N, the root fsynced; then `current` is flipped by creating a symlink under a
temporary name and rename(2)-ing it over `current`, and the root fsynced again. Until
that rename the old generation is current and complete; after it the new one is,
and it was complete before the rename. Stale staging directories and generations no
symlink names are removed by `prune`.

Writers (the console, `pbx db commit`, the supervisor's first commit of the factory
tables) may run at the same time: commit (with its prune) and rollback hold an
exclusive flock(2) on `.lock` in the root, so one writer's prune never removes
another's staging directory and numbers are never taken twice. The lock costs no write to the
card after the file exists. `commit(..., expect=...)` commits only if the generation
in force is still the one the caller started from.

The daemon polls `GenerationWatcher.changed()` (one readlink) and calls
`Store.reload()`, which swaps the lookup view: records already handed out are plain
Python objects, so calls and registrations that hold them carry on untouched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pbx_core.store.build import build_config
from pbx_core.store.compile import compile_dir, write_snapshot
from pbx_core.store.dbtext import Table, format_table, fsync_dir, read_dir, table_entries
from pbx_core.store.errors import StoreError
from pbx_core.store.judge import judge_snapshot
from pbx_core.store.model import Config
from pbx_core.store.snapshot import Snapshot

CURRENT = "current"
PREVIOUS = "previous"
SNAPSHOT = "snapshot.mdb"
TABLES = "tables"
LOCK = ".lock"
_GEN = re.compile(r"gen-([0-9]{6,})")
_STAGING = re.compile(r"\.staging-[0-9]+")

Step = Callable[[str], None]


class _Any:
    """`expect` default: commit whatever generation is in force."""


ANY = _Any()


class ConcurrentCommitError(StoreError):
    """Another writer committed since the caller read the configuration."""


def _no_step(_name: str) -> None:
    return None


def _write_synced(path: Path, data: bytes, step: Step) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        step(f"write:{path.name}")
        os.fsync(fd)
    finally:
        os.close(fd)
    step(f"fsync:{path.name}")


class Generations:
    """The generations under one root directory.

    `step` is called after every write, fsync and rename of a commit with the step's
    name; tests use it to cut the power at each of them."""

    def __init__(self, root: str | os.PathLike[str], *, step: Step | None = None) -> None:
        self.root = Path(root)
        self.step = step or _no_step

    def _link(self, name: str) -> str | None:
        try:
            target = os.readlink(self.root / name)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.root / name}: cannot read link: {e.strerror}") from None
        if not _GEN.fullmatch(target):
            raise StoreError(f"{self.root / name}: points at {target!r}, not a generation")
        return target

    def current(self) -> Path | None:
        """The directory of the generation in force, or None before the first commit."""
        name = self._link(CURRENT)
        return None if name is None else self.root / name

    def previous(self) -> Path | None:
        name = self._link(PREVIOUS)
        return None if name is None else self.root / name

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if _GEN.fullmatch(p.name))
        except FileNotFoundError:
            return []

    def _next_number(self) -> int:
        numbers = [int(m.group(1)) for n in self.names() if (m := _GEN.fullmatch(n))]
        return max(numbers, default=0) + 1

    def _flip(self, link: str, target: str) -> None:
        tmp = self.root / f".{link}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        self.step(f"symlink:{link}")
        os.replace(tmp, self.root / link)
        self.step(f"rename:{link}")
        fsync_dir(self.root)
        self.step(f"fsync:root:{link}")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the root's writer lock (blocking)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.root}: cannot take the writer lock: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def commit(self, tables: Mapping[str, Table], *, expect: str | _Any | None = ANY) -> Path:
        """Make `tables` the current configuration; returns the new generation's path.
        The tables are checked first: a configuration with an error is never written.
        With `expect` (a generation name, or None for "none yet") the commit happens
        only if that generation is still the current one, else ConcurrentCommitError."""
        config = build_config(tables)
        with self.locked():
            if not isinstance(expect, _Any) and self._link(CURRENT) != expect:
                raise ConcurrentCommitError(
                    f"{self.root}: the configuration changed meanwhile "
                    f"(now {self._link(CURRENT) or 'none'}, expected {expect or 'none'})"
                )
            final = self._commit_locked(tables, config)
            self.prune()
        self.step("prune")
        return final

    def _commit_locked(self, tables: Mapping[str, Table], config: Config) -> Path:
        try:
            self.prune()
            number = self._next_number()
            staging = self.root / f".staging-{number:06d}"
            (staging / TABLES).mkdir(parents=True)
            for name in sorted(tables):
                data = format_table(tables[name]).encode()
                _write_synced(staging / TABLES / name, data, self.step)
            fsync_dir(staging / TABLES)
            self.step("fsync:tables")
            write_snapshot(config, staging / SNAPSHOT)
            self.step("snapshot")
            fsync_dir(staging)
            self.step("fsync:generation")
            final = self.root / f"gen-{number:06d}"
            os.rename(staging, final)
            self.step("rename:generation")
            fsync_dir(self.root)
            self.step("fsync:root")
            old = self._link(CURRENT)
            if old is not None:
                self._flip(PREVIOUS, old)
            self._flip(CURRENT, final.name)
        except OSError as e:
            raise StoreError(f"{self.root}: commit failed: {e}") from None
        return final

    def commit_dir(
        self, directory: str | os.PathLike[str], *, expect: str | _Any | None = ANY
    ) -> Path:
        """Commit the tables of a dbtext directory (e.g. the factory defaults)."""
        return self.commit(read_dir(directory), expect=expect)

    def rollback(self) -> Path:
        """Return to the previous generation (a second rollback undoes the first)."""
        with self.locked():
            cur, prev = self._link(CURRENT), self._link(PREVIOUS)
            if prev is None or not (self.root / prev / SNAPSHOT).is_file():
                raise StoreError(f"{self.root}: no previous generation to roll back to")
            try:
                self._flip(CURRENT, prev)
                if cur is not None:
                    self._flip(PREVIOUS, cur)
            except OSError as e:
                raise StoreError(f"{self.root}: rollback failed: {e}") from None
        return self.root / prev

    def prune(self) -> list[str]:
        """Remove staging leftovers and generations neither link names; best effort."""
        keep = {self._link(CURRENT), self._link(PREVIOUS)}
        removed = []
        try:
            entries = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        for p in entries:
            if p.name in keep:
                continue
            if _STAGING.fullmatch(p.name) or _GEN.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
            elif p.name in (f".{CURRENT}.tmp", f".{PREVIOUS}.tmp"):
                p.unlink(missing_ok=True)
        return removed

    def tables(self) -> dict[str, Table]:
        """The tables of the current generation (for the console to edit)."""
        cur = self.current()
        if cur is None:
            return {}
        return read_dir(cur / TABLES)


class GenerationWatcher:
    """Notices a new generation with one readlink per poll."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.seen = self.probe()

    def probe(self) -> str | None:
        try:
            return os.readlink(self.root / CURRENT)
        except OSError:
            return None

    def changed(self) -> bool:
        return self.probe() != self.seen


class DirWatcher:
    """Notices an edited plain dbtext directory (developer use): names, sizes, mtimes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.seen = self.probe()

    def probe(self) -> tuple[tuple[str, int, int], ...]:
        """Every entry (a new directory or broken link is a change too, which the
        reload then refuses), its size and mtime."""
        out = []
        try:
            entries = table_entries(self.directory)
        except StoreError:
            return ()
        for p in entries:
            st: os.stat_result | None
            try:
                st = p.stat()
            except OSError:
                st = p.lstat() if p.is_symlink() else None
            if st is not None:
                out.append((p.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def changed(self) -> bool:
        return self.probe() != self.seen


class Store:
    """The configuration the daemon reads: a `Snapshot` it can swap for a newer one.

    Open it on a generation root, a plain dbtext directory (compiled into
    `runtime_dir`, which should be RAM) or a snapshot file."""

    def __init__(
        self, path: str | os.PathLike[str], *, runtime_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.runtime_dir = Path(runtime_dir) if runtime_dir is not None else None
        self.watcher: GenerationWatcher | DirWatcher | None = None
        self._compiled = 0
        if (self.path / CURRENT).is_symlink():
            self.kind = "generations"
            self.watcher = GenerationWatcher(self.path)
            self.snapshot = self._open_generation()
        elif self.path.is_dir():
            if self.runtime_dir is None:
                raise StoreError(f"{self.path}: a dbtext directory needs a runtime_dir")
            self.kind = "dbtext"
            self.watcher = DirWatcher(self.path)
            self.snapshot = self._compile()
        else:
            self.kind = "snapshot"
            self.snapshot = Snapshot(self.path)
            self.generation = self.path.name
        self._judge(self.snapshot)

    def _judge(self, snap: Snapshot) -> None:
        """What `pbx db check` refuses, the daemon refuses (judge.py): at start and
        at every reload, whoever compiled the snapshot."""
        try:
            judge_snapshot(snap, str(self.path))
        except StoreError:
            snap.close()
            raise

    def _open_generation(self) -> Snapshot:
        assert isinstance(self.watcher, GenerationWatcher)  # noqa: S101  # set by caller
        last: StoreError | None = None
        for _attempt in range(3):  # a commit may race with us; read the link again
            name = self.watcher.probe()
            if name is None:
                raise StoreError(f"{self.path}: no current generation")
            try:
                snap = Snapshot(self.path / name / SNAPSHOT)
            except StoreError as e:
                last = e
                continue
            self.watcher.seen = name
            self.generation = name
            return snap
        assert last is not None  # noqa: S101  # the loop ran
        raise last

    def _compile(self) -> Snapshot:
        assert isinstance(self.watcher, DirWatcher) and self.runtime_dir  # noqa: S101
        # A bad edit is reported once, not at every poll, until the files change again.
        self.watcher.seen = self.watcher.probe()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._compiled += 1
        out = self.runtime_dir / f"snapshot-{os.getpid()}-{self._compiled}.mdb"
        compile_dir(self.path, out, sync=False)  # RAM; rebuilt from the tables anyway
        snap = Snapshot(out)
        out.unlink()  # the open environment keeps the inode alive
        self.generation = out.name
        return snap

    def changed(self) -> bool:
        return self.watcher is not None and self.watcher.changed()

    def reload(self) -> bool:
        """Swap to the newer configuration if there is one. On a bad new configuration
        the old view stays in force and the error is raised."""
        if not self.changed():
            return False
        in_force = self.generation
        new = self._open_generation() if self.kind == "generations" else self._compile()
        try:
            self._judge(new)
        except StoreError:
            self.generation = in_force  # not seen again until the link moves
            raise
        old, self.snapshot = self.snapshot, new
        old.close()
        return True

    def close(self) -> None:
        self.snapshot.close()
