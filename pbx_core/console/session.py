"""`pbx console`: the serial console session (banner, login, prompt, machine mode).

One `Session` serves one line until it hangs up: banner, login, then a prompt that
takes menu numbers and commands (`commands.py`), or, after `machine on`, framed
requests from `pbx remote` (`frame.py`). The staged changes live in the session and
are dropped at logout.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pbx_core import paths, sysrec
from pbx_core.console import auth, frame, guard, system
from pbx_core.console.commands import USAGE, Commands, Result
from pbx_core.console.config import ConfigError, Staging, check
from pbx_core.console.terminal import (
    FdChannel,
    HangupError,
    InputCancelledError,
    Terminal,
    cooked_tty,
    raw_tty,
)
from pbx_core.store.dbtext import Table, read_dir
from pbx_core.store.errors import StoreError
from pbx_core.store.generations import Generations
from pbx_core.version import version_string

PROMPT = "pbx> "
PROMPT_DIRTY = "pbx*> "
SHELL = "/bin/sh"  # the maintenance shell (`shell`), run as a login shell


class Options:
    def __init__(self, args: argparse.Namespace) -> None:
        self.root = Path(args.config_root)
        self.factory = Path(args.factory)
        self.control = Path(args.control) if args.control else paths.control_socket()
        self.network_conf = Path(args.network_conf)
        self.idle = args.idle if args.idle > 0 else None
        self.login_delay: float = args.login_delay
        self.failsafe: float = args.failsafe
        self.runtime = Path(args.runtime) if args.runtime else paths.runtime_dir()
        # Calls recorded on demand (*1), for `pbx remote pull-recordings`.
        recordings = getattr(args, "recordings", None)
        self.recordings = Path(recordings or paths.DATA_DIR / "recordings" / "calls")
        # System recordings (pbx_core/sysrec.py): beside the call recordings.
        system = getattr(args, "system_recordings", None)
        self.system_recordings = Path(system) if system else sysrec.folder(self.recordings.parent)


class Session:
    def __init__(self, term: Terminal, opts: Options) -> None:
        self.term = term
        self.opts = opts
        self.staging = Staging(self.load)
        self.commands = Commands(self)
        self.pull_files: dict[str, bytes] = {}
        self.machine = False
        self.last_seq = -1
        self.last_answer = b""
        self.shell_requested = False

    # ------------------------------------------------------------------ configuration
    def load(self) -> dict[str, Table]:
        """The committed tables: the current generation, else the factory ones."""
        gens = Generations(self.opts.root)
        try:
            if gens.current() is not None:
                return gens.tables()
        except StoreError as e:
            self.term.line(f"warning: the current generation cannot be read ({e});")
            self.term.line("         editing the factory tables instead")
        return read_dir(self.opts.factory)

    def commit(self) -> tuple[str, list[str]]:
        """Check and commit the staged tables; (generation, notes for the user)."""
        tables = self.staging.tables
        settings = {
            k: self.staging.setting(k)
            for k in ("net_mode", "net_address", "net_gateway", "net_dns")
        }
        problems = system.network_problems(settings)
        if problems:
            raise ConfigError("; ".join(problems))
        check(tables)
        try:
            gen = Generations(self.opts.root).commit(tables)
        except StoreError as e:
            raise ConfigError(str(e)) from None
        self.staging.committed()
        notes = []
        note = system.write_network_conf(self.opts.network_conf, settings)
        if note:
            notes.append(note)
        status = self.daemon_status()
        cfg = status.get("config") or {}
        if status.get("ok") and Path(str(cfg.get("path", ""))) != self.opts.root:
            notes.append(f"note: the running PBX uses {cfg.get('path')}, not {self.opts.root}")
        elif status.get("ok"):
            # Load it now rather than at the daemon's next look (every 2 s): what the
            # next command (status, a test call) sees is what was just committed.
            if self.daemon("reload").get("reloaded"):
                notes.append("the PBX has loaded it; calls in progress continue")
            else:
                notes.append("the PBX loads it within 2 s; calls in progress continue")
        return gen.name, notes

    def commit_password(self, hashed: str | None) -> str:
        """Commit a new admin password (None: back to the factory one) on top of the
        committed tables only: staged edits stay staged."""
        base = Staging(lambda: dict(self.staging.base))
        base.set_setting(auth.SETTING, hashed or "", internal=True)
        try:
            gen = Generations(self.opts.root).commit(base.tables)
        except StoreError as e:
            raise ConfigError(str(e)) from None
        self.staging.set_setting(auth.SETTING, hashed or "", internal=True)
        self.staging.base = base.tables
        return gen.name

    # ------------------------------------------------------------------ the daemon
    def daemon_status(self) -> dict[str, Any]:
        return self.daemon("status")

    def daemon(self, cmd: str) -> dict[str, Any]:
        """One control-socket command to the running PBX; {"ok": False, "error": …}
        when it does not answer."""
        from pbx_core.pbx.control import query  # noqa: PLC0415  # only when asked

        try:
            return query(self.opts.control, {"cmd": cmd}, timeout=3)
        except (OSError, ValueError) as e:
            return {"ok": False, "error": f"the PBX is not answering ({e})"}

    @staticmethod
    def status_lines(status: dict[str, Any]) -> list[str]:
        if not status.get("ok"):
            return [f"PBX: {status.get('error')}"]
        cfg = status.get("config") or {}
        out = [
            f"PBX: up {status.get('uptime')} s, SIP on {', '.join(status.get('sip', []))}",
            f"configuration {cfg.get('generation')} ({cfg.get('kind')})",
            f"registered phones: {len(status.get('registrations', []))}",
        ]
        out += [
            f"  {_item(r, 'aor', 'contact', 'expires')}" for r in status.get("registrations", [])
        ]
        out.append(f"active calls: {len(status.get('calls', []))}")
        out += [f"  {_item(c)}" for c in status.get("calls", [])]
        out.append(f"trunks: {len(status.get('trunks', []))}")
        out += [f"  {_item(t, 'name', 'host', 'state')}" for t in status.get("trunks", [])]
        return [line[:79] for line in out]

    # ------------------------------------------------------------------ screens
    def banner(self) -> None:
        t = self.term
        t.line("")
        t.line("=" * 79)
        t.line(f" {version_string()} - serial console")
        ips = system.addresses()
        t.line(f" IP: {', '.join(ips) if ips else 'no address'}")
        status = self.daemon_status()
        if status.get("ok"):
            regs, calls = len(status.get("registrations", [])), len(status.get("calls", []))
            t.line(f" Registered phones: {regs}   Active calls: {calls}")
        else:
            t.line(" PBX: not running (or not answering)")
        t.line("=" * 79)

    def login(self) -> bool:
        stored = self.staging.setting(auth.SETTING)
        if not stored:
            self.term.line(f" Factory password: {auth.FACTORY_PASSWORD} (to be changed now)")
        password = self.term.read_line("Password: ", secret=True)
        if not password:
            return False  # Enter alone shows the banner again: not a failed attempt
        if not auth.verify(password, stored):
            time.sleep(self.opts.login_delay)
            self.term.drain()
            self.term.line("Login incorrect")
            return False
        if not stored:
            self.term.line("The factory password must be changed before first use.")
            new = self.ask_new_password()
            if new is None:
                return False
            self.term.line(f"password changed ({self.commit_password(auth.hash_password(new))})")
        return True

    def ask_new_password(self) -> str | None:
        for _ in range(3):
            new = self.term.read_line("New password: ", secret=True) or ""
            problem = auth.password_problem(new)
            if problem:
                self.term.line(f"Not accepted: {problem}")
                continue
            if self.term.read_line("Retype new password: ", secret=True) != new:
                self.term.line("The two passwords differ")
                continue
            return new
        return None

    def failsafe(self) -> None:
        """Right after boot only (a marker in RAM): offer to reset the admin password.
        Being at the console then means having the box (and its power) in hand."""
        marker = self.opts.runtime / "console-failsafe-offered"
        if self.opts.failsafe <= 0 or marker.exists():
            return
        with contextlib.suppress(OSError):
            marker.write_text("")
        self.term.line("")
        self.term.line(
            f"Failsafe: press f then Enter within {self.opts.failsafe:g} s to reset the admin"
        )
        self.term.line("password to the factory default (the configuration is kept).")
        try:
            answer = self.term.read_line("> ", timeout=self.opts.failsafe)
        except InputCancelledError:
            return
        if (answer or "").strip().lower() != "f":
            return
        try:
            gen = self.commit_password(None)
        except ConfigError as e:
            self.term.line(f"failsafe: {e}")
            return
        self.term.line(f"admin password reset to the factory default ({gen})")

    # ------------------------------------------------------------------ loops
    def serve(self) -> None:
        """Sessions until the line hangs up."""
        self.failsafe()
        while True:
            self.staging = Staging(self.load)
            self.machine = False
            self.last_seq = -1
            self.banner()
            try:
                if not self.login():
                    continue
                self.term.line('Type a menu number, a command, or "help".')
                from pbx_core.console.menu import Menu  # noqa: PLC0415  # after login only

                Menu(self).show()
                self.prompt_loop()
                if self.shell_requested:
                    return
            except InputCancelledError:
                continue
            except HangupError as e:
                if e.args and e.args[0] in ("idle", "Ctrl-D"):
                    with contextlib.suppress(HangupError):
                        self.term.line(f"\nlogged out ({e.args[0]})")
                    continue
                return

    def prompt_loop(self) -> None:
        from pbx_core.console.menu import Menu  # noqa: PLC0415  # after login only

        menu = Menu(self)
        while True:
            if self.machine:
                if not self.machine_step():
                    return
                continue
            prompt = PROMPT_DIRTY if self.staging.dirty else PROMPT
            try:
                line = (self.term.read_line(prompt) or "").strip()
            except InputCancelledError:
                continue
            if not line:
                continue
            if line in ("logout", "exit", "quit"):
                self.term.line("bye")
                return
            if line in ("menu", "?"):
                menu.show()
            elif line.isdigit():
                try:
                    menu.run(int(line))
                except InputCancelledError:
                    self.term.line("(cancelled)")
                except ConfigError as e:
                    self.term.line(f"error: {e}")
                if menu.logout:
                    return
            elif line == "machine on":
                self.machine = True
                self.last_seq = -1
                self.term.channel.write(
                    frame.encode_response(0, {"ok": True, "status": 0, "data": "machine"})
                )
            elif line == "passwd":
                self.passwd()
            elif line == "shell":
                if self.staging.dirty:
                    self.term.line("error: commit or revert the staged changes first")
                    continue
                self.term.line("Maintenance shell: exit (or Ctrl-D) returns to the console.")
                self.shell_requested = True
                return
            elif line.split()[0] == "import":
                self.show_result(self.import_human(line.split()[1:]))
            else:
                self.show_result(self.commands.run(line))

    def show_result(self, result: Result) -> None:
        for line in result.lines:
            self.term.line(line)
        if result.status:
            self.term.line(f"error: {result.error}")

    def passwd(self) -> None:
        new = self.ask_new_password()
        if new is None:
            self.term.line("password unchanged")
            return
        try:
            self.term.line(f"password changed ({self.commit_password(auth.hash_password(new))})")
        except ConfigError as e:
            self.term.line(f"error: {e}")

    def import_human(self, args: list[str]) -> Result:
        if len(args) != 1:
            return Result(USAGE, error="usage: import TABLE (then the dbtext lines, then '.')")
        self.term.line(f"Paste the dbtext of {args[0]}; end with a line containing only '.'")
        lines = []
        while (line := self.term.read_line("")) != ".":
            lines.append(line or "")
        try:
            kept = self.staging.setting(auth.SETTING)
            n = self.staging.import_table(args[0], "\n".join(lines) + "\n")
            if kept and not self.staging.setting(auth.SETTING):
                self.staging.set_setting(auth.SETTING, kept, internal=True)
        except ConfigError as e:
            return Result(1, error=str(e))
        return Result(lines=[f"staged {args[0]}: {n} rows; commit to apply"])

    def machine_step(self) -> bool:
        """One framed request; False when the session ends."""
        line = self.term.read_line("", echo=False)
        raw = (line or "").strip()
        if raw == "logout":
            return False
        if raw == "machine off":
            self.machine = False
            self.term.line("machine mode off")
            return True
        if not raw:
            return True
        decoded = frame.decode(raw.encode("utf-8", "replace"))
        if decoded is None:
            answer = {"ok": False, "status": frame.BAD_FRAME, "error": "bad frame"}
            self.term.channel.write(frame.encode_response(0, answer))
            return True
        seq, body = decoded
        if seq == self.last_seq:
            self.term.channel.write(self.last_answer)  # a retry: never run it twice
            return True
        if body in ("logout", "machine off"):
            out = frame.encode_response(seq, {"ok": True, "status": 0})
            self.term.channel.write(out)
            if body == "logout":
                return False
            self.machine = False
            return True
        result = self.commands.run(body)
        out = frame.encode_response(seq, result.answer())
        self.last_seq, self.last_answer = seq, out
        self.term.channel.write(out)
        return True


def _item(item: object, *keys: str) -> str:
    if not isinstance(item, dict):
        return str(item)
    picked = [str(item[k]) for k in keys if k in item] if keys else []
    return " ".join(picked) if picked else " ".join(f"{k}={v}" for k, v in item.items())


def open_channel(
    args: argparse.Namespace,
) -> tuple[FdChannel, Callable[[], contextlib.AbstractContextManager[None]]]:
    if args.tty:
        fd = os.open(args.tty, os.O_RDWR | os.O_NOCTTY)
        return FdChannel(fd), lambda: raw_tty(fd, args.baud)
    return FdChannel(sys.stdin.fileno(), sys.stdout.fileno()), lambda: raw_tty(sys.stdin.fileno())


def exec_shell(channel: FdChannel) -> int:
    """Replace this process by the maintenance shell on the console's line (its tty
    settings already restored). When the shell exits, init's respawn brings the
    console back. Returns only if the shell cannot be started."""
    _log_auth(f"admin opened a maintenance shell ({SHELL}) on the console")
    # The shell gets a person's line and the keyboard signals back (ignored ones would
    # be inherited: Ctrl-C could not stop a ping).
    guard.release()
    cooked_tty(channel.rfd)
    for target, fd in ((0, channel.rfd), (1, channel.wfd), (2, channel.wfd)):
        if fd != target:
            os.dup2(fd, target)
    try:
        os.execv(SHELL, ["-sh"])  # noqa: S606  # the admin asked for a shell; argv0 "-": login shell
    except OSError as e:
        print(f"pbx console: cannot start {SHELL}: {e.strerror}", file=sys.stderr)
    return 1


def _log_auth(message: str) -> None:
    """One line in the system log (busybox syslogd's RAM ring) under auth."""
    import syslog  # noqa: PLC0415  # only when a shell is opened

    syslog.openlog("pbx-console", syslog.LOG_PID, syslog.LOG_AUTH)
    syslog.syslog(syslog.LOG_NOTICE, message)
    syslog.closelog()


# init respawns the console on ttyS0 at once when it exits: one that fails at start
# (or a line that reads end-of-file at once) would spin a CPU the PBX needs. An end
# this soon after the start waits this long first.
RESPAWN_PAUSE = 5.0


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rc = _main(args)
    if rc != 130 and time.monotonic() - started < RESPAWN_PAUSE:
        time.sleep(RESPAWN_PAUSE)
    return rc


def _main(args: argparse.Namespace) -> int:
    try:
        opts = Options(args)
        channel, raw = open_channel(args)
    except OSError as e:
        print(f"pbx console: {e}", file=sys.stderr)
        return 1
    if not opts.factory.is_dir():
        print(f"pbx console: no factory tables at {opts.factory}", file=sys.stderr)
        return 2
    session = Session(Terminal(channel, idle=opts.idle), opts)
    try:
        with raw():
            # What was typed while we started (`pbx remote`'s wake-ups at boot) is
            # not an answer to a prompt it could not yet see.
            session.term.drain()
            session.serve()
    except HangupError:
        pass
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001  # a bug must not leave the line dead: init restarts us
        print(f"\r\npbx console: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        _log_auth(f"console ended by an internal error: {type(e).__name__}: {e}")
        return 1
    if session.shell_requested:
        return exec_shell(channel)
    return 0
