"""`pbx console` on a pty: login, line editing, the uci-like commands, the menu."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from pbx_core import cli
from pbx_core.console import auth, session
from pbx_core.store.generations import Generations
from tests.conftest import start_pbx, stop_pbx
from tests.console.conftest import PROMPT, ConsoleProc


def committed(c: ConsoleProc) -> dict[str, list[tuple[object, ...]]]:
    return {n: t.rows for n, t in Generations(c.root).tables().items()}


def test_banner_without_daemon_and_forced_password_change(console: ConsoleProc) -> None:
    banner = console.expect(b"Password: ")
    text = console.out[: banner.end()].decode()
    assert "Wafer PBX" in text and "serial console" in text
    assert "PBX: not running" in text
    assert "Factory password: admin" in text
    for line in text.split("\r\n"):
        assert len(line) <= 80, line
    console.type("admin")
    console.expect(b"must be changed")
    console.expect(b"New password: ")
    console.type("short")
    console.expect(b"Not accepted: at least 6 characters")
    console.expect(b"New password: ")
    console.type("better-pw")
    console.expect(b"Retype new password: ")
    console.type("better-pw")
    console.expect(PROMPT)
    stored = Generations(console.root).tables()["pbx_settings"]
    value = {r[0]: r[1] for r in stored.rows}[auth.SETTING]
    assert auth.verify("better-pw", str(value)) and not auth.verify("admin", str(value))
    # Secret input is never echoed.
    assert b"better-pw" not in console.out
    console.type("logout")
    console.expect(b"bye")
    console.expect(b"Password: ")
    console.type("admin")  # the factory password no longer works
    console.expect(b"Login incorrect")
    console.expect(b"Password: ")
    console.type("better-pw")
    console.expect(PROMPT)


def test_line_editing_backspace_ctrl_u_ctrl_c_and_escapes(console: ConsoleProc) -> None:
    console.login()
    # "gxt" + BS + DEL... typed as a person would; an arrow key and a cursor report too.
    console.send(b"gex\x7f\x08et settings.domaim\x08n\x1b[D\x1b[24;80R\r")
    console.expect(b"pbx.local\r\n")
    console.expect(PROMPT)
    console.send(b"nonsense\x15get settings.hostname\r")
    console.expect(b"\r\npbx\r\n")
    console.expect(PROMPT)
    console.send(b"set settings.hostname=x\x03")
    console.expect(b"^C")
    console.expect(PROMPT)
    assert console.command("changes").strip() == "no staged changes"


def test_staged_until_commit_and_revert(console: ConsoleProc) -> None:
    console.login()
    before = committed(console)
    assert console.command("set settings.hostname=office") == ""
    assert "pbx*> " in console.out[-8:].decode()
    assert console.command("get settings.hostname").strip() == "office"
    assert committed(console) == before  # nothing reached the store yet
    assert "+ pbx_settings name=hostname value=office" in console.command("changes")
    assert "dropped 2 staged change(s)" in console.command("revert")
    assert console.command("get settings.hostname").strip() == "pbx"
    console.command("set settings.hostname=office")
    out = console.command("commit")
    assert re.search(r"committed gen-\d{6}", out), out
    assert ("hostname", "office") in committed(console)["pbx_settings"]


def test_errors_change_nothing(console: ConsoleProc) -> None:
    console.login()
    gens = Generations(console.root)
    first = gens.current()
    cases = {
        "set pbx_trunk[provider].port=abc": "takes an integer",
        "set pbx_trunk[provider].transport=carrier-pigeon": "expected one of udp, tcp",
        "set settings.net_mode=maybe": "one of dhcp, static",
        "set settings.nonsense=1": "unknown setting 'nonsense'",
        "set subscriber[999].password=x": "no row with username=999",
        "set subscriber.password=x": "set needs TABLE[KEY].COLUMN=VALUE",
        "get nosuchtable[1].x": "no table 'nosuchtable'",
        "add pbx_extension display_name=Nobody": "column 'username' is required",
        "add subscriber username=100 domain=pbx.local password=dup": "duplicate",
        "delete pbx_trunk": "delete needs a row",
        "set settings.admin_password=x": "changed with `passwd`",
        "frobnicate": "unknown command 'frobnicate'",
    }
    for command, message in cases.items():
        out = console.command(command)
        assert "error: " in out and message in out, (command, out)
    assert console.command("changes").strip() == "no staged changes"
    # A change each table accepts but the whole set does not: the DID to a missing
    # extension is refused at commit, and the commit writes nothing.
    console.command("set pbx_did[*].dest_type=extension")
    console.command("set pbx_did[*].dest=999")
    out = console.command("commit")
    assert "error: " in out and "999" in out, out
    assert gens.current() == first
    # A static network without an address is refused too.
    console.command("revert")
    console.command("set settings.net_mode=static")
    out = console.command("commit")
    assert "net_address must be ADDRESS/PREFIX" in out, out
    assert gens.current() == first
    assert not console.netconf.exists()


def test_show_get_add_delete_export_import(console: ConsoleProc) -> None:
    console.login()
    show = console.command("show subscriber").splitlines()
    assert "subscriber[100].password=change-me-100" in show
    assert console.command("get subscriber[101,pbx.local].password").strip() == "change-me-101"
    assert console.command("get pbx_dialplan[@2].pattern").strip() == "110"
    # a column of a feature not built yet takes no value (configuration honesty)
    refused = console.command("set pbx_trunk[provider].outbound_proxy=proxy.example")
    assert "belongs to trunk outbound proxy" in refused, refused
    # a feature's own table (the IVR's) takes rows as the core's do
    added_menu = console.command("add pbx_ivr_menu name=main prompt=welcome").strip()
    assert added_menu == "pbx_ivr_menu[main]", added_menu
    added = "add pbx_ring_group number=610 name=Test strategy=hunt members=100,101"
    assert console.command(f"{added} ring_timeout=20 fallback_type=hangup").strip() == (
        "pbx_ring_group[610]"
    )
    console.command("delete pbx_extension[103]")
    assert "error: " in console.command("get pbx_extension[103].display_name")
    export = console.command("export pbx_ring_group")
    assert export.startswith("--- pbx_ring_group\n")
    assert ":610:Test:hunt:100,101:20:hangup:" in export
    # import: a table as dbtext, ended by "."
    header = (
        "id(int,auto) number(string) name(string) strategy(string) members(string) "
        "ring_timeout(int) fallback_type(string) fallback(string,null)"
    )
    console.type("import pbx_ring_group")
    console.expect(b"end with a line containing only '.'")
    console.type(header)
    console.type("1:600:Everyone:memoryhunt:100,101,102:25:extension:100")
    console.type(".")
    console.expect(b"staged pbx_ring_group: 1 rows")
    console.expect(PROMPT)
    assert console.command("get pbx_ring_group[600].strategy").strip() == "memoryhunt"
    console.type("import pbx_ring_group")
    console.type(header)
    console.type("x:600:Everyone:hunt:100:25:hangup:")
    console.type(".")
    console.expect(b"error: ")
    console.expect(PROMPT)
    assert console.command("get pbx_ring_group[600].strategy").strip() == "memoryhunt"
    assert "committed gen-" in console.command("commit")


def test_status_from_the_running_daemon(tmp_path: Path) -> None:
    pbx = start_pbx(tmp_path, extra=["--control", str(tmp_path / "control.sock")])
    c = ConsoleProc(tmp_path, control=tmp_path / "control.sock")
    try:
        c.expect(b"Registered phones: 0   Active calls: 0")
        c.login()
        out = c.command("status")
        assert "SIP on 127.0.0.1:" in out and "registered phones: 0" in out, out
        # A commit under a root the daemon does not run on says so.
        c.command("set settings.hostname=office")
        assert "note: the running PBX uses" in c.command("commit")
    finally:
        c.close()
        stop_pbx(pbx)


def test_menu_network_and_extensions(console: ConsoleProc) -> None:
    console.login()
    console.command("menu")
    console.type("1")
    console.expect(b"Mode, dhcp or static [dhcp]: ")
    console.type("static")
    console.expect(b"Address/prefix []: ")
    console.type("192.168.7.2/24")
    console.expect(b"Gateway []: ")
    console.type("192.168.7.1")
    console.expect(b"DNS servers []: ")
    console.type("192.168.7.1, 9.9.9.9")
    console.expect(b"Apply these changes now? [Y/n] ")
    console.type("")
    console.expect(b"committed gen-")
    console.expect(PROMPT)
    assert console.netconf.read_text().splitlines()[2:] == [
        "IFACE=eth0",
        "MODE=static",
        "ADDRESS=192.168.7.2/24",
        "GATEWAY=192.168.7.1",
        "DNS=192.168.7.1 9.9.9.9",
    ]
    # A bad address is refused and nothing is staged.
    console.type("1")
    console.expect(b"[static]: ")
    console.type("")
    console.expect(b"Address/prefix [192.168.7.2/24]: ")
    console.type("192.168.7.300/24")
    console.expect(b"Gateway")
    console.type("")
    console.expect(b"DNS")
    console.type("")
    console.expect(b"error: static network: net_address must be ADDRESS/PREFIX")
    console.expect(PROMPT)
    assert console.command("changes").strip() == "no staged changes"
    # Extensions: add one.
    console.type("2")
    console.expect(b"a) add  c) change  d) delete  Enter) back: ")
    console.type("a")
    console.expect(b"Extension number (2-8 digits) []: ")
    console.type("205")
    console.expect(b"Name shown on phones []: ")
    console.type("Lab")
    console.expect(b"SIP password (6 or more characters) []: ")
    console.type("lab-secret")
    console.expect(b"Apply these changes now? [Y/n] ")
    console.type("y")
    console.expect(b"committed gen-")
    console.expect(b"205       Lab")
    console.expect(b"Enter) back: ")
    console.send(b"\x03")
    console.expect(PROMPT)
    subs = committed(console)["subscriber"]
    assert any(r[1] == "205" and r[3] == "lab-secret" for r in subs), subs


def test_ctrl_d_logs_out_and_eof_ends(console: ConsoleProc) -> None:
    console.login()
    console.send(b"\x04")
    console.expect(b"logged out (Ctrl-D)")
    console.expect(b"Password: ")


def test_failsafe_resets_the_password_once_per_boot(tmp_path: Path) -> None:
    c = ConsoleProc(tmp_path)
    try:
        c.login(new="first-pw")
        c.type("logout")
        c.expect(b"bye")
    finally:
        c.close()
    c = ConsoleProc(tmp_path, "--failsafe", "5")
    try:
        c.expect(b"Failsafe: press f then Enter within 5 s")
        c.type("f")
        c.expect(b"admin password reset to the factory default")
        c.expect(b"Factory password: admin")
        c.login()  # the factory password again, and it must be changed
    finally:
        c.close()
    c = ConsoleProc(tmp_path, "--failsafe", "5")  # the marker in RAM: offered once
    try:
        c.expect(b"Password: ")
        assert b"Failsafe" not in c.out
    finally:
        c.close()


def test_a_failing_start_pauses_before_init_respawns_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # init restarts the console on ttyS0 at once: a console that cannot start must not
    # spin. (No factory tables: it says so, waits, exits 2.)
    slept: list[float] = []
    monkeypatch.setattr(session.time, "sleep", slept.append)
    master, slave = os.openpty()
    try:
        args = cli.build_parser().parse_args(
            [
                *("console", "--tty", os.ttyname(slave)),
                *("--factory", str(tmp_path / "none"), "--config-root", str(tmp_path / "c")),
            ]
        )
        assert session.main(args) == 2
    finally:
        os.close(master)
        os.close(slave)
    assert slept == [session.RESPAWN_PAUSE]
    assert "no factory tables" in capsys.readouterr().err


def test_a_features_own_table_and_settings_in_the_console() -> None:
    """A feature's table and settings (tests/features/probe.py) are the console's as
    the core's are: `add` creates the table from its schema, `set`/`get` check its
    columns and settings, `show settings` lists them, the commit check judges them."""
    from pbx_core.console.config import ConfigError, Staging, check, parse_path
    from pbx_core.store.dbtext import read_dir
    from tests.conftest import FACTORY
    from tests.features import probe

    for _feature in probe.registered():
        st = Staging(lambda: read_dir(FACTORY))
        assert st.add("pbx_probe_rule", {"name": "morning", "hour": "8"}) == "morning"
        assert st.get(parse_path("pbx_probe_rule[morning].action")) == "ring"  # its default
        with pytest.raises(ConfigError, match="expected at most 23"):
            st.set(parse_path("pbx_probe_rule[morning].hour"), "24")
        with pytest.raises(ConfigError, match="no column 'colour'"):
            st.add("pbx_probe_rule", {"name": "x", "colour": "red"})
        st.set(parse_path("pbx_probe_rule[morning].hour"), "23")
        assert "pbx_probe_rule[morning].hour=23" in st.show("pbx_probe_rule")
        assert "settings.probe_mode=off" in st.show("settings")
        with pytest.raises(ConfigError, match="one of off, on, loud"):
            st.set(parse_path("settings.probe_mode"), "quiet")
        st.set(parse_path("settings.probe_mode"), "loud")
        assert st.get(parse_path("settings.probe_mode")) == "loud"
        check(st.tables)  # the commit's check passes
        st.set(parse_path("settings.probe_limit"), "99")
        with pytest.raises(ConfigError, match=r"'probe_limit' must be 1\.\.10"):
            check(st.tables)
    with pytest.raises(ConfigError, match="unknown setting 'probe_mode'"):
        Staging(lambda: read_dir(FACTORY)).set(parse_path("settings.probe_mode"), "on")
