"""The feature platform's tables, settings and state (issue 12): a feature that
declares its own (tests/features/probe.py) is known to `pbx db check` and `compile`,
the judge, the snapshot, the daemon (`ctx.rows`, `ctx.setting`) and the docs with no
code of its own in the store; its state namespace outlives a restart; the
registration refuses clashes."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.api import Feature, Setting, pbx_table, text
from pbx_core.features.registry import FEATURES
from pbx_core.pbx.features import MAX_STATE_KEYS, MAX_STATE_VALUE, Facts, FeatureHost
from pbx_core.store import cli as store_cli
from pbx_core.store import schema as sch
from pbx_core.store.build import check_dir
from pbx_core.store.compile import compile_dir
from pbx_core.store.feature_schema import (
    SchemaClash,
    owners,
    register_feature_schemas,
    register_features,
)
from pbx_core.store.snapshot import Snapshot
from pbx_core.store.state import StateStore
from tests.conftest import FACTORY
from tests.features import probe
from tests.fuzzing import fuzz_settings
from tests.harness.office import offices

HEADER = "id(int,auto) name(string) hour(int) action(string) note(string,null)"
REGISTRY_OWNERS = owners()  # what the registry's own features declare
# The registry's own destination types (timecond), listed after the core's.
REGISTRY_TYPES = ", ".join(t for t in sch.DEST_TYPES if t not in sch.CORE_DEST_TYPES)
ALL_TYPES = f"extension, group, ivr, voicemail, external, hangup, {REGISTRY_TYPES}"


@pytest.fixture
def feature() -> Iterator[Feature]:
    yield from probe.registered()


def _config(tmp_path: Path, *rules: str, settings: tuple[str, ...] = ()) -> Path:
    d = tmp_path / "cfg"
    shutil.copytree(FACTORY, d)
    (d / "pbx_probe_rule").write_text("\n".join([HEADER, *rules]) + "\n")
    if settings:
        with (d / "pbx_settings").open("a") as f:
            f.write("".join(f"{s}\n" for s in settings))
    return d


def _messages(d: Path) -> list[str]:
    return [e.message for e in check_dir(d).errors]


# ------------------------------------------------------------------ pbx db check / compile


@pytest.mark.usefixtures("feature")
def test_db_check_knows_a_features_table(tmp_path: Path) -> None:
    good = _config(tmp_path, "1:morning:8:ring:", "2:night:22:busy:quiet")
    assert _messages(good) == []
    (good / "pbx_probe_rule").write_text(f"{HEADER}\n1:morning:25:ring:\n2:x:3:dance:\n")
    assert _messages(good) == [
        "column 'hour' is 25; expected at most 23",
        "column 'action' is 'dance'; expected one of ring, busy",
    ]
    (good / "pbx_probe_rule").write_text(f"{HEADER} colour(string)\n1:a:1:ring::red\n")
    assert any("unknown column 'colour'" in m for m in _messages(good))  # strict
    (good / "pbx_probe_rule").write_text(f"{HEADER}\n1:a:1:ring:\n2:a:2:ring:\n")
    assert any("duplicate name='a'" in m for m in _messages(good))  # its key
    rows = [f"{n}:r{n}:1:ring:" for n in range(1, 7)]  # max_rows 5
    (good / "pbx_probe_rule").write_text("\n".join([HEADER, *rows]) + "\n")
    assert _messages(good) == ["table pbx_probe_rule holds at most 5 rows"]


def test_without_the_feature_its_table_is_not_judged(tmp_path: Path) -> None:
    d = _config(tmp_path, "1:morning:25:ring:")
    assert _messages(d) == []  # an unknown table: kept, not judged
    assert sch.schema_for(sch.PBX_SETTINGS.empty()) is sch.PBX_SETTINGS
    assert "probe_mode" not in sch.SETTINGS


@pytest.mark.usefixtures("feature")
def test_db_check_judges_a_features_settings(tmp_path: Path) -> None:
    assert _messages(_config(tmp_path / "a", settings=("probe_mode:loud", "probe_limit:10"))) == []
    bad = _config(tmp_path / "b", settings=("probe_mode:quiet", "probe_limit:11"))
    assert _messages(bad) == [
        "setting 'probe_mode' must be one of off, on, loud",
        "setting 'probe_limit' must be 1..10, not 11",
    ]


@pytest.mark.usefixtures("feature")
def test_a_features_own_checks_of_values(tmp_path: Path) -> None:
    """A column's or setting's `check` (tests/features/probe.py: `_window`, `_word`)
    refuses what type, choices and range cannot say; a check that raises is a problem."""
    header = f"{HEADER} window(string,null)"
    d = _config(tmp_path, settings=("probe_word:fine",))
    (d / "pbx_probe_rule").write_text(f"{header}\n1:a:1:ring::09-17\n2:b:1:ring::\n")
    assert _messages(d) == []
    (d / "pbx_probe_rule").write_text(f"{header}\n1:a:1:ring::09-24\n")
    assert _messages(d) == ["column 'window' is '09-24': expected HH-HH, hours 00..23"]
    (d / "pbx_probe_rule").write_text(f"{header}\n1:a:1:ring::09-17\n")
    settings = (d / "pbx_settings").read_text()
    (d / "pbx_settings").write_text(settings.replace("probe_word:fine", "probe_word:Bad"))
    assert _messages(d) == ["setting 'probe_word': expected a lowercase word"]
    (d / "pbx_settings").write_text((d / "pbx_settings").read_text().replace(":Bad", ":boom"))
    assert _messages(d) == [
        "setting 'probe_word': cannot be checked (RuntimeError: the check itself fails)"
    ]


@pytest.mark.usefixtures("feature")
def test_pbx_db_check_and_set_know_them(tmp_path: Path) -> None:
    d = _config(tmp_path, "1:morning:24:ring:")
    out = io.StringIO()
    assert store_cli.check(str(d), out) == 1
    assert "pbx_probe_rule:2:" in out.getvalue() and "at most 23" in out.getvalue()
    (d / "pbx_probe_rule").write_text(f"{HEADER}\n1:morning:23:ring:\n")
    assert store_cli.check(str(d), io.StringIO()) == 0
    out = io.StringIO()
    assert store_cli.set_settings(str(tmp_path / "root"), {"probe_limit": "0"}, str(d), out) == 1
    assert "probe_limit" in out.getvalue(), out.getvalue()


@pytest.mark.usefixtures("feature")
def test_compile_carries_the_rows_and_settings(tmp_path: Path) -> None:
    d = _config(tmp_path, settings=("probe_mode:on",))
    (d / "pbx_probe_rule").write_text(
        "id(int,auto) name(string) hour(int) action(string,null) note(string,null)\n"
        "1:morning:8::\n2:night:22:busy:quiet\n"
    )
    compile_dir(d, tmp_path / "s.mdb")
    with Snapshot(tmp_path / "s.mdb") as snap:
        rows = snap.rows("pbx_probe_rule")
        unset = {"enabled": 1, "window": None, "dest_type": None, "dest": None}
        assert [dict(r) for r in rows] == [
            {"id": 1, "name": "morning", "hour": 8, "action": "ring", "note": None, **unset},
            {"id": 2, "name": "night", "hour": 22, "action": "busy", "note": "quiet", **unset},
        ]
        with pytest.raises(TypeError):
            rows[0]["hour"] = 9  # type: ignore[index]  # read-only
        assert snap.settings["probe_mode"] == "on"
        assert snap.settings["probe_limit"] == 3  # its default
        assert snap.rows("pbx_no_such") == ()


@pytest.mark.usefixtures("feature")
def test_a_features_destination_type_and_its_tables_destinations(tmp_path: Path) -> None:
    """The probe's type `probe` is a destination every table accepts; its table's
    destination columns are checked as a DID's."""
    header = f"{HEADER} dest_type(string,null) dest(string,null)"
    d = _config(tmp_path, settings=())
    (d / "pbx_probe_rule").write_text(
        f"{header}\n1:a:1:ring:::\n2:b:1:ring::group:600\n3:c:1:ring::probe:x\n"
        "4:d:1:ring::hangup:\n"
    )
    (d / "pbx_did").write_text("number(string) dest_type(string) dest(string,null)\n555:probe:a\n")
    assert _messages(d) == []
    assert "probe" in sch.BUILT_DEST_TYPES and "probe" in sch.DEST_TYPES
    (d / "pbx_probe_rule").write_text(f"{header}\n2:b:1:ring::bogus:x\n")
    # The core's types, then the registry's features' (ringgroup's group is the
    # core's word), then the probe's.
    assert sch.DEST_TYPES[:6] == ("extension", "group", "ivr", "voicemail", "external", "hangup")
    assert sch.DEST_TYPES[-1] == "probe"
    assert _messages(d) == [
        f"column 'dest_type' is 'bogus'; expected one of {', '.join(sch.DEST_TYPES)}"
    ]
    (d / "pbx_probe_rule").write_text(
        f"{header}\n1:a:1:ring::group:999\n3:c:1:ring::extension:\n4:d:1:ring::ivr:main\n"
    )
    assert _messages(d) == [
        "no ring group '999'",
        "destination extension needs a target",
        "no ivr 'main' in pbx_ivr_menu",  # the IVR feature's menus
    ]


