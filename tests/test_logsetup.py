"""Daemon logging on the box: everything to the RAM syslog, only warnings to the
console line (which `pbx console` owns)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core import logsetup


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("test.logsetup")
    log.propagate = False
    yield log
    for h in list(log.handlers):
        h.close()
        log.removeHandler(h)


def test_with_syslog_the_console_gets_warnings_only(
    tmp_path: Path,
    logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslogd:
        syslogd.bind(str(path))
        syslogd.settimeout(2)
        monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(path))
        logsetup.configure(logger, "T: %(message)s", syslog=True, tag="pbx-test")
        logger.info("routine %d", 1)
        logger.warning("trouble %d", 2)
        got = [syslogd.recv(4096).decode() for _ in range(2)]
    assert "pbx-test[" in got[0] and got[0].endswith("routine 1\x00")
    assert got[1].endswith("trouble 2\x00")
    assert capsys.readouterr().err == "T: trouble 2\n"


def test_without_a_syslog_everything_stays_on_stderr(
    tmp_path: Path,
    logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(tmp_path / "none"))
    logsetup.configure(logger, "T: %(message)s", syslog=True, tag="pbx-test")
    logger.info("routine")
    err = capsys.readouterr().err
    assert "no syslog at" in err and "T: routine\n" in err


def test_a_vanished_syslogd_costs_lines_not_tracebacks(
    tmp_path: Path,
    logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslogd:
        syslogd.bind(str(path))
        monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(path))
        logsetup.configure(logger, "T: %(message)s", syslog=True, tag="pbx-test")
    path.unlink()  # syslogd went away
    logger.info("lost")
    logger.error("still on the console")
    assert capsys.readouterr().err == "T: still on the console\n"
