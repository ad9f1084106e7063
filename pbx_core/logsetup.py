"""Logging for the daemons on the box: the RAM syslog gets everything (`logread`),
the serial console only warnings and errors.

On the image the console line belongs to `pbx console`; the PBX's and the
supervisor's stderr is that same line (init's /dev/console). Routine lines there
would land in the middle of a password prompt or a menu, so with `--syslog` stderr
carries WARNING and above only. Without a syslog socket (a developer machine, or
syslogd not up) everything stays on stderr, as without `--syslog`.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
import sys

SYSLOG_SOCKET = "/dev/log"


class _SyslogFormatter(logging.Formatter):
    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.tag}[{os.getpid()}]: {record.getMessage()}"


class _SyslogHandler(logging.handlers.SysLogHandler):
    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802  # logging's name
        """syslogd gone (restarting, killed): the line is lost, never a traceback on the
        console; the handler reconnects on a later record."""


def _syslog_problem() -> str | None:
    try:
        mode = os.stat(SYSLOG_SOCKET).st_mode
    except OSError as e:
        return e.strerror
    return None if stat.S_ISSOCK(mode) else "not a socket"


def configure(
    logger: logging.Logger, console_format: str, *, syslog: bool, tag: str
) -> logging.Logger:
    """Give `logger` a stderr handler and, with `syslog`, a syslog handler (tagged
    `tag`); returns it. Level INFO."""
    logger.setLevel(logging.INFO)
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter(console_format))
    logger.addHandler(err)
    if not syslog:
        return logger
    problem = _syslog_problem()
    if problem is None:
        try:
            handler = _SyslogHandler(address=SYSLOG_SOCKET)
        except OSError as e:
            problem = e.strerror
    if problem is not None:
        logger.warning("no syslog at %s (%s): logging to stderr only", SYSLOG_SOCKET, problem)
        return logger
    handler.setFormatter(_SyslogFormatter(tag))
    logger.addHandler(handler)
    err.setLevel(logging.WARNING)
    return logger
