"""The line command language (OpenWrt uci's tradition) and the transfer commands of
the machine mode. Every command returns a `Result`: a status like a program's exit
status (0 ok, 1 refused, 2 usage), lines for people and data for scripts."""

from __future__ import annotations

import base64
import binascii
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pbx_core import sysrec
from pbx_core.console import auth, recordings, sysrecs, toggles
from pbx_core.console.config import ConfigError, digest, parse_path, parse_tables
from pbx_core.store.dbtext import format_table

if TYPE_CHECKING:
    from pbx_core.console.session import Session

OK, ERROR, USAGE = 0, 1, 2
CHUNK = 512  # bytes of table data per transfer frame (~700 characters of base64)

HELP = """\
Commands (changes are staged until commit; `changes` lists them):
  show [TABLE|settings]        every value, as TABLE[KEY].COLUMN=VALUE
  show toggles EXT             an extension's toggles (*78 DND, *72 forward...)
  get PATH                     one value: TABLE[KEY].COLUMN or settings.NAME
  set PATH=VALUE               change a value (empty VALUE = NULL/default)
  add TABLE COLUMN=VALUE ...   add a row; prints its key
  delete PATH                  delete a row TABLE[KEY] (or a setting)
  changes                      what commit would change
  commit                       check and make the changes the running config
  revert                       drop the staged changes
  tables                       the tables and their row counts
  status                       registrations, calls, trunks of the running PBX
  export [TABLE]               tables as dbtext
  sysrec-list                  the system recordings (greetings played as sys:NAME)
  sysrec-delete NAME           remove one (`pbx remote sysrec-push` adds them)
  import TABLE                 read a table as dbtext, ended by a line "."
  passwd                       change the admin password
  shell                        a root shell for maintenance; exit returns here
  menu                         the numbered menu; a number runs a menu item
  logout                       end the session (also Ctrl-D)
KEY is the row's key columns, comma separated, or @N for the N-th row.
Toggles live in the running PBX: set toggles[EXT].FEATURE.TOGGLE=VALUE
(on/off, a number; empty = unset) acts at once, as a phone code; not staged."""


@dataclass
class Result:
    status: int = OK
    lines: list[str] = field(default_factory=list)
    data: Any = None
    error: str = ""

    def answer(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.status == OK, "status": self.status}
        if self.lines:
            out["lines"] = self.lines
        if self.data is not None:
            out["data"] = self.data
        if self.error:
            out["error"] = self.error
        return out


def error(message: str, status: int = ERROR) -> Result:
    return Result(status, error=message)