def test_without_the_feature_its_destination_type_is_refused(tmp_path: Path) -> None:
    d = _config(tmp_path)
    (d / "pbx_did").write_text("number(string) dest_type(string) dest(string,null)\n555:probe:a\n")
    assert "probe" not in sch.DEST_TYPES
    assert _messages(d) == [
        f"column 'dest_type' is 'probe'; expected one of {', '.join(sch.DEST_TYPES)}"
    ]


@pytest.mark.usefixtures("feature")
def test_the_docs_list_a_features_table_and_settings() -> None:
    md = sch.schema_markdown()
    assert "### `pbx_probe_rule` (feature probe)" in md
    assert "| hour | int | `9` | hour of the day it applies |" in md
    assert "| probe_limit | int | `3` | how many probes at once (1..10) (feature probe) |" in md
    line = next(x for x in md.splitlines() if "every destination type column takes:" in x)
    assert line.endswith((", probe.", ": probe.")), line
    mine = dict.fromkeys(("pbx_probe_rule", "probe_mode", "probe_limit", "probe_word"), "probe")
    assert owners() == {**REGISTRY_OWNERS, **mine}


# ------------------------------------------------------------------ the daemon side


def test_the_daemon_reads_its_rows_and_settings_following_reloads(
    tmp_path: Path, feature: Feature
) -> None:
    tables = {"pbx_probe_rule": [HEADER, "1:morning:8:ring:", "2:night:22:busy:"]}
    for office in offices(tmp_path, tables=tables, features=(*FEATURES, feature)):
        host = office.engine.features
        ctx = host.context(feature)
        assert [r["name"] for r in ctx.rows("pbx_probe_rule")] == ["morning", "night"]
        assert ctx.setting("probe_mode") == "off"
        assert host.status()["probe"] == {"rules": ["morning", "night"]}
        with pytest.raises(ValueError, match="declares no table 'pbx_extension'"):
            ctx.rows("pbx_extension")
        office.reload("pbx_probe_rule", [HEADER, "1:noon:12:ring:"])
        assert [r["hour"] for r in ctx.rows("pbx_probe_rule")] == [12]
        office.reload("pbx_settings", [*(FACTORY / "pbx_settings").read_text().splitlines(),
                                        "probe_mode:loud"])  # fmt: skip
        assert ctx.setting("probe_mode") == "loud"


