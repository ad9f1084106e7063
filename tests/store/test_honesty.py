"""Configuration honesty (issue 12): every column of the PBX's tables and every
setting the store accepts acts at runtime, or is marked `future` (a feature not built
yet) and refused by `pbx db check` when set; a destination names a type that exists;
the factory tables pass the checker.

`READERS` says where each column and setting is read, as a snippet of the reading
code: the walk fails on a column or setting that is neither listed nor future, on a
snippet that is no longer in its file, and on a future one that is listed (it acts:
unmark it). SER's and Kamailio's own tables are exempt: the PBX reads what it needs
of them and keeps the rest. A feature's own table or setting (features/api.py
`tables`, `settings`) is read when its package names it as a string literal
(`row["hour"]`, `ctx.setting("tc_mode")`), or is structural (the auto id, a label).
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.registry import FEATURES
from pbx_core.store import judge, settings
from pbx_core.store import schema as sch
from pbx_core.store.build import check_dir
from tests.conftest import start_pbx, stop_pbx

ROOT = Path(__file__).resolve().parents[2]
FACTORY = ROOT / "rootfs_overlay" / "etc" / "pbx" / "factory"
INTEROP = ROOT / "tests" / "interop" / "configs"

# Columns for people, not for calls: the auto id (Kamailio's row id), free text and
# labels. Each says so in its meaning.
STRUCTURAL = {
    *((t.name, "id") for t in sch.PBX_TABLES if t.spec("id") is not None),
    ("pbx_did", "description"),
    ("pbx_dialplan", "description"),
    ("pbx_ring_group", "name"),
    ("pbx_speed_dial", "name"),
}

_R = "pbx_core/pbx/routing.py"
_T = "pbx_core/pbx/trunk.py"
_E = "pbx_core/pbx/engine.py"
_S = "pbx_core/store/snapshot.py"
_M = "pbx_core/store/model.py"
_G = "pbx_core/features/ringgroup/__init__.py"
_F = "pbx_core/features/forward/__init__.py"
_SEC = "pbx_core/pbx/security.py"
_SYS = "pbx_core/console/system.py"

# (table, column) or ("setting", name) -> (file, snippet of the code reading it).
_VM = "pbx_core/features/voicemail/box.py"
_VMA = "pbx_core/features/voicemail/apps.py"
READERS: dict[tuple[str, str], tuple[str, str]] = {
    ("pbx_extension", "display_name"): (_R, "caller.settings.display_name"),
    ("pbx_extension", "enabled"): (_R, "user.settings.enabled"),
    ("pbx_extension", "ring_timeout"): (_R, "user.settings.ring_timeout"),
    ("pbx_extension", "call_waiting"): ("pbx_core/features/callwaiting/__init__.py",
                                        'toggles={"call_waiting": "call_waiting"}'),
    ("pbx_extension", "dnd"): ("pbx_core/features/dnd/__init__.py", '"dnd": "dnd"'),
    ("pbx_extension", "voicemail"): (_VM, 'row.get("voicemail")'),
    ("pbx_extension", "vm_pin"): (_VM, 'row.get("vm_pin")'),
    ("setting", "vm_max_messages"): (_VM, 'ctx.setting("vm_max_messages")'),
    ("setting", "vm_max_seconds"): (_VMA, 'ctx.setting("vm_max_seconds")'),
    ("setting", "operator"): (_VMA, 'ctx.setting("operator")'),
    ("pbx_extension", "forward_all"): (_F, '"forward_all": "forward_all"'),
    ("pbx_extension", "forward_busy"): (_F, '"forward_busy": "forward_busy"'),
    ("pbx_extension", "forward_noanswer"): (_F, '"forward_noanswer": "forward_noanswer"'),
    ("pbx_extension", "max_contacts"): (_E, "user.settings.max_contacts"),
    ("pbx_extension", "pickup_group"): ("pbx_core/features/pickup/__init__.py",
                                        'get("pickup_group")'),
    ("pbx_extension", "outbound_cid"): (_T, "caller.settings.outbound_cid"),
    ("pbx_extension", "call_class"): (_R, "caller.settings.call_class"),
    ("pbx_extension", "username"): (_E, "self.snap.user(number, self.domain)"),
    ("pbx_extension", "domain"): (_E, "self.snap.user(number, self.domain)"),
    ("pbx_trunk", "name"): (_R, "self.engine.snap.trunk(trunk)"),
    ("pbx_trunk", "enabled"): (_T, "if t.enabled"),
    ("pbx_trunk", "host"): (_T, "st.trunk.host"),
    ("pbx_trunk", "port"): (_T, "t.port"),
    ("pbx_trunk", "transport"): (_T, "self.trunk.transport"),
    ("pbx_trunk", "username"): (_T, "t.username"),
    ("pbx_trunk", "auth_username"): (_T, "t.auth_username"),
    ("pbx_trunk", "password"): (_T, "t.password"),
    ("pbx_trunk", "from_domain"): (_T, "t.from_domain"),
    ("pbx_trunk", "register"): (_T, "st.trunk.register"),
    ("pbx_trunk", "register_expires"): (_T, "t.register_expires"),
    ("pbx_trunk", "caller_id"): (_T, "t.caller_id"),
    ("pbx_trunk", "max_channels"): (_R, "t.max_channels"),
    ("pbx_did", "number"): (_S, 'self._get("did", number)'),
    ("pbx_did", "trunk"): (_R, "did.trunk not in (None, trunk)"),
    ("pbx_did", "dest_type"): (_R, "self._destination(plan, did.dest)"),
    ("pbx_did", "dest"): (_R, "self._destination(plan, did.dest)"),
    ("pbx_did", "welcome"): (_R, "did.welcome"),
    # the store applies it: the compiled dial plan is in priority order
    ("pbx_dialplan", "priority"): ("pbx_core/store/build.py", "rules.append((rule.priority"),
    ("pbx_dialplan", "pattern"): (_M, "self.pattern"),
    ("pbx_dialplan", "action"): (_R, 'rule.action == "deny"'),
    ("pbx_dialplan", "trunk"): (_R, "rule.trunk"),
    ("pbx_dialplan", "strip"): (_M, "number[self.strip :]"),
    ("pbx_dialplan", "prepend"): (_M, "self.prepend"),
    ("pbx_dialplan", "call_class"): (_R, "rule.call_class"),
    ("pbx_ring_group", "number"): (_E, "self.snap.group(number)"),
    ("pbx_ring_group", "strategy"): (_G, 'str(group["strategy"])'),
    ("pbx_ring_group", "members"): (_G, 'group["members"]'),
    ("pbx_ring_group", "ring_timeout"): (_G, 'group["ring_timeout"]'),
    ("pbx_ring_group", "fallback_type"): (_G, 'group.get("fallback_type")'),
    ("pbx_ring_group", "fallback"): (_G, 'group.get("fallback")'),
    ("pbx_speed_dial", "username"): (_E, "self.snap.speed_dial("),
    ("pbx_speed_dial", "domain"): (_E, "self.snap.speed_dial("),
    ("pbx_speed_dial", "code"): (_E, "self.snap.speed_dial("),
    ("pbx_speed_dial", "number"): (_E, "entry.number"),
    ("pbx_settings", "name"): (_S, '_get("meta", "settings")'),
    ("pbx_settings", "value"): (_S, '_get("meta", "settings")'),
    ("setting", "domain"): (_E, 'self.snap.settings.get("domain"'),
    ("setting", "hostname"): (_E, 'snap.settings.get("hostname"'),
    ("setting", "sip_port"): ("pbx_core/app.py", 'settings.get("sip_port"'),
    ("setting", "user_agent"): (_E, 'self.snap.settings.get("user_agent"'),
    ("setting", "rtp_port_min"): ("pbx_core/app.py", 'settings.get("rtp_port_min"'),
    ("setting", "rtp_port_max"): ("pbx_core/app.py", 'settings.get("rtp_port_max"'),
    ("setting", "net_mode"): (_SYS, 'settings.get("net_mode"'),
    ("setting", "net_address"): (_SYS, 'settings.get("net_address"'),
    ("setting", "net_gateway"): (_SYS, 'settings.get("net_gateway"'),
    ("setting", "net_dns"): (_SYS, 'settings.get("net_dns"'),
    ("setting", "reg_min_expires"): (_E, 'settings.get("reg_min_expires"'),
    ("setting", "reg_max_expires"): (_E, 'settings.get("reg_max_expires"'),
    ("setting", "sub_max_per_extension"): (_E, 'settings.get("sub_max_per_extension"'),
    ("setting", "sub_max_total"): (_E, 'settings.get("sub_max_total"'),
    ("setting", "rtp_timeout"): ("pbx_core/pbx/calls.py", 'settings.get("rtp_timeout"'),
    ("setting", "direct_media"): ("pbx_core/pbx/calls.py", 'settings.get("direct_media"'),
    ("setting", "lan_networks"): ("pbx_core/pbx/calls.py", 'settings.get("lan_networks"'),
    ("setting", "external_media_address"): ("pbx_core/pbx/nat.py",
                                            'settings.get("external_media_address"'),
    ("setting", "external_signaling_address"): ("pbx_core/pbx/nat.py",
                                                'settings.get("external_signaling_address"'),
    ("setting", "nat"): ("pbx_core/pbx/nat.py", 'settings.get("nat"'),
    ("setting", "session_expires"): ("pbx_core/pbx/calls.py", 'settings.get("session_expires"'),
    ("setting", "session_min_se"): ("pbx_core/pbx/calls.py", 'settings.get("session_min_se"'),
    ("setting", "auth_algorithms"): ("pbx_core/pbx/auth.py", 'settings.get("auth_algorithms")'),
    ("setting", "sec_ban_failures"): (_SEC, 'num("sec_ban_failures"'),
    ("setting", "sec_ban_window"): (_SEC, 'num("sec_ban_window"'),
    ("setting", "sec_ban_seconds"): (_SEC, 'num("sec_ban_seconds"'),
    ("setting", "sec_rate"): (_SEC, 'num("sec_rate"'),
    ("setting", "sec_burst"): (_SEC, 'num("sec_burst"'),
    ("setting", "sec_trusted"): (_SEC, 'words("sec_trusted")'),
    ("setting", "sec_scanner_agents"): (_SEC, 'words("sec_scanner_agents")'),
    ("setting", "sec_max_sources"): (_SEC, 'num("sec_max_sources"'),
    ("setting", "admin_password"): ("pbx_core/console/auth.py", 'SETTING = "admin_password"'),
    # the CDRs' local times (app.py hands it to the writer) and time conditions
    ("setting", "timezone"): ("pbx_core/app.py", 'settings.get("timezone")'),
}  # fmt: skip


def _items() -> list[tuple[tuple[str, str], str]]:
    """Every (table, column) of the PBX's tables and ("setting", name), with its
    `future` marker ('' = built)."""
    out: list[tuple[tuple[str, str], str]] = []
    for table in sch.PBX_TABLES:
        out += [((table.name, c.name), table.future or c.future) for c in table.specs]
    out += [(("setting", s.name), s.future) for s in sch.SETTINGS.values()]
    return out


def _owner(where: str, name: str) -> str:
    """The feature that declared a table or setting ('' = the core)."""
    if where == "setting":
        return sch.SETTINGS[name].owner
    return next(t.owner for t in sch.PBX_TABLES if t.name == where)


def _feature_reads(owner: str, where: str, name: str) -> bool:
    if where != "setting":
        spec = next(t for t in sch.PBX_TABLES if t.name == where).spec(name)
        assert spec is not None
        if spec.auto or any(w in spec.doc for w in ("free text", "label")):
            return True  # structural
    package = ROOT / "pbx_core" / "features" / owner
    return any(
        f'"{name}"' in p.read_text() or f"'{name}'" in p.read_text()
        for p in sorted(package.rglob("*.py"))
    )


def test_every_column_and_setting_is_read_or_marked_future() -> None:
    unread, stale, contradicted = [], [], []
    for (where, name), future in _items():
        owner = _owner(where, name)
        if owner:  # a feature's own: its package reads it (built: never future)
            if not _feature_reads(owner, where, name):
                unread.append(f"{where}.{name} (feature {owner})")
            continue
        reader = READERS.get((where, name))
        if future:
            if reader is not None:
                contradicted.append(f"{where}.{name} (future {future!r}) is listed as read")
            continue
        if reader is None:
            if (where, name) not in STRUCTURAL:
                unread.append(f"{where}.{name}")
            continue
        path, snippet = reader
        text = (ROOT / path).read_text()
        if snippet not in text or not _names(name, snippet):
            stale.append(f"{where}.{name}: {snippet!r} not in {path}")
    assert not unread, f"read by nothing and not marked future: {unread}"
    assert not stale, stale
    assert not contradicted, contradicted
    known = {key for key, _future in _items()}
    assert set(READERS) <= known, set(READERS) - known


def test_a_feature_column_nothing_reads_fails_the_walk() -> None:
    """The walk's rule for features' own tables can fail: the probe feature lives in
    tests/, so no package under pbx_core/features reads its columns."""
    from tests.features import probe

    for _feature in probe.registered():
        assert not _feature_reads("probe", "pbx_probe_rule", "hour")
        assert not _feature_reads("probe", "setting", "probe_mode")
        assert _feature_reads("probe", "pbx_probe_rule", "id")  # auto: structural
        assert _feature_reads("probe", "pbx_probe_rule", "note")  # free text
    assert _feature_reads("dnd", "setting", "dnd")  # dnd's package names "dnd"


def _names(name: str, snippet: str) -> bool:
    """The snippet names the column (the table's lookups name their key column's
    lookup: settings, did, group, user, trunk)."""
    return name in snippet or any(word in snippet for word in ("snap.", "_get(", "did.dest"))


def test_future_items_exist_and_nothing_structural_hides_a_setting() -> None:
    futures = [key for key, future in _items() if future]
    # What the review found read by nothing, each either built or marked (a guard
    # against unmarking one without a reader: the walk above catches that too).
    for key in [
        ("pbx_extension", "voicemail"),
        ("pbx_extension", "vm_pin"),
        ("pbx_extension", "pickup_group"),
        ("pbx_trunk", "codecs"),
        ("pbx_trunk", "dtmf"),
        ("pbx_trunk", "outbound_proxy"),
        ("setting", "language"),
        ("setting", "timezone"),
        ("setting", "vm_max_seconds"),
        ("setting", "vm_max_messages"),
        ("setting", "operator"),
    ]:
        assert key in futures or key in READERS, key
    assert not STRUCTURAL & set(READERS)
    for table, column in STRUCTURAL:
        spec = next(t for t in sch.PBX_TABLES if t.name == table).spec(column)
        assert spec is not None and not spec.future, (table, column)
        assert spec.auto or any(w in spec.doc for w in ("free text", "label")), spec.doc


# ------------------------------------------------------------------ refusal


def _factory_copy(tmp_path: Path) -> Path:
    d = tmp_path / "cfg"
    shutil.copytree(FACTORY, d)
    return d


def _non_default(spec: sch.Spec) -> str:
    if spec.type.is_int:
        return str(1 if spec.default in (None, 0) else 0)
    if spec.choices:
        return next(c for c in spec.choices if c != spec.default)
    return "PCMA" if spec.name == "codecs" else "1234"


FUTURE_COLUMNS = [
    (t, c) for t in sch.PBX_TABLES if not t.future for c in t.specs if c.future
]  # fmt: skip


@pytest.mark.parametrize(
    ("table", "spec"), FUTURE_COLUMNS, ids=[f"{t.name}.{c.name}" for t, c in FUTURE_COLUMNS]
)
def test_a_future_column_set_is_refused(
    tmp_path: Path, table: sch.TableSchema, spec: sch.Spec
) -> None:
    d = _factory_copy(tmp_path)
    first = {"pbx_extension": ["100", ""], "pbx_trunk": ["provider", "sip.example.net"]}[table.name]
    need = [c for c in table.specs if c.need]
    header = " ".join(c.column().definition() for c in [*need, spec])
    values = [*first, _non_default(spec)]
    if table.name == "pbx_extension":  # domain is not required: NULL = the setting
        header = f"username(string) {spec.column().definition()}"
        values = ["100", _non_default(spec)]
    (d / table.name).write_text(f"{header}\n{':'.join(values)}\n")
    errors = check_dir(d).errors
    assert [e.column for e in errors] and all("not built yet" in e.message for e in errors), errors
    assert spec.future in errors[0].message
    # and the default (or NULL) is accepted
    default = "" if spec.default is None else str(spec.default)
    (d / table.name).write_text(f"{header}\n{':'.join([*values[:-1], default])}\n")
    assert check_dir(d).errors == []


# No core table is future since the IVR's were built; the rule is kept working on a
# stand-in (the speed dial table marked future) so it can still fail.
FUTURE_TABLES = [t for t in sch.PBX_TABLES if t.future] or [
    dataclasses.replace(sch.PBX_SPEED_DIAL, future="a feature not built")
]


@pytest.mark.parametrize("table", FUTURE_TABLES, ids=lambda t: t.name)
def test_a_row_in_a_future_table_is_refused(
    tmp_path: Path, table: sch.TableSchema, monkeypatch: pytest.MonkeyPatch
) -> None:
    if table not in sch.PBX_TABLES:
        swap = {table.name: table}
        monkeypatch.setattr(sch, "SCHEMAS", tuple(swap.get(t.name, t) for t in sch.SCHEMAS))
        monkeypatch.setattr(sch, "PBX_TABLES", tuple(swap.get(t.name, t) for t in sch.PBX_TABLES))
    d = _factory_copy(tmp_path)
    header = " ".join(c.column().definition() for c in table.specs if c.need)
    row = ":".join("1" for c in table.specs if c.need)
    (d / table.name).write_text(f"{header}\n")
    assert check_dir(d).errors == []  # the empty table is fine
    (d / table.name).write_text(f"{header}\n{row}\n")
    errors = check_dir(d).errors
    assert any(f"table {table.name} belongs to" in e.message for e in errors), errors


FUTURE_SETTINGS = [s for s in sch.SETTINGS.values() if s.future]


@given(st.sampled_from(FUTURE_SETTINGS), st.text(max_size=6) | st.integers(0, 100_000).map(str))
def test_a_future_setting_is_refused_unless_default(setting: settings.Setting, text: str) -> None:
    values, problems = judge.typed_settings({setting.name: text})
    if problems:  # not even its type: refused anyway
        return
    problems = judge.settings_problems(values)
    refused = [p for p in problems if not p.warning and setting.name in p.names]
    assert bool(refused) == (values[setting.name] != setting.default), (text, problems)


def test_future_settings_are_the_ones_marked() -> None:
    names = {s.name for s in FUTURE_SETTINGS}
    assert "language" in names
    assert not {"operator", "vm_max_seconds", "vm_max_messages"} & names  # voicemail built
    assert "sip_port" not in names  # it acts: see the test below


# ------------------------------------------------------------------ destinations


def test_built_destination_types_are_the_core_and_the_features() -> None:
    declared = {t for f in FEATURES for t in f.destination_types}
    assert set(sch.BUILT_DEST_TYPES) == {"extension", "hangup"} | declared
    assert set(sch.BUILT_DEST_TYPES) | set(sch.FUTURE_DEST_TYPES) == set(sch.DEST_TYPES)


@pytest.mark.parametrize("dest_type", sorted(sch.DEST_TYPES))
def test_a_destination_of_a_type_not_built_is_refused(tmp_path: Path, dest_type: str) -> None:
    d = _factory_copy(tmp_path)
    target = {
        "extension": "101",
        "group": "600",
        "hangup": "",
        "timecond": "day",
        "ivr": "main",
        "queue": "500",
    }.get(dest_type, "100")
    (d / "pbx_queue").write_text("number(string)\n500\n")  # features/queue's targets
    (d / "pbx_ivr_menu").write_text("name(string) prompt(string)\nmain:welcome\n")
    (d / "pbx_time_group").write_text("name(string) times(string)\nhours:0800-1700\n")
    (d / "pbx_time_condition").write_text(
        "name(string) time_group(string) match_type(string) match(string,null) "
        "nomatch_type(string) nomatch(string,null)\nday:hours:extension:100:hangup:\n"
    )
    (d / "pbx_did").write_text(
        f"number(string) dest_type(string) dest(string,null)\n5551234:{dest_type}:{target}\n"
    )
    (d / "pbx_ring_group").write_text(
        "number(string) name(string) members(string) fallback_type(string) fallback(string,null)\n"
        f"600:Everyone:100,101:{dest_type}:{target}\n"
    )
    if dest_type == "voicemail":  # a voicemail target is an extension with a mailbox
        (d / "pbx_extension").write_text("username(string) voicemail(int)\n100:1\n")
    errors = check_dir(d).errors
    if dest_type in sch.BUILT_DEST_TYPES:
        assert errors == []
    else:
        assert len(errors) == 2, errors
        assert {e.file.rsplit("/", 1)[-1] for e in errors} == {"pbx_did", "pbx_ring_group"}
        assert all("not built yet" in e.message for e in errors), errors


# Interop table sets that are laid over another one (tests/interop/test_voiceapps_*).
OVERLAYS = {"voiceapps": "features"}


@pytest.mark.parametrize("tables", [FACTORY, *sorted(p for p in INTEROP.iterdir() if p.is_dir())])
def test_shipped_tables_pass_the_checker(tables: Path, tmp_path: Path) -> None:
    if tables.name in OVERLAYS:  # checked as the test runs it: over its base
        merged = tmp_path / tables.name
        shutil.copytree(INTEROP / OVERLAYS[tables.name], merged)
        for table in tables.iterdir():
            shutil.copy(table, merged / table.name)
        tables = merged
    report = check_dir(tables)
    assert report.errors == [], report.errors
    assert report.warnings == [], report.warnings


def test_pbx_db_check_passes_the_factory() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pbx_core", "db", "check", str(FACTORY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ sip_port


def _free_port() -> int:
    """A port free for both UDP and TCP on loopback (now; the PBX binds it next)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port")


