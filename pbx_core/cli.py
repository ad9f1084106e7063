"""The `pbx` command line: one program, many subcommands (docs/architecture.md).

Each subcommand imports its implementation when it runs, so `pbx sip check` does not
pay for LMDB or asyncio. The imports are literal so PyInstaller finds them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pbx_core.version import version_string


def _cmd_run(args: argparse.Namespace) -> int:
    from pbx_core import app

    return app.run(args)


def _cmd_sip_check(args: argparse.Namespace) -> int:
    from pbx_core.sip import check

    return check.check_files(args.files, sys.stdout)


def _join_features(command: str) -> bool:
    """Join the features' own tables and settings to the core's before anything
    reads tables (store/feature_schema.py); False (said on stderr) on a clash."""
    from pbx_core.features.registry import FEATURES
    from pbx_core.store.feature_schema import SchemaClash, register_features

    try:
        register_features(FEATURES)
    except SchemaClash as exc:
        print(f"pbx {command}: {exc}", file=sys.stderr)
        return False
    return True


def _cmd_db(args: argparse.Namespace) -> int:
    from pbx_core.store import cli as store_cli

    if not _join_features("db"):
        return 2
    return store_cli.main(args)


def _cmd_status(args: argparse.Namespace) -> int:
    from pbx_core import paths
    from pbx_core.pbx.control import query

    path = args.control or paths.control_socket()
    try:
        answer = query(path, {"cmd": "status"})
    except (OSError, ValueError) as exc:
        print(f"pbx status: no daemon answering on {path}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0 if answer.get("ok") else 1
    if not answer.get("ok"):
        print(f"pbx status: {answer.get('error')}", file=sys.stderr)
        return 1
    cfg = answer["config"]
    print(answer["version"])
    print(f"uptime        {answer['uptime']} s (pid {answer['pid']})")
    print(f"SIP           {', '.join(answer['sip'])} (UDP, TCP)")
    print(f"configuration {cfg['path']} ({cfg['kind']}, {cfg['generation']})")
    print(f"transactions  {answer['transactions']}, TCP connections {answer['tcp_connections']}")
    print(f"registrations {len(answer['registrations'])}")
    for reg in answer["registrations"]:
        print(f"  {reg}")
    print(f"calls         {len(answer['calls'])}")
    for call in answer["calls"]:
        print(f"  {call}")
    print(f"trunks        {len(answer['trunks'])}")
    for trunk in answer["trunks"]:
        print(f"  {trunk}")
    for name, state in (answer.get("features") or {}).items():  # camp-on, broadcasts …
        print(f"{name:<13} {json.dumps(state, sort_keys=True)}")
    return 0


def _cmd_cdr(args: argparse.Namespace) -> int:
    from pbx_core.pbx import cdr

    return cdr.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pbx", description=version_string())
    p.add_argument("--version", action="version", version=version_string())
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="the PBX daemon")
    run.add_argument("--config", required=True, metavar="DIR", help="dbtext table directory")
    run.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="ADDR:PORT",
        help="SIP listen address (UDP and TCP); repeatable; ADDR alone or [V6] alone "
        "listens on the setting sip_port; default 0.0.0.0",
    )
    run.add_argument("--trace", metavar="FILE", help="log every SIP message in/out ('-' = stderr)")
    run.add_argument("--control", metavar="PATH", help="control socket (default: in the RAM dir)")
    run.add_argument(
        "--syslog",
        action="store_true",
        help="log to syslog (/dev/log); stderr then gets warnings and errors only",
    )
    run.add_argument(
        "--state",
        metavar="PATH",
        help="runtime-state LMDB (CDRs, toggles, voicemail index; default /data/state.mdb)",
    )
    run.add_argument(
        "--media-address",
        metavar="ADDR",
        help="address advertised for RTP (default: the SIP listener's, or the LAN address)",
    )
    run.set_defaults(func=_cmd_run)

    sip = sub.add_parser("sip", help="SIP tools")
    sip_sub = sip.add_subparsers(dest="sip_command", metavar="COMMAND")
    sip_sub.required = True
    check = sip_sub.add_parser("check", help="parse each file as one SIP message")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=_cmd_sip_check)

    db = sub.add_parser("db", help="dbtext table tools")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND")
    db_sub.required = True
    dbc = db_sub.add_parser("check", help="validate a dbtext directory")
    dbc.add_argument("dir", metavar="DIR")
    dbk = db_sub.add_parser("compile", help="compile a dbtext directory to LMDB")
    dbk.add_argument("dir", metavar="DIR")
    dbk.add_argument("out", metavar="OUT")
    dbd = db_sub.add_parser("dump", help="print an LMDB snapshot back as dbtext")
    dbd.add_argument("db", metavar="DB")
    dbd.add_argument("--table", help="only this table")
    dbm = db_sub.add_parser(
        "commit", help="check DIR and make it the current generation under ROOT"
    )
    dbm.add_argument("dir", metavar="DIR")
    dbm.add_argument("root", metavar="ROOT")
    dbr = db_sub.add_parser("rollback", help="make the previous generation under ROOT current")
    dbr.add_argument("root", metavar="ROOT")
    dbs = db_sub.add_parser(
        "set", help="set pbx_settings rows in the current generation under ROOT and commit"
    )
    dbs.add_argument("root", metavar="ROOT")
    dbs.add_argument("assignments", nargs="*", metavar="NAME=VALUE", help="empty VALUE: default")
    dbs.add_argument("--from", dest="from_file", metavar="FILE", help="NAME=VALUE lines")
    dbs.add_argument("--factory", metavar="DIR", help="the tables to start from if ROOT has none")
    db.set_defaults(func=_cmd_db)

    st = sub.add_parser("status", help="registrations, calls, trunk state of the running daemon")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--control", metavar="PATH", help="the daemon's control socket")
    st.set_defaults(func=_cmd_status)

    cdr = sub.add_parser("cdr", help="call detail records")
    cdr_sub = cdr.add_subparsers(dest="cdr_command", metavar="COMMAND")
    cdr_sub.required = True
    cde = cdr_sub.add_parser("export", help="print the call records as CSV")
    cde.add_argument("--state", metavar="PATH", help="state database (default: on /data)")
    cde.add_argument("--since", type=int, metavar="N", help="only records numbered N or later")
    cde.add_argument("--out", metavar="FILE", help="write FILE (atomically) instead of stdout")
    cde.add_argument("--timezone", metavar="NAME", help="times in this zone (default UTC)")
    cdr.set_defaults(func=_cmd_cdr)

    _watchdog_parser(sub)
    _console_parsers(sub)
    return p


def _cmd_console(args: argparse.Namespace) -> int:
    from pbx_core.console import guard

    # Before the heavy imports: a Ctrl-C on the line must not kill a starting console.
    guard.protect(None if args.tty else sys.stdin.fileno())
    from pbx_core.console import session

    if not _join_features("console"):
        return 2
    return session.main(args)


def _cmd_remote(args: argparse.Namespace) -> int:
    from pbx_core.console import remote

    if args.action in ("push", "pull", "pull-recordings") and len(args.args) != 1:
        print(f"pbx remote: usage: pbx remote --port URL {args.action} DIR", file=sys.stderr)
        return 2
    shapes = {
        "sysrec-push": ("FILE NAME", 2),
        "sysrec-pull": ("NAME FILE", 2),
        "sysrec-list": ("", 0),
        "sysrec-delete": ("NAME", 1),
    }
    if args.action in shapes and len(args.args) != shapes[args.action][1]:
        usage = f"pbx remote --port URL {args.action} {shapes[args.action][0]}".rstrip()
        print(f"pbx remote: usage: {usage}", file=sys.stderr)
        return 2
    if args.action == "run" and not args.args:
        print(
            "pbx remote: usage: pbx remote --port URL run COMMAND... (or - for stdin)",
            file=sys.stderr,
        )
        return 2
    if not _join_features("remote"):
        return 2
    return remote.main(args)


def _console_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pbx_core import paths

    con = sub.add_parser(
        "console",
        help="the serial console tool",
        description="Banner, login, numbered menu and uci-like commands on a serial line "
        "(stdin/stdout, or --tty). See pbx_core/console/README.md.",
    )
    con.add_argument("--tty", metavar="PATH", help="serve this tty (115200 8N1) instead of stdin")
    con.add_argument("--baud", type=int, default=115200, help="with --tty (default %(default)s)")
    con.add_argument(
        "--config-root",
        default=str(paths.DATA_DIR / "config"),
        metavar="DIR",
        help="configuration generations (default %(default)s)",
    )
    con.add_argument(
        "--factory",
        default=str(paths.FACTORY_CONFIG),
        metavar="DIR",
        help="factory tables (default %(default)s)",
    )
    con.add_argument("--control", metavar="PATH", help="the daemon's control socket")
    con.add_argument(
        "--network-conf",
        default=str(paths.DATA_DIR / "etc" / "network.conf"),
        metavar="PATH",
        help="network settings file written at commit (default %(default)s)",
    )
    con.add_argument("--idle", type=float, default=600, help="idle logout, s (0 = never)")
    con.add_argument("--login-delay", type=float, default=2.0, help="pause after a wrong password")
    con.add_argument(
        "--failsafe",
        type=float,
        default=3.0,
        help="seconds the password-reset failsafe is offered once after boot (0 = off)",
    )
    con.add_argument("--runtime", metavar="DIR", help="RAM directory (default: the runtime dir)")
    con.add_argument(
        "--recordings",
        default=str(paths.DATA_DIR / "recordings" / "calls"),
        metavar="DIR",
        help="call recordings `pbx remote pull-recordings` fetches (default %(default)s)",
    )
    con.add_argument(
        "--system-recordings",
        metavar="DIR",
        help="system recordings (greetings; default: `system` beside --recordings)",
    )
    con.set_defaults(func=_cmd_console)

    rem = sub.add_parser(
        "remote",
        help="the host-side client of the serial console",
        description="Log in to `pbx console` over a serial port and run commands, or push "
        "or pull the whole table set. Examples: pbx remote --port /dev/ttyUSB0 run "
        "'set settings.net_mode=dhcp' commit; pbx remote --port socket://127.0.0.1:4000 pull DIR",
    )
    rem.add_argument(
        "--port", required=True, metavar="URL", help="/dev/ttyUSB0, socket://host:port"
    )
    rem.add_argument("--baud", type=int, default=115200)
    rem.add_argument("--password", help="admin password (or $PBX_PASSWORD)")
    rem.add_argument("--new-password", help="replaces the factory password at first login")
    rem.add_argument("--timeout", type=float, default=2.0, help="wait for an answer, s")
    rem.add_argument("--retries", type=int, default=20, help="resends of one request")
    rem.add_argument(
        "--wait",
        type=float,
        default=300.0,
        metavar="S",
        help="how long to wait for the console's prompt, s (a booting box takes a "
        "minute or two; default %(default)s)",
    )
    rem.add_argument("--json", action="store_true", help="one JSON answer per command")
    rem.add_argument("--quiet", action="store_true", help="no transfer progress")
    rem.add_argument("--no-commit", action="store_true", help="push: stage only")
    rem.add_argument(
        "action",
        choices=(
            "run",
            "push",
            "pull",
            "pull-recordings",
            "sysrec-push",
            "sysrec-pull",
            "sysrec-list",
            "sysrec-delete",
        ),
    )
    rem.add_argument(
        "args",
        nargs="*",
        metavar="ARG",
        help="commands (run), a directory (push, pull, pull-recordings), a WAV file and a "
        "system recording's name (sysrec-push FILE NAME, sysrec-pull NAME FILE, "
        "sysrec-delete NAME)",
    )
    rem.set_defaults(func=_cmd_remote)


def _cmd_watchdog(args: argparse.Namespace) -> int:
    from pbx_core.watchdog import supervisor

    return supervisor.main(args)


def _watchdog_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    wd = sub.add_parser(
        "watchdog",
        help="the supervisor: runs `pbx run`, checks it, feeds /dev/watchdog",
        description="Start `pbx run`, check its health (control-socket ping and a SIP "
        "OPTIONS on loopback), restart it when it dies or hangs, and feed the hardware "
        "watchdog only while it is healthy. See pbx_core/watchdog/README.md.",
    )
    wd.add_argument("--config", required=True, metavar="DIR", help="passed to pbx run")
    wd.add_argument(
        "--factory",
        metavar="DIR",
        help="tables committed to --config first when it holds no generation yet",
    )
    wd.add_argument(
        "--listen", action="append", default=[], metavar="ADDR:PORT", help="passed to pbx run"
    )
    wd.add_argument("--trace", metavar="FILE", help="passed to pbx run")
    wd.add_argument("--control", metavar="PATH", help="the daemon's control socket")
    wd.add_argument(
        "--device",
        default="/dev/watchdog",
        metavar="PATH",
        help="watchdog device, or none (default: %(default)s)",
    )
    wd.add_argument(
        "--syslog",
        action="store_true",
        help="log to syslog (/dev/log), stderr then gets warnings and errors only; "
        "passed to pbx run",
    )
    for flag, kind, default, what in (
        ("--timeout", int, 30, "hardware watchdog timeout, s"),
        ("--feed-interval", float, 5.0, "feed the device this often, s"),
        ("--check-interval", float, 5.0, "health check period, s"),
        ("--check-timeout", float, 3.0, "deadline of one health check, s"),
        ("--failures", int, 2, "failed checks in a row that make the PBX unhealthy"),
        ("--start-timeout", float, 60.0, "time a new PBX has to become healthy, s"),
        ("--stop-timeout", float, 10.0, "time pbx run has to stop on SIGTERM, s"),
        ("--restart-delay", float, 2.0, "wait before a restart, s"),
        ("--window", float, 300.0, "restart counting window, s"),
        ("--limit", int, 5, "restarts allowed within the window before giving up"),
    ):
        wd.add_argument(
            flag, type=kind, default=default, metavar="N", help=f"{what} (default %(default)s)"
        )
    wd.set_defaults(func=_cmd_watchdog)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