# ------------------------------------------------------------------ state


def _host(state: StateStore | None, feature: Feature) -> FeatureHost:
    facts = Facts(
        now=lambda: 0.0,
        setting=lambda _name: None,
        extension=lambda _number: None,
        group=lambda _number: None,
        registered=lambda _number: False,
        in_call=lambda _number: False,
        may_dial=lambda _number, _by: True,
        domain=lambda: "pbx.local",
    )
    return FeatureHost((feature, Feature(name="other")), facts, state)


def test_state_survives_a_restart_and_is_per_feature(tmp_path: Path) -> None:
    path = tmp_path / "state.mdb"
    with StateStore(path) as state:
        host = _host(state, probe.PROBE)
        ctx = host.context(probe.PROBE)
        ctx.state_set("last", {"hour": 8, "who": ("101", "102")})
        ctx.state_set("count", 3)
        ctx.state_set("gone", "x")
        ctx.state_set("gone", None)
        assert ctx.state_get("last") == {"hour": 8, "who": ["101", "102"]}  # as it reads back
        host.close()  # the daemon's stop: the writer finishes
    with StateStore(path) as state:
        host = _host(state, probe.PROBE)
        ctx = host.context(probe.PROBE)
        assert ctx.state_get("last") == {"hour": 8, "who": ["101", "102"]}
        assert ctx.state_get("count") == 3
        assert ctx.state_get("gone") is None
        assert ctx.state_keys() == ("count", "last")
        assert ctx.state_keys("la") == ("last",)
        other = host.context(host.features[1])
        assert other.state_get("count") is None and other.state_keys() == ()
        host.close()