def test_sip_port_is_where_pbx_run_listens_without_a_port(tmp_path: Path) -> None:
    d = _factory_copy(tmp_path)
    port = _free_port()
    assert port != 5060
    with (d / "pbx_settings").open("a") as f:
        f.write(f"sip_port:{port}\n")
    (d / "pbx_settings").write_text((d / "pbx_settings").read_text().replace("sip_port:5060\n", ""))
    pbx = start_pbx(tmp_path, config=d, listen="127.0.0.1")
    try:
        assert pbx.port == port, pbx.log()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # TCP too
    finally:
        stop_pbx(pbx)
    # An explicit port still wins over the setting.
    pbx = start_pbx(tmp_path, config=d, listen="127.0.0.1:0")
    try:
        assert pbx.port != port
    finally:
        stop_pbx(pbx)


def test_the_image_listens_on_sip_port() -> None:
    script = (ROOT / "rootfs_overlay/usr/sbin/pbx-run").read_text()
    listens = [line for line in script.splitlines() if "--listen" in line]
    assert listens, script
    assert not any("5060" in line for line in listens), listens


# ------------------------------------------------------------------ one place for defaults


def _literal_defaults() -> list[tuple[str, int, str, object]]:
    """Every `x.get("setting", DEFAULT)` in pbx_core outside the store: (file, line,
    setting, the default's value), a name resolved in its module."""
    import ast
    import importlib

    out = []
    for path in sorted((ROOT / "pbx_core").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "store":
            continue
        tree = ast.parse(path.read_text())
        module = None
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in sch.SETTINGS
            ):
                continue
            default = node.args[1]
            if isinstance(default, ast.Constant):
                value = default.value
            elif isinstance(default, ast.Name):
                name = ".".join(rel.with_suffix("").parts)
                module = module or importlib.import_module(name)
                value = getattr(module, default.id)
            else:
                continue
            out.append((str(rel), node.lineno, str(node.args[0].value), value))
    return out


