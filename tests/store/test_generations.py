"""Configuration generations: commit, rollback, prune, reload, and power cuts at every
step of a commit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pbx_core.store.dbtext import Table, read_dir
from pbx_core.store.errors import DbTextError, StoreError
from pbx_core.store.generations import (
    CURRENT,
    LOCK,
    SNAPSHOT,
    TABLES,
    ConcurrentCommitError,
    Generations,
    GenerationWatcher,
    Store,
)
from pbx_core.store.snapshot import Snapshot, open_count

FACTORY = Path(__file__).parent.parent.parent / "rootfs_overlay/etc/pbx/factory"


def factory() -> dict[str, Table]:
    return read_dir(FACTORY)


def renamed(tables: dict[str, Table], name: str) -> dict[str, Table]:
    """The factory tables with extension 101's display name changed."""
    ext = tables["pbx_extension"]
    i = ext.index("display_name")
    rows = [(*r[:i], name, *r[i + 1 :]) if r[1] == "101" else r for r in ext.rows]
    out = dict(tables)
    out["pbx_extension"] = Table(ext.name, ext.columns, rows)
    return out


def display_name(snap: Snapshot) -> str | None:
    user = snap.user("101", "pbx.local")
    assert user is not None
    return user.settings.display_name


def test_commit_rollback_prune(tmp_path: Path) -> None:
    gens = Generations(tmp_path)
    assert gens.current() is None
    first = gens.commit(factory())
    assert gens.current() == first
    second = gens.commit(renamed(factory(), "Second"))
    third = gens.commit(renamed(factory(), "Third"))
    assert gens.current() == third
    assert gens.previous() == second
    assert gens.names() == [second.name, third.name]  # first pruned
    assert not first.exists()
    assert sorted(p.name for p in (third / TABLES).iterdir()) == sorted(factory())
    assert gens.rollback() == second
    with Snapshot(tmp_path / CURRENT / SNAPSHOT) as snap:
        assert display_name(snap) == "Second"
    gens.rollback()  # and back again
    assert gens.current() == third
    assert gens.tables()["pbx_extension"].rows == renamed(factory(), "Third")["pbx_extension"].rows


def test_rollback_without_previous(tmp_path: Path) -> None:
    gens = Generations(tmp_path)
    gens.commit(factory())
    with pytest.raises(StoreError, match="no previous generation"):
        gens.rollback()


def test_bad_configuration_is_never_committed(tmp_path: Path) -> None:
    gens = Generations(tmp_path)
    gens.commit(factory())
    bad = factory()
    row = (1, "555", None, "group", "x", None)
    bad["pbx_did"] = Table("pbx_did", bad["pbx_did"].columns, [row])
    with pytest.raises(DbTextError, match="no ring group 'x'"):
        gens.commit(bad)
    assert len(gens.names()) == 1


def test_store_reloads_on_new_generation_without_dropping_records(tmp_path: Path) -> None:
    gens = Generations(tmp_path)
    gens.commit(factory())
    store = Store(tmp_path)
    held = store.snapshot.user("101", "pbx.local")  # e.g. held by a call in progress
    assert not store.changed()
    assert store.reload() is False
    gens.commit(renamed(factory(), "New name"))
    assert store.changed()
    assert store.reload() is True
    assert display_name(store.snapshot) == "New name"
    assert held is not None
    assert held.settings.display_name == "Office 1"  # still valid after the swap
    assert not store.changed()
    gens.rollback()
    assert store.reload() is True
    assert display_name(store.snapshot) == "Office 1"
    store.close()
    assert open_count() == 0


def test_store_on_plain_dbtext_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for name, t in factory().items():
        (cfg / name).write_text((FACTORY / name).read_text())
        assert t.name == name
    store = Store(cfg, runtime_dir=tmp_path / "run")
    assert display_name(store.snapshot) == "Office 1"
    assert list((tmp_path / "run").iterdir()) == []  # compiled file already unlinked
    text = (cfg / "pbx_extension").read_text().replace("Office 1", "Edited")
    (cfg / "pbx_extension").write_text(text)
    os.utime(cfg / "pbx_extension", ns=(1, 1))  # a different mtime even on coarse clocks
    assert store.reload() is True
    assert display_name(store.snapshot) == "Edited"
    (cfg / "pbx_extension").write_text("username(string) dnd(int)\n101:7\n")
    with pytest.raises(DbTextError, match="expected at most 1"):
        store.reload()
    assert display_name(store.snapshot) == "Edited"  # the old view stays in force
    assert store.reload() is False  # reported once
    store.close()