def test_state_is_bounded(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.mdb") as state:
        host = _host(state, probe.PROBE)
        ctx = host.context(probe.PROBE)
        for key, value, why in [
            ("", 1, "non-empty"),
            ("a\0b", 1, "NUL"),
            ("k" * 129, 1, "longer than 128"),
            ("big", "x" * MAX_STATE_VALUE, "at most 4096"),
            ("obj", object(), "not msgpack-able"),
        ]:
            with pytest.raises(ValueError, match=why):
                ctx.state_set(key, value)
        for n in range(MAX_STATE_KEYS):
            ctx.state_set(f"k{n}", n)
        with pytest.raises(ValueError, match="at most 1000 state keys"):
            ctx.state_set("one-more", 1)
        ctx.state_set("k0", "replaced")  # an existing key still may change
        ctx.state_set("k1", None)
        ctx.state_set("one-more", 1)  # room again
        host.close()
    with StateStore(tmp_path / "state.mdb") as state:
        assert len(_host(state, probe.PROBE).context(probe.PROBE).state_keys()) == MAX_STATE_KEYS


def test_state_without_a_state_database_lives_in_ram() -> None:
    host = _host(None, probe.PROBE)
    ctx = host.context(probe.PROBE)
    ctx.state_set("k", [1, 2])
    assert ctx.state_get("k") == [1, 2]
    host.close()


# ------------------------------------------------------------------ registration rules


def _table(name: str = "pbx_x_rule", **kw: object) -> sch.TableSchema:
    return pbx_table(name, "doc", text("name", "a name", need=True), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tables", "settings", "why"),
    [
        ((_table("x_rule"),), (), "is named pbx_"),
        ((_table("pbx_Rule"),), (), "is named pbx_"),
        ((_table("pbx_extension"),), (), "'pbx_extension' is already the core's"),
        ((_table("pbx_probe_rule"),), (), "already feature probe's"),
        ((sch.TableSchema("pbx_x", "pbx", "doc", (text("a", "a"),)),), (), "strict"),
        ((_table(max_rows=10_001),), (), "max_rows 10001"),
        ((_table(key=("nope",)),), (), "key column 'nope'"),
        ((), (Setting("domain", str, "", "d"),), "'domain' is already the core's"),
        ((), (Setting("probe_mode", str, "", "d"),), "already feature probe's"),
        ((), (Setting("x_n", int, 1, "d"),), "range lo..hi"),
        ((), (Setting("x_n", int, 11, "d", lo=1, hi=10),), "not in 1..10"),
        ((), (Setting("x_s", str, "a", "d", ("b", "c")),), "not one of its choices"),
        ((), (Setting("x_f", float, 1, "d"),), "int or str"),
        ((), (Setting("x_s", str, "", "d", future="later"),), "no `future`"),
        ((_table(), object()), (), "not a TableSchema"),
        ((), (Setting("x_c", str, "a", "d", check=lambda _v: "never"),), "its default never"),
        (
            (pbx_table("pbx_x", "d", text("c", "d", default="a", check=lambda _v: "no")),),
            (),
            "column 'c': its default no",
        ),
        (
            (pbx_table("pbx_x", "d", text("go_type", "d", dest=True)),),
            (),
            "has no target column 'go'",
        ),
    ],
)
@pytest.mark.usefixtures("feature")
def test_a_clash_or_a_broken_rule_is_refused_and_changes_nothing(
    tables: tuple[sch.TableSchema, ...], settings: tuple[Setting, ...], why: str
) -> None:
    before = (sch.SCHEMAS, dict(sch.SETTINGS), owners())
    with pytest.raises(SchemaClash, match=why) as e:
        register_feature_schemas(tables, settings, "x")
    assert "feature x" in str(e.value)
    assert (sch.SCHEMAS, dict(sch.SETTINGS), owners()) == before


@pytest.mark.parametrize(
    ("types", "why"),
    [
        (("extension",), "'extension' is already the core's"),
        (("hangup",), "'hangup' is already the core's"),
        (("probe",), "'probe' is already feature probe's"),
        (("Bad type",), "is not a word"),
    ],
)
@pytest.mark.usefixtures("feature")
def test_a_destination_type_clash_is_refused(types: tuple[str, ...], why: str) -> None:
    before = sch.DEST_TYPES
    with pytest.raises(SchemaClash, match=why):
        register_feature_schemas((), (), "x", types)
    assert before == sch.DEST_TYPES


def test_a_feature_that_builds_a_future_type_makes_it_built() -> None:
    without = tuple(f for f in FEATURES if f.name != "ivr")  # the IVR builds ivr
    try:
        register_features(without)
        assert "ivr" in sch.FUTURE_DEST_TYPES and "ivr" not in sch.BUILT_DEST_TYPES
        register_features((*without, Feature(name="menu", destination_types=("ivr",))))
        assert "ivr" in sch.BUILT_DEST_TYPES and "ivr" not in sch.FUTURE_DEST_TYPES
        assert sch.DEST_TYPES.count("ivr") == 1  # not added twice
    finally:
        register_features(FEATURES)
    assert "ivr" in sch.BUILT_DEST_TYPES


def test_two_features_of_one_name_are_refused() -> None:
    with pytest.raises(SchemaClash, match="two features are named 'probe'"):
        register_features((probe.PROBE, probe.PROBE))


@pytest.mark.fuzz
@fuzz_settings(60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),  # the feature
            st.sampled_from(["pbx_t1", "pbx_t2", "pbx_extension", "t3"]),  # its table
            st.sampled_from(["s1", "s2", "domain"]),  # its setting
        ),
        max_size=5,
    )
)
def test_registration_accepts_exactly_the_clash_free_declarations(
    decls: list[tuple[str, str, str]],
) -> None:
    features: dict[str, Feature] = {}
    for owner, table, setting in decls:
        f = features.get(owner, Feature(name=owner))
        features[owner] = Feature(
            name=owner,
            tables=(*f.tables, _table(table)),
            settings=(*f.settings, Setting(setting, str, "", "d")),
        )
    tables = [t.name for f in features.values() for t in f.tables]
    settings = [s.name for f in features.values() for s in f.settings]
    ok = (
        len(set(tables)) == len(tables)
        and len(set(settings)) == len(settings)
        and not {"pbx_extension", "t3"} & set(tables)
        and "domain" not in settings
    )
    try:
        register_features(features.values())
        assert ok, decls
        assert {t.name for t in sch.PBX_TABLES} >= set(tables)
        assert set(sch.SETTINGS) >= set(settings)
        assert all(sch.SETTINGS[n].owner for n in settings)
    except SchemaClash:
        assert not ok, decls
    finally:
        register_features(FEATURES)
    assert owners() == REGISTRY_OWNERS


