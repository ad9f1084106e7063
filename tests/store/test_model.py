"""SER and Kamailio tables map onto one model; PBX tables are checked across tables;
the compiled snapshot answers the lookups; `pbx db` commands; the state database."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pbx_core.store import schema
from pbx_core.store.build import build_config, check_dir
from pbx_core.store.compile import compile_dir
from pbx_core.store.dbtext import read_dir
from pbx_core.store.errors import DbTextError, StoreError
from pbx_core.store.model import Destination, ha1, ha1b
from pbx_core.store.snapshot import Snapshot, open_count
from pbx_core.store.state import StateStore

HERE = Path(__file__).parent
VECTORS = HERE / "vectors"
ROOT = HERE.parent.parent
FACTORY = ROOT / "rootfs_overlay/etc/pbx/factory"


def test_ser_tables_map_onto_the_model() -> None:
    cfg = build_config(read_dir(VECTORS / "ser"))
    ann = cfg.users["1001@office.example"]
    assert ann.ha1 == ha1("1001", "office.example", "secret1")
    assert ann.ha1b == ha1b("1001", "office.example", "secret1")
    assert ann.rpid == "sip:1001@office.example"
    bob = cfg.users["1002@office.example"]
    assert (bob.ha1, bob.ha1b) == ("0c6d6b3b4f7a1b0f0b4d4c5c6e7f8a9b", None)
    alias = cfg.aliases["1002"]
    assert alias.contacts[0].uri == "sip:1002@192.168.1.20:5060"
    assert alias.contacts[0].permanent
    assert not cfg.aliases["sales"].contacts[0].permanent
    (contact,) = cfg.contacts["1001@office.example"]
    assert (contact.uri, contact.q, contact.permanent) == ("sip:1001@192.168.1.10:5060", 0.5, True)
    assert contact.received == "sip:10.0.0.1:5060"
    assert cfg.versions == {"subscriber": 5, "location": 6, "aliases": 6}


def test_kamailio_tables_map_onto_the_model() -> None:
    cfg = build_config(read_dir(VECTORS / "kamailio"))
    assert cfg.users["alice@example.org"].ha1 == ha1("alice", "example.org", "wonderland")
    assert cfg.users["bob@example.org"].ha1 == "5d2ae18b2fd3cfd71c5bba6d2e6c6ce4"
    assert cfg.aliases["100@example.org"].aor == "alice@example.org"
    assert cfg.aliases["support@example.org"].contacts[0].uri == "sip:alice@example.org"
    (c,) = cfg.contacts["alice@example.org"]
    assert c.permanent  # Kamailio: expires 0 never expires
    assert c.uri == "sip:alice@10.0.0.5:5060;transport=udp"
    assert cfg.numbers["alice"] == Destination("extension", "alice")
    assert cfg.versions["location"] == 9


def test_factory_defaults_pass_check() -> None:
    report = check_dir(FACTORY)
    assert report.errors == []
    assert report.warnings == []
    assert report.tables == len(list(FACTORY.iterdir()))
    cfg = build_config(read_dir(FACTORY))
    assert len(cfg.users) >= 3
    assert [t.enabled for t in cfg.trunks.values()] == [False]
    assert cfg.dids["*"].dest == Destination("group", "600")


def _factory_copy(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    shutil.copytree(FACTORY, d)
    return d


@pytest.mark.parametrize(
    ("table", "content", "message"),
    [
        (
            "pbx_did",
            "number(string) dest_type(string) dest(string,null)\n5551234:extension:199\n",
            "pbx_did:2:19: '199' is not an extension",
        ),
        (
            "pbx_did",
            "number(string) dest_type(string) dest(string,null)\n5551234:fax:1\n",
            "pbx_did:2:9: column 'dest_type' is 'fax'; expected one of extension, group, ivr, "
            "voicemail, external, hangup"
            # then the registry's features' own types (tests/conftest.py registers them)
            + "".join(f", {t}" for t in schema.DEST_TYPES[len(schema.CORE_DEST_TYPES) :]),
        ),
        (
            "pbx_dialplan",
            "pattern(string) trunk(string,null)\n9NXX[1-:provider\n",
            "pbx_dialplan:2:5: expected a digit set like [1-5] or [135]",
        ),
        (
            "pbx_dialplan",
            "pattern(string) trunk(string,null)\n9.X:provider\n",
            "pbx_dialplan:2:2: '.' is only allowed at the end",
        ),
        (
            "pbx_dialplan",
            "pattern(string) trunk(string,null)\n9.:nowhere\n",
            "pbx_dialplan:2:4: no trunk 'nowhere'",
        ),
        (
            "pbx_ring_group",
            "number(string) name(string) members(string)\n100:dup:101\n",
            "pbx_ring_group:2:1: number 100 is already extension 100",
        ),
        (
            "pbx_ring_group",
            "number(string) name(string) members(string)\n650:x:101,999\n",
            "pbx_ring_group:2:7: member '999' is not an extension",
        ),
        (
            "pbx_extension",
            "username(string) ring_timeot(int)\n100:20\n",
            "pbx_extension:1:18: unknown column 'ring_timeot' (known: id, username, domain, "
            "display_name, enabled, voicemail, vm_pin, ring_timeout, call_waiting, dnd, "
            "forward_all, forward_busy, forward_noanswer, pickup_group, max_contacts, "
            "outbound_cid, call_class)",
        ),
        (
            "pbx_extension",
            "username(string) dnd(int)\n100:2\n",
            "pbx_extension:2:5: column 'dnd' is 2; expected at most 1",
        ),
        (
            "pbx_extension",
            "username(string)\n104\n",
            "pbx_extension:2:1: no subscriber 104@pbx.local",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nsip_prot:5060\n",
            "pbx_settings:2:1: unknown setting 'sip_prot'",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nsip_port:five\n",
            "pbx_settings:2:10: setting 'sip_port' must be an integer",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nlanguage:de\n",
            "pbx_settings:2:10: setting 'language' belongs to prompt languages, which is not "
            "built yet: remove it or leave it at its default 'en'",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nlan_networks:10.0.0.0/8, 192.168.1/33\n",
            "pbx_settings:2:14: setting 'lan_networks': '192.168.1/33' is not a network "
            "(e.g. 192.168.1.0/24)",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nsession_min_se:120\nsession_expires:100\n",
            "pbx_settings:3:17: setting 'session_expires' must be 0 (no session timers) or at "
            "least session_min_se (120), not 100",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nsession_min_se:2000\n",
            "pbx_settings:2:16: setting 'session_expires' must be 0 (no session timers) or at "
            "least session_min_se (2000), not 1800",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nsession_expires:-5\n",
            "pbx_settings:2:17: setting 'session_expires' must be 0..86400, not -5",
        ),
        (
            "pbx_settings",
            "name(string) value(string,null)\nsession_min_se:0\n",
            "pbx_settings:2:16: setting 'session_min_se' must be 1..86400, not 0",
        ),
        (
            "subscriber",
            "username(string) domain(string) password(string) ha1(string)\n"
            "100:pbx.local:pw:00000000000000000000000000000000\n",
            "subscriber:2:18: ha1 does not match the password",
        ),
        (
            "subscriber",
            "username(string) domain(string) password(string,null)\n100:pbx.local:\n",
            "subscriber:2:15: 100@pbx.local has neither password nor ha1",
        ),
        (
            "subscriber",
            "id(int,auto) username(int) domain(string)\n",
            "subscriber:1:14: column 'username' must be string, not int",
        ),
        (
            "dbaliases",
            "alias_username(string) username(string) domain(string)\n",
            "dbaliases:1: missing column 'alias_domain' (string) of the kamailio dbaliases table",
        ),
        (
            "pbx_trunk",
            "name(string) host(string)\nprovider:a\nprovider:b\n",
            "pbx_trunk:3: duplicate name='provider' (first at line 2)",
        ),
    ],
)
def test_model_errors_are_located(tmp_path: Path, table: str, content: str, message: str) -> None:
    d = _factory_copy(tmp_path)
    (d / table).write_text(content)
    report = check_dir(d)
    # Replacing a whole table may leave other tables pointing at rows it had: the
    # first error is the one this row causes.
    assert report.errors
    assert str(report.errors[0]).replace(f"{d}/", "") == message


@pytest.mark.parametrize(
    ("rows", "warnings"),
    [
        # The interop tests' settings: allowed, with a warning at the row.
        (
            "session_min_se:8\nsession_expires:60\n",
            [
                "pbx_settings:2:16: setting 'session_min_se' 8 is below RFC 4028's floor of 90 s "
                "(for tests only)"
            ],
        ),
        ("session_min_se:90\nsession_expires:0\n", []),  # timers off
        ("lan_networks:192.168.1.0/24, 10.1.2.3 ,fd00\\:\\:/8\n", []),
        ("lan_networks:\n", []),  # no LAN: direct media never applies
    ],
)
def test_settings_that_pass_and_their_warnings(
    tmp_path: Path, rows: str, warnings: list[str]
) -> None:
    d = _factory_copy(tmp_path)
    (d / "pbx_settings").write_text("name(string) value(string,null)\n" + rows)
    report = check_dir(d)
    assert report.errors == []
    assert [str(w).replace(f"{d}/", "") for w in report.warnings] == warnings


def test_readme_documents_every_table_and_column() -> None:
    readme = (ROOT / "pbx_core/store/README.md").read_text()
    assert schema.schema_markdown() in readme


# ------------------------------------------------------------------ snapshot


def test_snapshot_lookups(tmp_path: Path) -> None:
    compile_dir(FACTORY, tmp_path / "s.mdb")
    with Snapshot(tmp_path / "s.mdb") as snap:
        u = snap.user("101", "pbx.local")
        assert u is not None
        assert u.ha1 == ha1("101", "pbx.local", "change-me-101")
        assert u.settings.display_name == "Office 1"
        assert snap.user("101", "elsewhere") is None
        assert snap.user("nobody", "pbx.local") is None
        alias = snap.alias("reception", "pbx.local")
        assert alias is not None
        assert alias.aor == "100@pbx.local"
        did = snap.did("+4930123")  # not listed: the * row
        assert did is not None
        assert did.dest == Destination("group", "600")
        assert snap.number("600") == Destination("group", "600")
        group = snap.group("600")
        assert group is not None
        assert group.members == ("100", "101", "102")
        assert group.fallback == Destination("extension", "100")
        trunk = snap.trunk("provider")
        assert trunk is not None
        assert not trunk.enabled
        assert trunk.codecs == ("PCMU", "PCMA")
        route = snap.route("00442079460000")
        assert route is not None
        assert route[1] == "0442079460000"
        emergency = snap.route("112")
        assert emergency is not None
        assert emergency[0].description == "emergency"
        assert snap.route("5") is None
        assert snap.settings["domain"] == "pbx.local"
        assert snap.settings["sip_port"] == 5060
        assert snap.speed_dial("100@pbx.local", "1") is None


def test_snapshot_environment_shared_in_process(tmp_path: Path) -> None:
    compile_dir(FACTORY, tmp_path / "s.mdb")
    before = open_count()
    a = Snapshot(tmp_path / "s.mdb")
    b = Snapshot(tmp_path / "s.mdb")  # py-lmdb alone would refuse this
    assert open_count() == before + 1
    a.close()
    assert b.user("100", "pbx.local") is not None
    b.close()
    assert open_count() == before
    with pytest.raises(StoreError, match="closed"):
        a.user("100", "pbx.local")


def test_snapshot_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "junk.mdb").write_bytes(b"not lmdb" * 1000)
    with pytest.raises(StoreError):
        Snapshot(tmp_path / "junk.mdb")
    with pytest.raises(StoreError, match="cannot open"):
        Snapshot(tmp_path / "missing.mdb")
    assert open_count() == 0


def test_compile_refuses_bad_tables_and_leaves_no_file(tmp_path: Path) -> None:
    d = _factory_copy(tmp_path)
    (d / "pbx_did").write_text("number(string) dest_type(string) dest(string,null)\n1:group:nope\n")
    with pytest.raises(DbTextError, match="no ring group 'nope'"):
        compile_dir(d, tmp_path / "s.mdb")
    assert not (tmp_path / "s.mdb").exists()


def test_many_subscribers_round_trip_through_snapshot(tmp_path: Path) -> None:
    d = tmp_path / "big"
    d.mkdir()
    lines = ["id(int,auto) username(string) domain(string) password(string) ha1(string,null)"]
    lines += [f"{i}:{2000 + i}:pbx.local:pw{i}:" for i in range(1, 501)]
    (d / "subscriber").write_text("\n".join(lines) + "\n")
    compile_dir(d, tmp_path / "s.mdb")
    with Snapshot(tmp_path / "s.mdb") as snap:
        assert sum(1 for _ in snap.users()) == 500
        u = snap.user("2250", "pbx.local")
        assert u is not None
        assert u.ha1 == ha1("2250", "pbx.local", "pw250")
        table = snap.table("subscriber")
        assert table is not None
        assert table.rows == read_dir(d)["subscriber"].rows


# ------------------------------------------------------------------ CLI


def pbx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbx_core", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def test_cli_check_prints_all_errors(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x(int)\nq\n")
    (tmp_path / "b").write_text("x(int) y(str)\r\n")
    r = pbx("db", "check", str(tmp_path))
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        f"{tmp_path}/a:2:1: expected an integer in column 'x': digits with an optional '-'",
        f"{tmp_path}/b:1:14: header ends with CR: dbtext lines end with LF, not CRLF",
        f"{tmp_path}: 2 error(s)",
    ]


def test_cli_check_compile_dump(tmp_path: Path) -> None:
    r = pbx("db", "check", str(FACTORY))
    assert (r.returncode, r.stdout.strip().endswith("ok, 14 tables")) == (0, True)
    r = pbx("db", "compile", str(FACTORY), str(tmp_path / "s.mdb"))
    assert r.returncode == 0, r.stdout
    r = pbx("db", "dump", str(tmp_path / "s.mdb"), "--table", "subscriber")
    assert r.returncode == 0
    assert r.stdout == (FACTORY / "subscriber").read_text()
    r = pbx("db", "dump", str(tmp_path / "s.mdb"))
    assert "==> pbx_trunk <==\n" in r.stdout
    r = pbx("db", "dump", str(tmp_path / "s.mdb"), "--table", "nope")
    assert r.returncode == 1
    assert "no table 'nope'" in r.stderr
    r = pbx("db", "dump", str(tmp_path / "missing.mdb"))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    r = pbx("db", "check", str(tmp_path / "missing-dir"))
    assert r.returncode == 1
    assert "cannot read directory" in r.stdout


# ------------------------------------------------------------------ state


def test_state_store(tmp_path: Path) -> None:
    path = tmp_path / "state.mdb"
    with StateStore(path) as state:
        assert state.toggle("100@pbx.local", "dnd", False) is False
        state.set_toggle("100@pbx.local", "dnd", True)
        state.set_toggle("100@pbx.local", "forward_all", "0301234")
        state.set_toggle("1000@pbx.local", "dnd", True)  # prefix of another AOR
        assert state.toggles("100@pbx.local") == {"dnd": True, "forward_all": "0301234"}
        state.set_toggle("100@pbx.local", "forward_all", None)
        assert state.toggles("100@pbx.local") == {"dnd": True}
        state.add_voicemail("100", "0002", {"from": "101", "seconds": 12, "new": True})
        state.add_voicemail("100", "0001", {"from": "102", "seconds": 3, "new": True})
        state.update_voicemail("100", "0001", new=False)
        assert [m for m, _ in state.voicemails("100")] == ["0001", "0002"]
        assert state.voicemails("100")[0][1]["new"] is False
        state.delete_voicemail("100", "0002")
        assert len(state.voicemails("100")) == 1
        with pytest.raises(StoreError):
            state.update_voicemail("100", "9999", new=False)
        seqs = [state.add_cdr({"src": "100", "dst": str(n)}) for n in range(5)]
        assert seqs == [1, 2, 3, 4, 5]
        assert state.prune_cdrs(keep=2) == 3
        assert [s for s, _ in state.cdrs()] == [4, 5]
        with pytest.raises(StoreError, match="already open"):
            StateStore(path)
    with StateStore(path) as state:  # survives a restart
        assert state.toggle("100@pbx.local", "dnd") is True
        assert state.add_cdr({"src": "x"}) == 6


def test_state_store_grows_when_full(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.mdb", map_size=64 * 1024) as state:
        for i in range(40):
            state.add_voicemail("100", f"{i:04d}", {"blob": "x" * 4000})
        assert len(state.voicemails("100")) == 40


@pytest.mark.parametrize(("setting", "errors"), [("operator:100", 0), ("language:de", 1)])
def test_voicemail_settings_are_built_and_language_is_not(
    tmp_path: Path, setting: str, errors: int
) -> None:
    d = _factory_copy(tmp_path)
    (d / "pbx_settings").write_text(f"name(string) value(string,null)\n{setting}\n")
    report = check_dir(d)
    assert len(report.errors) == errors, report.errors
    assert all("not built yet" in e.message for e in report.errors)