def test_watcher_is_one_readlink(tmp_path: Path) -> None:
    gens = Generations(tmp_path)
    watcher = GenerationWatcher(tmp_path)
    assert watcher.seen is None
    gens.commit(factory())
    assert watcher.changed()


# ------------------------------------------------------------------ power cuts


def _steps(tmp_path: Path) -> list[str]:
    """The steps of a commit on a root that already has a generation."""
    seen: list[str] = []
    root = tmp_path / "probe"
    Generations(root).commit(factory())
    Generations(root, step=seen.append).commit(renamed(factory(), "New"))
    return seen


def test_power_cut_at_every_step_leaves_old_or_new(tmp_path: Path) -> None:
    steps = _steps(tmp_path)
    assert {"rename:generation", "rename:current", "fsync:root:current", "snapshot"} <= set(steps)
    outcomes: dict[str, str | None] = {}
    for k, step in enumerate(steps):
        root = tmp_path / f"cut{k}"
        Generations(root).commit(factory())
        pid = os.fork()
        if pid == 0:  # the committing process, killed at `step`

            def cut(name: str, at: str = step) -> None:
                if name == at:
                    os._exit(0)

            try:
                Generations(root, step=cut).commit(renamed(factory(), "New"))
            finally:
                os._exit(1)  # the step was never reached
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, step
        # The next start: whatever `current` names must be complete.
        store = Store(root)
        outcomes[step] = display_name(store.snapshot)
        assert sorted(p.name for p in (root / CURRENT / TABLES).iterdir()) == sorted(factory())
        tables = read_dir(root / CURRENT / TABLES)
        assert tables["pbx_extension"].rows == (
            renamed(factory(), outcomes[step] or "")["pbx_extension"].rows
        )
        store.close()
        # Recovery: a later commit prunes whatever the cut left behind.
        Generations(root).commit(renamed(factory(), "Later"))
        assert not [p for p in root.iterdir() if p.name.startswith(".") and p.name != LOCK]
        assert len(Generations(root).names()) == 2
    assert set(outcomes.values()) == {"Office 1", "New"}
    flip = steps.index("rename:current")
    assert all(outcomes[s] == "Office 1" for s in steps[:flip])
    assert all(outcomes[s] == "New" for s in steps[flip:])


def _commit_many(root: str, name: str, n: int) -> list[str]:
    gens = Generations(root)
    return [gens.commit(renamed(factory(), f"{name}{i}")).name for i in range(n)]


def test_concurrent_writers_never_collide(tmp_path: Path) -> None:
    # Two processes committing at once: without the writer lock one's prune removes
    # the other's staging directory or both take the same number.
    import multiprocessing  # only this test forks

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        runs = pool.starmap(_commit_many, [(str(tmp_path), "A", 8), (str(tmp_path), "B", 8)])
    names = runs[0] + runs[1]
    assert len(set(names)) == 16  # every commit got its own generation
    gens = Generations(tmp_path)
    assert gens.current() is not None and gens.current().name == max(names)  # type: ignore[union-attr]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging-")]
    with Snapshot(tmp_path / CURRENT / SNAPSHOT) as snap:
        assert display_name(snap) in {"A7", "B7"}


def test_commit_expecting_a_generation(tmp_path: Path) -> None:
    gens = Generations(tmp_path)
    first = gens.commit(factory(), expect=None)  # none yet: committed
    with pytest.raises(ConcurrentCommitError, match="changed meanwhile"):
        gens.commit(factory(), expect=None)  # there is one now
    second = gens.commit(renamed(factory(), "Two"), expect=first.name)
    with pytest.raises(ConcurrentCommitError):
        gens.commit(renamed(factory(), "Three"), expect=first.name)
    assert gens.current() == second
    assert gens.names() == [first.name, second.name]  # the refused ones wrote nothing