# ------------------------------------------------------------------ the composition roots


@pytest.mark.usefixtures("feature")
def test_pbx_db_joins_the_registrys_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`pbx db` registers the registry's features itself (cli.py), so a feature in the
    registry needs nothing else; a clash stops it with the feature named."""
    from pbx_core import cli
    from pbx_core.features import registry

    d = _config(tmp_path, "1:morning:24:ring:")
    register_features(FEATURES)  # as a fresh `pbx db` process starts: the core's only
    monkeypatch.setattr(registry, "FEATURES", (*FEATURES, probe.PROBE))
    assert cli.main(["db", "check", str(d)]) == 1
    assert "expected at most 23" in capsys.readouterr().out
    clash = Feature(name="other", settings=(Setting("probe_mode", str, "", "d"),))
    monkeypatch.setattr(registry, "FEATURES", (*FEATURES, probe.PROBE, clash))
    assert cli.main(["db", "check", str(d)]) == 2
    err = capsys.readouterr().err
    assert "pbx db: feature other: setting 'probe_mode' is already feature probe's" in err


def test_pbx_run_refuses_to_start_on_a_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pbx_core import app, cli

    clash = Feature(name="other", tables=(_table("pbx_trunk"),))
    monkeypatch.setattr(app, "FEATURES", (*FEATURES, clash))
    # The daemon's logging set-up would leave a handler on the test process's root.
    monkeypatch.setattr(app.logsetup, "configure", lambda logger, *_a, **_k: logger)
    try:
        assert cli.main(["run", "--config", str(FACTORY), "--state", str(tmp_path / "s.mdb")]) == 2
    finally:
        register_features(FEATURES)
    assert (
        "pbx run: feature other: table 'pbx_trunk' is already the core's" in capsys.readouterr().err
    )