def test_settings_read_with_a_default_use_the_schemas() -> None:
    found = _literal_defaults()
    assert len(found) >= 10, found  # the walk finds the readers
    wrong = [
        f"{f}:{line}: {name} defaults to {value!r}, schema {sch.SETTINGS[name].default!r}"
        for f, line, name, value in found
        if str(value) != str(sch.SETTINGS[name].default)
    ]
    assert not wrong, wrong


def test_a_snapshot_without_a_setting_gives_its_default(tmp_path: Path) -> None:
    from pbx_core.store.compile import compile_dir
    from pbx_core.store.snapshot import Snapshot

    d = _factory_copy(tmp_path)
    (d / "pbx_settings").write_text("name(string) value(string,null)\n")
    compile_dir(d, tmp_path / "s.mdb")
    with Snapshot(tmp_path / "s.mdb") as snap:
        assert snap.settings == {n: s.default for n, s in sch.SETTINGS.items()}


def test_an_old_snapshot_with_a_future_setting_still_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A generation compiled while `language` was not marked future (as `operator` was
    before voicemail was built):
    the daemon logs the setting and starts; `pbx db check` of the same tables refuses."""
    import dataclasses

    from pbx_core.store.compile import compile_dir
    from pbx_core.store.snapshot import Snapshot

    d = _factory_copy(tmp_path)
    with (d / "pbx_settings").open("a") as f:
        f.write("language:de\n")
    assert any("language" in e.message for e in check_dir(d).errors)
    old = dict(sch.SETTINGS)
    old["language"] = dataclasses.replace(sch.SETTINGS["language"], future="")
    monkeypatch.setattr(sch, "SETTINGS", old)
    compile_dir(d, tmp_path / "s.mdb")  # as the old version did
    monkeypatch.undo()
    with Snapshot(tmp_path / "s.mdb") as snap, caplog.at_level("WARNING"):
        assert snap.settings["language"] == "de"
        judge.judge_snapshot(snap, "old")  # no StoreError
        values, _problems = judge.typed_settings(snap.settings)
        assert [p.future for p in judge.settings_problems(values)] == [True]
    assert "language" in caplog.text and "not built yet" in caplog.text