class Commands:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.uploads: dict[str, bytearray] = {}
        self.expected: dict[str, tuple[int, str]] = {}
        self.sysrec = sysrecs.SystemRecordings(session.opts.system_recordings)
        self.table: dict[str, Callable[[list[str], str], Result]] = {
            "help": self.help,
            "show": self.show,
            "get": self.get,
            "set": self.set,
            "add": self.add,
            "delete": self.delete,
            "changes": self.changes,
            "commit": self.commit,
            "revert": self.revert,
            "tables": self.tables,
            "status": self.status,
            "export": self.export,
            "ping": self.ping,
            "pull-list": self.pull_list,
            "pull-chunk": self.pull_chunk,
            "rec-list": self.rec_list,
            "rec-chunk": self.rec_chunk,
            "push-begin": self.push_begin,
            "push-table": self.push_table,
            "push-chunk": self.push_chunk,
            "push-finish": self.push_finish,
            "sysrec-list": self.sysrec_list,
            "sysrec-delete": self.sysrec_delete,
            "sysrec-chunk": self.sysrec_chunk,
            "sysrec-begin": self.sysrec_begin,
            "sysrec-data": self.sysrec_data,
            "sysrec-finish": self.sysrec_finish,
        }

    def run(self, line: str) -> Result:
        word, _, rest = line.strip().partition(" ")
        handler = self.table.get(word)
        if handler is None:
            return error(f"unknown command {word!r}; `help` lists them", USAGE)
        try:
            args = shlex.split(rest) if word not in ("set",) else [rest.strip()]
        except ValueError as e:
            return error(f"{word}: {e}", USAGE)
        try:
            return handler(args, rest.strip())
        except (ConfigError, toggles.ToggleError, sysrec.SysrecError, sysrecs.UploadError) as e:
            return error(str(e))

    # ------------------------------------------------------------------ uci-like
    def help(self, _args: list[str], _rest: str) -> Result:
        return Result(lines=HELP.splitlines())

    def show(self, args: list[str], _rest: str) -> Result:
        if args and args[0] == toggles.PREFIX:
            if len(args) != 2:
                return error("usage: show toggles EXTENSION", USAGE)
            got = toggles.ask(self.s.opts.control, args[1])
            shown = toggles.lines(args[1], got)
            return Result(lines=shown, data=got)
        if len(args) > 1:
            return error("usage: show [TABLE|settings] | show toggles EXTENSION", USAGE)
        lines = self.s.staging.show(args[0] if args else None)
        return Result(lines=lines, data=lines)

    def get(self, args: list[str], _rest: str) -> Result:
        if len(args) != 1:
            return error("usage: get PATH", USAGE)
        if toggles.is_path(args[0]):
            ext, name = toggles.parse_path(args[0])
            got = toggles.ask(self.s.opts.control, ext)
            if name not in got:
                return error(f"no toggle {name!r} (known: {', '.join(sorted(got))})")
            shown = toggles.show_value(got[name])
            return Result(lines=[shown], data=shown)
        value = self.s.staging.get(parse_path(args[0]))
        return Result(lines=[value], data=value)

    def set(self, _args: list[str], rest: str) -> Result:
        path, eq, value = rest.partition("=")
        if not eq:
            return error("usage: set PATH=VALUE", USAGE)
        if toggles.is_path(path):
            ext, name = toggles.parse_path(path)
            got = toggles.ask(self.s.opts.control, ext, name, toggles.parse_value(value))
            shown = f"{toggles.PREFIX}[{ext}].{name}={toggles.show_value(got.get(name))}"
            return Result(lines=[f"{shown} (in force now; not staged)"], data=got)
        self.s.staging.set(parse_path(path), value.strip())
        return Result()

    def add(self, args: list[str], _rest: str) -> Result:
        if not args:
            return error("usage: add TABLE COLUMN=VALUE ...", USAGE)
        values: dict[str, str] = {}
        for a in args[1:]:
            col, eq, value = a.partition("=")
            if not eq or not col:
                return error(f"add: expected COLUMN=VALUE, got {a!r}", USAGE)
            values[col] = value
        key = self.s.staging.add(args[0], values)
        return Result(lines=[f"{args[0]}[{key}]"], data=key)

    def delete(self, args: list[str], _rest: str) -> Result:
        if len(args) != 1:
            return error("usage: delete TABLE[KEY] | settings.NAME", USAGE)
        self.s.staging.delete(parse_path(args[0]))
        return Result()

    def changes(self, _args: list[str], _rest: str) -> Result:
        lines = self.s.staging.changes()
        return Result(lines=lines or ["no staged changes"], data=lines)

    def commit(self, _args: list[str], _rest: str) -> Result:
        name, notes = self.s.commit()
        return Result(lines=[f"committed {name}", *notes], data=name)

    def revert(self, _args: list[str], _rest: str) -> Result:
        n = len(self.s.staging.changes())
        self.s.staging.revert()
        return Result(lines=[f"dropped {n} staged change(s)"], data=n)

    def tables(self, _args: list[str], _rest: str) -> Result:
        counts = {n: len(t.rows) for n, t in sorted(self.s.staging.tables.items())}
        return Result(lines=[f"{n:<16} {c} rows" for n, c in counts.items()], data=counts)

    def status(self, _args: list[str], _rest: str) -> Result:
        status = self.s.daemon_status()
        return Result(lines=self.s.status_lines(status), data=status)

    def export(self, args: list[str], _rest: str) -> Result:
        names = args or sorted(self.s.staging.tables)
        lines: list[str] = []
        data: dict[str, str] = {}
        for n in names:
            text = self.s.staging.export(n)
            data[n] = text
            lines += [f"--- {n}", *text.splitlines()]
        return Result(lines=lines, data=data)

    # ------------------------------------------------------------------ transfers
    def ping(self, _args: list[str], _rest: str) -> Result:
        return Result(data="pong")

    def pull_list(self, _args: list[str], _rest: str) -> Result:
        files = {n: format_table(t).encode() for n, t in self.s.staging.tables.items()}
        self.s.pull_files = files
        return Result(data={n: {"size": len(d), "sha256": digest(d)} for n, d in files.items()})

    def pull_chunk(self, args: list[str], _rest: str) -> Result:
        if len(args) != 3 or not args[1].isdigit() or not args[2].isdigit():
            return error("usage: pull-chunk TABLE OFFSET LENGTH", USAGE)
        data = self.s.pull_files.get(args[0])
        if data is None:
            return error(f"no table {args[0]!r} in the pull list (pull-list first)")
        off, n = int(args[1]), min(int(args[2]), CHUNK)
        return Result(data={"offset": off, "b64": base64.b64encode(data[off : off + n]).decode()})

    def rec_list(self, _args: list[str], _rest: str) -> Result:
        try:
            return Result(data=recordings.listing(self.s.opts.recordings))
        except recordings.RecordingError as e:
            return error(str(e))

    def rec_chunk(self, args: list[str], _rest: str) -> Result:
        if len(args) != 3 or not args[1].isdigit() or not args[2].isdigit():
            return error("usage: rec-chunk NAME OFFSET LENGTH", USAGE)
        off = int(args[1])
        try:
            data = recordings.chunk(self.s.opts.recordings, args[0], off, int(args[2]))
        except recordings.RecordingError as e:
            return error(str(e))
        return Result(data={"offset": off, "b64": base64.b64encode(data).decode()})

    def push_begin(self, _args: list[str], _rest: str) -> Result:
        self.uploads.clear()
        self.expected.clear()
        return Result()

    def push_table(self, args: list[str], _rest: str) -> Result:
        if len(args) != 3 or not args[1].isdigit() or len(args[2]) != 64:
            return error("usage: push-table TABLE SIZE SHA256", USAGE)
        self.expected[args[0]] = (int(args[1]), args[2])
        self.uploads[args[0]] = bytearray()
        return Result()

    def push_chunk(self, args: list[str], _rest: str) -> Result:
        if len(args) != 3 or not args[1].isdigit():
            return error("usage: push-chunk TABLE OFFSET BASE64", USAGE)
        buf = self.uploads.get(args[0])
        if buf is None:
            return error(f"push-chunk: {args[0]!r} was not announced with push-table")
        try:
            data = base64.b64decode(args[2], validate=True)
        except (binascii.Error, ValueError):
            return error("push-chunk: bad base64")
        off = int(args[1])
        if off == len(buf):
            buf += data
        elif off + len(data) > len(buf) or buf[off : off + len(data)] != data:
            return error(f"push-chunk: {args[0]} expects offset {len(buf)}, not {off}")
        if len(buf) > self.expected[args[0]][0]:
            return error(f"push-chunk: {args[0]} is longer than announced")
        return Result(data=len(buf))

    def push_finish(self, _args: list[str], _rest: str) -> Result:
        for name, (size, sha) in sorted(self.expected.items()):
            got = bytes(self.uploads[name])
            if len(got) != size or digest(got) != sha:
                return error(f"push-finish: {name} is incomplete or damaged ({len(got)}/{size})")
        if not self.expected:
            return error("push-finish: no tables were pushed")
        tables = parse_tables({n: bytes(b) for n, b in self.uploads.items()})
        from pbx_core.console.config import check  # noqa: PLC0415  # keeps imports light

        check(tables)
        kept = self.s.staging.setting(auth.SETTING)
        self.s.staging.replace_all(tables)
        if kept and not self.s.staging.setting(auth.SETTING):
            # A table set from elsewhere (or the factory's) keeps this box's password.
            self.s.staging.set_setting(auth.SETTING, kept, internal=True)
        n = len(self.s.staging.changes())
        self.uploads.clear()
        self.expected.clear()
        return Result(lines=[f"staged {len(tables)} tables ({n} change(s)); commit to apply"])

    # ------------------------------------------------------------------ system recordings
    def sysrec_list(self, _args: list[str], _rest: str) -> Result:
        lines, data = self.sysrec.lines()
        return Result(lines=lines, data=data)

    def sysrec_delete(self, args: list[str], _rest: str) -> Result:
        if len(args) != 1:
            return error("usage: sysrec-delete NAME", USAGE)
        self.sysrec.delete(args[0])
        return Result(lines=[f"deleted system recording {args[0]}"])

    def sysrec_chunk(self, args: list[str], _rest: str) -> Result:
        if len(args) != 3 or not args[1].isdigit() or not args[2].isdigit():
            return error("usage: sysrec-chunk NAME OFFSET LENGTH", USAGE)
        off = int(args[1])
        data = self.sysrec.chunk(args[0], off, int(args[2]))
        return Result(data={"offset": off, "b64": base64.b64encode(data).decode()})

    def sysrec_begin(self, args: list[str], _rest: str) -> Result:
        if len(args) != 3:
            return error("usage: sysrec-begin NAME SIZE SHA256", USAGE)
        self.sysrec.begin(*args)
        return Result()

    def sysrec_data(self, args: list[str], _rest: str) -> Result:
        if len(args) != 2:
            return error("usage: sysrec-data OFFSET BASE64", USAGE)
        return Result(data=self.sysrec.data(*args))

    def sysrec_finish(self, _args: list[str], _rest: str) -> Result:
        name, size = self.sysrec.finish()
        seconds = (size - sysrec.HEADER) / sysrec.RATE
        return Result(lines=[f"saved system recording {name} ({seconds:.1f} s)"], data=size)
