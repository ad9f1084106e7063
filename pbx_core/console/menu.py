"""The numbered menu for people (AskoziaPBX's console tradition). Each item asks its
questions with the current value in brackets (Enter keeps it), stages the changes
through the same `Staging` as the commands, shows them and commits after a yes. A
refused value or a failed commit leaves the configuration as it was; Ctrl-C abandons
the item."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pbx_core.console import system
from pbx_core.console.config import ConfigError, Path, copy_table
from pbx_core.console.terminal import InputCancelledError
from pbx_core.store.dbtext import Table

if TYPE_CHECKING:
    from pbx_core.console.session import Session

ITEMS = (
    (1, "Network (DHCP/static, address, gateway, DNS)"),
    (2, "Extensions (list, add, change, delete)"),
    (3, "Trunk (provider, credentials, DIDs)"),
    (4, "Show status (registrations, calls, trunks)"),
    (5, "Logs"),
    (6, "Ping a host"),
    (7, "Change the admin password"),
    (8, "Factory reset"),
    (9, "Reboot"),
    (0, "Logout"),
)
_NUMBER = re.compile(r"[0-9]{2,8}")


class Menu:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.t = session.term
        self.logout = False

    def show(self) -> None:
        self.t.line("")
        for n, text in ITEMS:
            self.t.line(f"  {n}) {text}")
        self.t.line("")

    def run(self, n: int) -> None:
        actions = {
            1: self.network,
            2: self.extensions,
            3: self.trunk,
            4: self.status,
            5: self.logs,
            6: self.ping,
            7: self.s.passwd,
            8: self.factory_reset,
            9: self.reboot,
            0: self.quit,
        }
        action = actions.get(n)
        if action is None:
            self.t.line(f"no menu item {n}; `menu` shows them")
            return
        action()

    # ------------------------------------------------------------------ helpers
    def ask(self, question: str, current: str = "") -> str:
        answer = self.t.read_line(f"{question} [{current}]: ")
        return current if answer is None or answer.strip() == "" else answer.strip()

    def yes(self, question: str, default: bool = False) -> bool:
        hint = "Y/n" if default else "y/N"
        answer = (self.t.read_line(f"{question} [{hint}] ") or "").strip().lower()
        return default if not answer else answer in ("y", "yes")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Table]]:
        """Undo what an item staged if it fails or is cancelled half-way."""
        before = {n: copy_table(t) for n, t in self.s.staging.tables.items()}
        try:
            yield before
        except (ConfigError, InputCancelledError):
            self.s.staging.tables = before
            raise

    def apply(self, before: dict[str, Table]) -> None:
        """Show what the item staged; commit it after a yes, else put it back."""
        changes = self.s.staging.changes()
        if not changes:
            self.t.line("nothing changed")
            return
        for line in changes:
            self.t.line(f"  {line}"[:79])
        if not self.yes("Apply these changes now?", default=True):
            self.t.line("kept as staged changes (`commit` applies them, `revert` drops them)")
            return
        try:
            name, notes = self.s.commit()
        except ConfigError as e:
            self.s.staging.tables = before
            self.t.line(f"error: {e}")
            self.t.line("nothing was changed")
            return
        self.t.line(f"committed {name}")
        for note in notes:
            self.t.line(note)

    # ------------------------------------------------------------------ items
    def network(self) -> None:
        st = self.s.staging
        with self.transaction() as before:
            mode = self.ask("Mode, dhcp or static", st.setting("net_mode"))
            st.set_setting("net_mode", mode)
            if mode == "static":
                st.set_setting("net_address", self.ask("Address/prefix", st.setting("net_address")))
                st.set_setting("net_gateway", self.ask("Gateway", st.setting("net_gateway")))
                st.set_setting("net_dns", self.ask("DNS servers", st.setting("net_dns")))
            _refuse(
                system.network_problems(
                    {
                        k: st.setting(k)
                        for k in ("net_mode", "net_address", "net_gateway", "net_dns")
                    }
                )
            )
        self.apply(before)

    def _extensions(self) -> list[tuple[str, str]]:
        st = self.s.staging
        domain = st.setting("domain")
        names: dict[str, str] = {}
        ext = st.tables.get("pbx_extension")
        if ext is not None:
            for _r, rec in ext.records():
                names[str(rec.get("username"))] = str(rec.get("display_name") or "")
        sub = st.tables.get("subscriber")
        out = []
        if sub is not None:
            for _r, rec in sub.records():
                if rec.get("domain") == domain:
                    user = str(rec.get("username"))
                    out.append((user, names.get(user, "")))
        return sorted(out)

    def extensions(self) -> None:
        while True:
            status = self.s.daemon_status()
            registered = {
                str(r.get("aor", "")).split("@")[0]
                for r in status.get("registrations", [])
                if isinstance(r, dict)
            }
            self.t.line("")
            self.t.line("  number    name                      phone")
            for user, name in self._extensions():
                state = "registered" if user in registered else "-"
                self.t.line(f"  {user:<9} {name[:25]:<25} {state}")
            self.t.line("")
            choice = (self.t.read_line("a) add  c) change  d) delete  Enter) back: ") or "").strip()
            if not choice:
                return
            action = {"a": self.ext_add, "c": self.ext_change, "d": self.ext_delete}.get(
                choice.lower()
            )
            if action is None:
                self.t.line(f"no choice {choice!r}")
                continue
            try:
                action()
            except ConfigError as e:
                self.t.line(f"error: {e}")

    def ext_add(self) -> None:
        st = self.s.staging
        with self.transaction() as before:
            number = self.ask("Extension number (2-8 digits)")
            _refuse([] if _NUMBER.fullmatch(number) else [f"{number!r} is not 2 to 8 digits"])
            if number in {u for u, _ in self._extensions()}:
                raise ConfigError(f"extension {number} exists; use c) change")
            name = self.ask("Name shown on phones")
            password = self.ask("SIP password (6 or more characters)")
            _refuse(_sip_password_problems(password))
            domain = st.setting("domain")
            st.add("subscriber", {"username": number, "domain": domain, "password": password})
            values = {"username": number}
            if name:
                values["display_name"] = name
            st.add("pbx_extension", values)
        self.apply(before)

    def _pick(self) -> str:
        number = self.ask("Extension number")
        if number not in {u for u, _ in self._extensions()}:
            raise ConfigError(f"no extension {number}")
        return number

    def ext_change(self) -> None:
        st = self.s.staging
        with self.transaction() as before:
            number = self._pick()
            domain = st.setting("domain")
            ext = st.tables.get("pbx_extension")
            if ext is None or not any(rec.get("username") == number for _r, rec in ext.records()):
                st.add("pbx_extension", {"username": number})
            path = Path("pbx_extension", number, "display_name")
            st.set(path, self.ask("Name shown on phones", st.get(path)))
            password = self.t.read_line("New SIP password (Enter keeps it): ") or ""
            if password:
                _refuse(_sip_password_problems(password))
                sel = f"{number},{domain}"
                st.set(Path("subscriber", sel, "password"), password)
                for col in ("ha1", "ha1b"):  # they would no longer agree with the password
                    if st.table("subscriber").has(col):
                        st.set(Path("subscriber", sel, col), "")
        self.apply(before)

    def ext_delete(self) -> None:
        st = self.s.staging
        with self.transaction() as before:
            number = self._pick()
            if not self.yes(f"Delete extension {number}?"):
                return
            st.delete(Path("subscriber", f"{number},{st.setting('domain')}", None))
            ext = st.tables.get("pbx_extension")
            if ext is not None and any(rec.get("username") == number for _r, rec in ext.records()):
                st.delete(Path("pbx_extension", number, None))
        self.apply(before)

    def trunk(self) -> None:
        st = self.s.staging
        with self.transaction() as before:
            trunks = st.tables.get("pbx_trunk")
            if trunks is None or not trunks.rows:
                st.add("pbx_trunk", {"name": "provider", "host": "sip.example.net"})
                trunks = st.table("pbx_trunk")
            name = str(trunks.rows[0][trunks.index("name")])
            self.t.line(f"Trunk {name!r}")
            for col, question in (
                ("host", "Provider host"),
                ("port", "Provider port"),
                ("username", "Account user name"),
                ("password", "Account password"),
                ("caller_id", "Caller ID number"),
            ):
                path = Path("pbx_trunk", name, col)
                st.set(path, self.ask(question, st.get(path)))
            for col, question in (
                ("register", "Register with the provider"),
                ("enabled", "Enabled"),
            ):
                path = Path("pbx_trunk", name, col)
                current = st.get(path) in ("1", "")
                st.set(path, "1" if self.yes(question + "?", default=current) else "0")
            self.dids(name)
        self.apply(before)

    def dids(self, trunk: str) -> None:
        st = self.s.staging
        while True:
            table = st.tables.get("pbx_did")
            self.t.line("Incoming numbers (DIDs):")
            if table is not None:
                for _r, rec in table.records():
                    dest = f"{rec.get('dest_type')} {rec.get('dest') or ''}"
                    self.t.line(f"  {rec.get('number')!s:<16} -> {dest}")
            choice = (self.t.read_line("a) add  d) delete  Enter) done: ") or "").strip().lower()
            if not choice:
                return
            if choice == "a":
                number = self.ask("Number as the provider sends it (or * for the rest)")
                ext = self.ask("Extension it rings")
                st.add(
                    "pbx_did",
                    {"number": number, "trunk": trunk, "dest_type": "extension", "dest": ext},
                )
            elif choice == "d":
                st.delete(Path("pbx_did", self.ask("Number to delete"), None))

    def status(self) -> None:
        for line in self.s.status_lines(self.s.daemon_status()):
            self.t.line(line)

    def logs(self) -> None:
        _rc, out = system.run(["logread"], timeout=5)
        for line in out.splitlines()[-20:]:
            self.t.line(line[:79])

    def ping(self) -> None:
        host = self.ask("Host to ping")
        if not system.valid_host(host):
            self.t.line(f"{host!r} is not a host name or address")
            return
        _rc, out = system.run(["ping", "-c", "3", "-W", "2", host], timeout=15)
        for line in out.splitlines():
            self.t.line(line[:79])

    def factory_reset(self) -> None:
        self.t.line("Factory reset: every setting, extension and trunk goes back to the")
        self.t.line("factory configuration, and so does the admin password.")
        if (self.t.read_line('Type "reset" to confirm: ') or "").strip() != "reset":
            self.t.line("nothing was changed")
            return
        from pbx_core.store.dbtext import read_dir  # noqa: PLC0415  # only here

        self.s.staging.replace_all(read_dir(self.s.opts.factory))
        name, notes = self.s.commit()
        system.remove_network_conf(self.s.opts.network_conf)
        self.t.line(f"factory configuration committed ({name}); the network is DHCP after reboot")
        for note in notes:
            self.t.line(note)
        self.logout = True

    def reboot(self) -> None:
        if not self.yes("Reboot now? Calls in progress are cut"):
            return
        if self.s.staging.dirty:
            self.t.line("note: staged changes that were not committed are lost")
        rc, out = system.run(["reboot"], timeout=10)
        self.t.line(out.strip() or ("rebooting..." if rc == 0 else f"reboot failed ({rc})"))

    def quit(self) -> None:
        self.logout = True


def _refuse(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


def _sip_password_problems(password: str) -> list[str]:
    return [] if len(password) >= 6 else ["the SIP password needs 6 or more characters"]
