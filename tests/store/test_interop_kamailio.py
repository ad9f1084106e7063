"""Kamailio's own db_text module loads tables our writer produced: auth_db checks a
REGISTER from SIPp against our subscriber table (with HA1s we computed) and usrloc
saves the contact into our location table."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pbx_core.store import dbtext
from pbx_core.store.build import build_config, check_dir
from pbx_core.store.dbtext import Table
from pbx_core.store.schema import KAM_LOCATION, KAM_SUBSCRIBER, KAM_VERSION

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.tools("kamailio", "sipp"),
]

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:127.0.0.1:{port}
mpath="{modules}/"
loadmodule "db_text.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "auth_db.so"
modparam("usrloc", "db_url", "text://{db}")
modparam("usrloc", "db_mode", 3)
modparam("auth_db", "db_url", "text://{db}")
modparam("auth_db", "calculate_ha1", 0)
modparam("auth_db", "use_domain", 1)
request_route {{
    if ($rm == "REGISTER") {{
        if (!www_authorize("$fd", "subscriber")) {{
            www_challenge("$fd", "0");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    sl_send_reply("404", "Not here");
}}
"""

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500"><![CDATA[
REGISTER sip:example.org SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:[service]@example.org>;tag=[call_number]
To: <sip:[service]@example.org>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 60
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:example.org SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:[service]@example.org>;tag=[call_number]
To: <sip:[service]@example.org>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[service]@[local_ip]:[local_port]>
[authentication username=alice password=PASSWORD]
Max-Forwards: 70
Expires: 60
Content-Length: 0

]]></send>
  <recv response="EXPECT"/>
</scenario>
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_tables(db: Path) -> None:
    """Kamailio 5.x tables, built in code and written by our writer."""
    sub = KAM_SUBSCRIBER.empty()
    sub_cols = tuple(
        c for c in sub.columns if c.name in ("id", "username", "domain", "ha1", "ha1b")
    )
    sub = Table("subscriber", sub_cols)
    # HA1s computed by the store from a password: Kamailio must accept them.
    tmp = build_config(
        {
            "subscriber": Table(
                "subscriber",
                KAM_SUBSCRIBER.empty().columns[:4],
                [(1, "alice", "example.org", "wonder:land\\1")],
            )
        }
    )
    alice = tmp.users["alice@example.org"]
    sub.rows.append((1, "alice", "example.org", alice.ha1, alice.ha1b))
    location = KAM_LOCATION.empty()
    location.rows.append(
        (
            1,
            "uloc-static-1",
            "bob",
            "example.org",
            "sip:bob@10.0.0.9:5060",
            None,
            None,
            0,
            1.0,
            "static:call",
            1,
            1700000000,
            0,
            0,
            "desk phone",
            None,
            None,
            None,
            0,
            0,
            -1,
            0,
            0,
        )
    )
    version = KAM_VERSION.empty()
    version.rows.extend([(1, "version", 1), (2, "subscriber", 7), (3, "location", 9)])
    for t in (sub, location, version):
        dbtext.write_table(db, t)


def run_register(tmp_path: Path, password: str, expect: str) -> subprocess.CompletedProcess[str]:
    db = tmp_path / "db"
    kport, sport = free_port(), free_port()
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(CONFIG.format(port=kport, modules=MODULES, db=db))
    scenario = tmp_path / "reg.xml"
    scenario.write_text(SCENARIO.replace("PASSWORD", password).replace("EXPECT", expect))
    log = (tmp_path / "kamailio.log").open("w")
    kam = subprocess.Popen(
        [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "8", "-Y", str(tmp_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers in a group of their own: killed with it
    )
    try:
        deadline = time.monotonic() + 30
        while "Listening on" not in (tmp_path / "kamailio.log").read_text():
            if kam.poll() is not None or time.monotonic() > deadline:
                pytest.fail("kamailio did not start:\n" + (tmp_path / "kamailio.log").read_text())
            time.sleep(0.05)
        time.sleep(0.3)  # children up
        return subprocess.run(
            [
                "sipp",
                "-sf",
                str(scenario),
                "-m",
                "1",
                "-s",
                "alice",
                "-i",
                "127.0.0.1",
                "-p",
                str(sport),
                "-timeout",
                "10s",
                "-timeout_error",
                "-nostdin",
                f"127.0.0.1:{kport}",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
            check=False,
        )
    finally:
        # db_text writes its tables back at a clean shutdown. Kamailio sometimes
        # misses a SIGTERM that lands while it is busy: ask again before killing it
        # (a kill writes nothing back).
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT):
            kam.send_signal(sig)
            try:
                kam.wait(timeout=4)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            kam.kill()
            kam.wait()
        # A worker left behind (its main process killed, or gone before it) would
        # run on as an orphan holding its port: end the whole group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(kam.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    db = tmp_path / "db"
    db.mkdir()
    write_tables(db)
    return db


def test_kamailio_authenticates_against_our_tables(tmp_path: Path, tables: Path) -> None:
    ours = (tables / "location").read_bytes()
    r = run_register(tmp_path, "wonder:land\\1", "200")
    log = (tmp_path / "kamailio.log").read_text()
    assert r.returncode == 0, r.stdout + r.stderr + log
    table_errors = [
        line
        for line in log.splitlines()
        if "ERROR" in line and any(m in line for m in ("db_text", "dbt_", "auth_db", "usrloc"))
    ]
    assert table_errors == []
    # On shutdown db_text writes its tables back: our reader loads Kamailio's output,
    # with our static row and the contact SIPp registered.
    location = dbtext.read_table(tables / "location")
    users = sorted(str(r[location.index("username")]) for r in location.rows)
    if (tables / "location").read_bytes() == ours:
        # Kamailio did not get to write back (a loaded machine delays its shutdown
        # past our patience): our own row must still read back.
        assert users == ["bob"]
    else:
        assert users == ["alice", "bob"]


def test_kamailio_rejects_a_wrong_password(tmp_path: Path, tables: Path) -> None:
    r = run_register(tmp_path, "wrong", "401")
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "kamailio.log").read_text()


def test_duplicate_ids_warn_and_kamailio_loads_them(tmp_path: Path, tables: Path) -> None:
    """A duplicate id is only a warning: Kamailio's loader keeps both rows."""
    sub = dbtext.read_table(tables / "subscriber")
    sub.rows.append((1, "carol", "example.org", "0" * 32, "0" * 32))
    dbtext.write_table(tables, sub)
    report = check_dir(tables)
    assert report.errors == []
    assert [w.message for w in report.warnings] == [
        "duplicate id 1 (first at line 2): Kamailio loads both rows"
    ]
    r = run_register(tmp_path, "wonder:land\\1", "200")
    assert r.returncode == 0, r.stdout + r.stderr + (tmp_path / "kamailio.log").read_text()


def test_a_missing_version_row_warns_and_kamailio_refuses_the_table(tmp_path: Path) -> None:
    """What the warning says: db_text loads the table, auth_db refuses to start."""
    db = tmp_path / "db"
    db.mkdir()
    write_tables(db)
    version = dbtext.read_table(db / "version")
    version.rows = [r for r in version.rows if r[1] != "subscriber"]
    dbtext.write_table(db, version)
    report = check_dir(db)
    assert report.errors == []
    assert any("no version row for table 'subscriber'" in w.message for w in report.warnings)
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(CONFIG.format(port=free_port(), modules=MODULES, db=db))
    out = subprocess.run(
        [KAMAILIO, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "8", "-Y", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode != 0, out.stdout + out.stderr
    said = out.stdout + out.stderr
    assert "db_check_table_version" in said and "table subscriber" in said, said
