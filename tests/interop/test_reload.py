"""The running daemon picks up a newly committed configuration generation (new
extension, changed password) and serves it without dropping the calls and
registrations it has; a broken configuration is refused at start with a clear
message."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pbx_core.store.generations import Generations
from tests.conftest import FACTORY, ROOT, PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import Phones, check, pbx_status, run, wait_cdr


def _edited_tables(dest: Path) -> Path:
    """The factory tables with a new extension 104 (password new-104-secret) and
    102's password changed to changed-102."""
    shutil.copytree(FACTORY, dest)
    sub = dest / "subscriber"
    text = sub.read_text().replace(":102:pbx.local:change-me-102:", ":102:pbx.local:changed-102:")
    assert "changed-102" in text
    sub.write_text(text + "5:104:pbx.local:new-104-secret::\n")
    ext = dest / "pbx_extension"
    ext.write_text(ext.read_text() + "5:104::Added at run time:20:1\n")
    return dest


def _register(pbx: PbxProcess, tmp: Path, user: str, password: str, name: str) -> int:
    """The final status of a REGISTER of `user` with `password` (200 or 401)."""
    res = run(
        "register.xml",
        (pbx.host, pbx.port),
        tmp,
        name,
        keys={"user": user, "contact": f"<sip:{user}@127.0.0.1:5999>", "expires": "60"},
        auth=(user, password),
    )
    assert res.returncode == 0, res.report()
    return res.statuses()[-1]


def _wait(what: str, cond: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_reload_serves_new_tables_and_keeps_calls_and_registrations(tmp_path: Path) -> None:
    """A new generation committed under the running daemon: it serves the new tables
    (a new extension registers, a changed password is the only one that works) while
    a call established before the reload carries on (re-INVITE and BYE after it) and
    the registrations made before it still receive calls."""
    root = tmp_path / "config"
    gens = Generations(root)
    gens.commit_dir(FACTORY)
    pbx = start_pbx(tmp_path, root, extra=["--state", str(tmp_path / "state.mdb")])
    control = tmp_path / "run" / "control.sock"
    phones = Phones((pbx.host, pbx.port))
    try:
        # Before: the old tables, and 104 does not exist.
        assert _register(pbx, tmp_path, "104", "new-104-secret", "before-104") == 401
        first = pbx_status(control)["config"]
        assert isinstance(first, dict)
        with (
            phones.callee(tmp_path, "uas_answer.xml", "101") as talking,
            phones.callee(tmp_path, "uas_answer.xml", "103") as waiting,
        ):
            with ThreadPoolExecutor(1) as pool:
                caller = pool.submit(phones.call, tmp_path, "uac_call_long.xml", "101")
                _wait("the call", lambda: len(_calls(control)) == 1)
                gens.commit_dir(_edited_tables(tmp_path / "edited"))
                _wait(
                    "the reload",
                    lambda: _config(control)["generation"] != first["generation"],
                )
                # The new tables are served while the old call is up.
                assert _calls(control), "the call was dropped by the reload"
                assert _register(pbx, tmp_path, "104", "new-104-secret", "after-104") == 200
                assert _register(pbx, tmp_path, "102", "change-me-102", "old-102") == 401
                assert _register(pbx, tmp_path, "102", "changed-102", "new-102") == 200
                aors = {r["aor"] for r in _registrations(control)}
                assert {"101@pbx.local", "103@pbx.local"} <= aors, aors
                res = caller.result()
            b = talking.finish()
            # The registration made before the reload still gets its calls.
            later = phones.call(tmp_path, "uac_call.xml", "103", name="after-reload")
            c = waiting.finish()
        check(res)
        check(b)
        check(later)
        check(c)
        assert res.responses(200, "3 INVITE"), res.report()  # the re-INVITE after it
        assert len(b.requests("BYE")) == 1, b.report()
        row = wait_cdr(tmp_path / "state.mdb", res.call_id)
        assert row["disposition"] == "ANSWERED" and row["cause"] == "caller hung up", row
        assert int(row["billsec"]) >= 4, row
    finally:
        stop_pbx(pbx)
    log = pbx.log()
    assert "Traceback" not in log, log
    assert "configuration reloaded" in log, log


def _calls(control: Path) -> list[dict[str, object]]:
    calls = pbx_status(control)["calls"]
    assert isinstance(calls, list)
    return calls


def _registrations(control: Path) -> list[dict[str, object]]:
    regs = pbx_status(control)["registrations"]
    assert isinstance(regs, list)
    return regs


def _config(control: Path) -> dict[str, object]:
    config = pbx_status(control)["config"]
    assert isinstance(config, dict)
    return config


def test_broken_configuration_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "subscriber").write_text("username(str) domain(str) ha1(str)\nalice:example.com\n")
    out = subprocess.run(
        [sys.executable, "-m", "pbx_core", "run", "--config", str(bad), "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PBX_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode == 2
    assert "cannot load the configuration" in out.stderr
    assert "subscriber" in out.stderr
    assert "Traceback" not in out.stderr


def test_status_over_the_control_socket(tmp_path: Path) -> None:
    pbx = start_pbx(tmp_path)
    try:
        env = {"PBX_RUNTIME_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-m", "pbx_core", "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert f"127.0.0.1:{pbx.port}" in out.stdout
        assert "registrations 0" in out.stdout
        js = subprocess.run(
            [sys.executable, "-m", "pbx_core", "status", "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=False,
        )
        assert '"ok": true' in js.stdout
    finally:
        stop_pbx(pbx)
    # The daemon removed its socket on the way out; status now says so clearly.
    gone = subprocess.run(
        [sys.executable, "-m", "pbx_core", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert gone.returncode == 1
    assert "no daemon answering" in gone.stderr
    assert "Traceback" not in gone.stderr
