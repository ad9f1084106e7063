"""From tables to the internal model, checking everything a table alone cannot say:
credentials, references between tables (a DID to an extension, a dial rule to a
trunk), number clashes, dial patterns and settings.

`build_config` raises every problem at once (`MultiError`), each located at the row
and field it comes from. `check_dir` is `pbx db check`: dbtext rules for every file,
schema rules for known tables, then these.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pbx_core.store import schema as sch
from pbx_core.store.dbtext import Table, Value, load_dir
from pbx_core.store.errors import DbTextError, raise_all
from pbx_core.store.model import (
    PERMANENT_FLAG,
    Alias,
    Config,
    Contact,
    Destination,
    DialRule,
    Did,
    ExtensionSettings,
    IvrMenu,
    RingGroup,
    SpeedDial,
    Trunk,
    User,
    ha1,
    ha1_sha256,
    ha1b,
    pattern_regex,
    speed_key,
)

_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_DID = re.compile(r"\+?[0-9]+|\*")
_DIALABLE = re.compile(r"[0-9*#+]+")
_DIGITS = re.compile(r"[0-9]+")


@dataclass
class Report:
    """Result of checking a directory: errors (fatal) and warnings, in file order."""

    errors: list[DbTextError] = field(default_factory=list)
    warnings: list[DbTextError] = field(default_factory=list)
    config: Config | None = None


def check_tables(tables: Mapping[str, Table]) -> Report:
    """Schema and model checks of already parsed tables."""
    report = Report()
    for name in sorted(tables):
        schema = sch.schema_for(tables[name])
        if schema is not None:
            report.errors.extend(sch.check_table(tables[name], schema))
    if report.errors:
        return report
    builder = _Builder(tables)
    config = builder.build()
    report.errors.extend(builder.errors)
    report.warnings.extend(builder.warnings)
    if not report.errors:
        report.config = config
    return report


def check_dir(directory: str | os.PathLike[str]) -> Report:
    """`pbx db check`: every problem of a table directory."""
    loaded = load_dir(directory)
    if loaded.errors:
        return Report(loaded.errors, loaded.warnings)
    report = check_tables(loaded.tables)
    report.warnings[:0] = loaded.warnings
    return report


def build_config(tables: Mapping[str, Table]) -> Config:
    """The model of a set of tables; raises all problems at once."""
    report = check_tables(tables)
    raise_all(report.errors)
    assert report.config is not None  # no errors means a config  # noqa: S101
    return report.config


def _s(v: Value) -> str | None:
    return None if v is None else str(v)


def _i(v: Value) -> int:
    return int(v) if isinstance(v, int | float) else 0


class _Builder:
    def __init__(self, tables: Mapping[str, Table]) -> None:
        self.tables = tables
        self.errors: list[DbTextError] = []
        self.warnings: list[DbTextError] = []
        self.cfg = Config(tables=dict(tables))
        self.domain = str(sch.SETTINGS["domain"].default)
        # Destinations are checked last, when every table they may name is known.
        self._pending: list[tuple[Table, int, str, Destination]] = []
        self._settings_at: dict[str, tuple[Table, int]] = {}  # the row of each setting given

    def rows(self, name: str) -> list[tuple[Table, int, dict[str, Value]]]:
        table = self.tables.get(name)
        if table is None:
            return []
        schema = sch.schema_for(table)
        assert schema is not None  # only called for known tables  # noqa: S101
        return [(table, r, rec) for r, rec in sch.records(table, schema)]

    def err(self, table: Table, row: int, column: str | None, message: str) -> None:
        self.errors.append(table.error(row, column, message))

    def build(self) -> Config:
        self.settings()
        self.users()
        self.extensions()
        self.location()
        self.aliases()
        self.trunks()
        self.groups_and_ivrs()
        self.dids()
        self.dialplan()
        self.speed_dials()
        self.versions()
        self.check_destinations()
        return self.cfg

    # -------------------------------------------------------------- sections

    def settings(self) -> None:
        values: dict[str, str | int] = {k: s.default for k, s in sch.SETTINGS.items()}
        set_at = self._settings_at
        for table, r, rec in self.rows("pbx_settings"):
            name, value = str(rec["name"]), rec["value"]
            spec = sch.SETTINGS.get(name)
            if spec is None:
                self.err(table, r, "name", f"unknown setting {name!r}")
                continue
            if value is None:
                continue
            text = str(value)
            set_at[name] = (table, r)
            if spec.type is int:
                if not re.fullmatch(r"-?[0-9]+", text):
                    self.err(table, r, "value", f"setting {name!r} must be an integer")
                    continue
                values[name] = int(text)
            elif spec.choices and text not in spec.choices:
                self.err(
                    table, r, "value", f"setting {name!r} must be one of {', '.join(spec.choices)}"
                )
            else:
                values[name] = text
        self.cfg.settings = values
        self.domain = str(values["domain"])
        self.check_settings(values, set_at)

    def check_settings(
        self, values: Mapping[str, str | int], set_at: Mapping[str, tuple[Table, int]]
    ) -> None:
        """What one setting alone cannot say: `lan_networks` is a list of networks;
        the RFC 4028 session timer settings agree with each other."""

        def where(*names: str) -> tuple[Table, int] | None:
            return next((set_at[n] for n in names if n in set_at), None)

        lan = where("lan_networks")
        if lan is not None:
            try:
                sch.parse_networks(str(values["lan_networks"]))
            except ValueError as exc:
                self.err(*lan, "value", f"setting 'lan_networks': {exc}")
        self.check_nat_settings(values, where)
        expires, min_se = int(values["session_expires"]), int(values["session_min_se"])
        at = where("session_min_se")
        if min_se < 1 and at is not None:
            self.err(*at, "value", "setting 'session_min_se' must be at least 1 second")
            return
        if min_se < sch.RFC4028_MIN_SE and at is not None:
            self.warnings.append(
                at[0].error(
                    at[1],
                    "value",
                    f"setting 'session_min_se' {min_se} is below RFC 4028's floor of "
                    f"{sch.RFC4028_MIN_SE} s (for tests only)",
                )
            )
        at = where("session_expires", "session_min_se")
        if at is not None and (expires < 0 or 0 < expires < min_se):
            self.err(
                *at,
                "value",
                f"setting 'session_expires' must be 0 (no session timers) or at least "
                f"session_min_se ({min_se}), not {expires}",
            )

    def check_nat_settings(
        self,
        values: Mapping[str, str | int],
        where: Callable[..., tuple[Table, int] | None],
    ) -> None:
        """The RTP port range and the external addresses (sch.check_rtp_range,
        sch.check_external): each problem at the row that set it."""
        at = where("rtp_port_min", "rtp_port_max")
        if at is not None:
            problem = sch.check_rtp_range(int(values["rtp_port_min"]), int(values["rtp_port_max"]))
            if problem is not None:
                self.err(*at, "value", problem)
        for name in ("external_media_address", "external_signaling_address"):
            at = where(name)
            if at is not None:
                problem = sch.check_external(name, str(values[name]))
                if problem is not None:
                    self.err(*at, "value", problem)

    def users(self) -> None:
        for table, r, rec in self.rows("subscriber"):
            user, domain = str(rec["username"]), str(rec["domain"])
            password, h1, h1b = _s(rec["password"]), _s(rec["ha1"]), _s(rec["ha1b"])
            for col, h in (("ha1", h1), ("ha1b", h1b)):
                if h is not None and not _HEX32.fullmatch(h):
                    self.err(table, r, col, f"{col} must be 32 hex digits (an MD5 HA1)")
            if password is not None:
                want, wantb = ha1(user, domain, password), ha1b(user, domain, password)
                if h1 is not None and h1.lower() != want:
                    self.err(table, r, "ha1", "ha1 does not match the password")
                if h1b is not None and h1b.lower() != wantb:
                    self.err(table, r, "ha1b", "ha1b does not match the password")
                h1, h1b = want, wantb
            elif h1 is None:
                self.err(table, r, "password", f"{user}@{domain} has neither password nor ha1")
                continue
            self.cfg.users[f"{user}@{domain}"] = User(
                user,
                domain,
                h1.lower(),
                h1b.lower() if h1b else None,
                _s(rec.get("rpid")),
                ha1_sha256=None if password is None else ha1_sha256(user, domain, password),
            )
            if password is None and "SHA-256" in str(self.cfg.settings.get("auth_algorithms")):
                self.warnings.append(
                    table.error(
                        r,
                        "ha1",
                        f"{user}@{domain} has an MD5 ha1 and no password: it is offered MD5"
                        " only, whatever auth_algorithms says",
                    )
                )
            if domain == self.domain:
                self.cfg.numbers.setdefault(user, Destination("extension", user))

    def extensions(self) -> None:
        for table, r, rec in self.rows("pbx_extension"):
            aor = f"{rec['username']}@{rec['domain'] or self.domain}"
            user = self.cfg.users.get(aor)
            if user is None:
                self.err(table, r, "username", f"no subscriber {aor}")
                continue
            settings = ExtensionSettings(
                display_name=_s(rec["display_name"]),
                enabled=bool(rec["enabled"]),
                voicemail=bool(rec["voicemail"]),
                vm_pin=_s(rec["vm_pin"]),
                ring_timeout=_i(rec["ring_timeout"]),
                call_waiting=bool(rec["call_waiting"]),
                dnd=bool(rec["dnd"]),
                forward_all=_s(rec["forward_all"]),
                forward_busy=_s(rec["forward_busy"]),
                forward_noanswer=_s(rec["forward_noanswer"]),
                pickup_group=None if rec["pickup_group"] is None else _i(rec["pickup_group"]),
                max_contacts=_i(rec["max_contacts"]),
                outbound_cid=_s(rec["outbound_cid"]),
                call_class=str(rec["call_class"]),
            )
            if settings.vm_pin is not None and not _DIGITS.fullmatch(settings.vm_pin):
                self.err(table, r, "vm_pin", "vm_pin must be digits")
            for col in ("forward_all", "forward_busy", "forward_noanswer"):
                v = rec[col]
                if v is not None and not _DIALABLE.fullmatch(str(v)):
                    self.err(table, r, col, f"{col} must be a number (digits, * # +)")
            self.cfg.users[aor] = User(
                user.username,
                user.domain,
                user.ha1,
                user.ha1b,
                user.rpid,
                settings,
                ha1_sha256=user.ha1_sha256,
            )

    def _contact(self, rec: Mapping[str, Value], kamailio: bool) -> Contact:
        flags = _i(rec["flags"])
        expires = _i(rec["expires"])
        permanent = bool(flags & PERMANENT_FLAG) or (kamailio and expires == 0)
        q = rec["q"]
        return Contact(
            uri=str(rec["contact"]),
            expires=expires,
            permanent=permanent,
            q=float(q) if isinstance(q, int | float) else -1.0,
            callid=_s(rec["callid"]),
            cseq=None if rec["cseq"] is None else _i(rec["cseq"]),
            flags=flags,
            user_agent=_s(rec["user_agent"]),
            received=_s(rec["received"]),
            path=_s(rec.get("path")),
        )

    def location(self) -> None:
        grouped: dict[str, list[Contact]] = {}
        for table, _r, rec in self.rows("location"):
            kam = table.has("ruid")
            aor = f"{rec['username']}@{rec['domain'] or self.domain}"
            grouped.setdefault(aor, []).append(self._contact(rec, kam))
        self.cfg.contacts = {
            aor: tuple(sorted(cs, key=lambda c: -c.q)) for aor, cs in grouped.items()
        }

    def aliases(self) -> None:
        grouped: dict[str, list[Contact]] = {}
        first: dict[str, tuple[Table, int]] = {}
        for table, r, rec in self.rows("aliases"):
            key = str(rec["username"]) + (f"@{rec['domain']}" if rec["domain"] else "")
            grouped.setdefault(key, []).append(self._contact(rec, table.has("ruid")))
            first.setdefault(key, (table, r))
        for key, cs in grouped.items():
            self.cfg.aliases[key] = Alias(key, None, tuple(sorted(cs, key=lambda c: -c.q)))
        for table, r, rec in self.rows("dbaliases"):
            key = f"{rec['alias_username']}@{rec['alias_domain']}"
            target = f"{rec['username']}@{rec['domain']}"
            if key in self.cfg.aliases:
                self.err(table, r, "alias_username", f"alias {key} is also in the aliases table")
                continue
            if target not in self.cfg.users:
                self.warnings.append(table.error(r, "username", f"{target} is not a subscriber"))
            self.cfg.aliases[key] = Alias(key, target, ())

    def trunks(self) -> None:
        for table, r, rec in self.rows("pbx_trunk"):
            codecs = tuple(c.strip() for c in str(rec["codecs"]).split(","))
            if not all(codecs):
                self.err(table, r, "codecs", "codecs is a comma-separated list like PCMU,PCMA")
            name = str(rec["name"])
            self.cfg.trunks[name] = Trunk(
                name=name,
                host=str(rec["host"]),
                enabled=bool(rec["enabled"]),
                port=_i(rec["port"]),
                transport=str(rec["transport"]),
                username=_s(rec["username"]),
                auth_username=_s(rec["auth_username"]),
                password=_s(rec["password"]),
                from_domain=_s(rec["from_domain"]),
                register=bool(rec["register"]),
                register_expires=_i(rec["register_expires"]),
                outbound_proxy=_s(rec["outbound_proxy"]),
                caller_id=_s(rec["caller_id"]),
                codecs=codecs,
                max_channels=_i(rec["max_channels"]),
                dtmf=str(rec["dtmf"]),
            )

    def _number(self, table: Table, r: int, column: str, number: str, dest: Destination) -> None:
        if not _DIALABLE.fullmatch(number):
            self.err(table, r, column, f"{number!r} is not a dialable number (digits, * # +)")
            return
        have = self.cfg.numbers.get(number)
        if have is not None:
            self.err(table, r, column, f"number {number} is already {have.type} {have.target}")
            return
        self.cfg.numbers[number] = dest

    def groups_and_ivrs(self) -> None:
        for table, r, rec in self.rows("pbx_ring_group"):
            number = str(rec["number"])
            members = tuple(m.strip() for m in str(rec["members"]).split(","))
            for m in members:
                if self.cfg.numbers.get(m, Destination("")).type != "extension":
                    self.err(table, r, "members", f"member {m!r} is not an extension")
            fallback = Destination(str(rec["fallback_type"]), _s(rec["fallback"]))
            self._pending.append((table, r, "fallback", fallback))
            self._number(table, r, "number", number, Destination("group", number))
            self.cfg.groups[number] = RingGroup(
                number,
                str(rec["name"]),
                members,
                str(rec["strategy"]),
                _i(rec["ring_timeout"]),
                fallback,
            )
        options: dict[str, dict[str, Destination]] = {}
        menus = {str(rec["name"]) for _t, _r, rec in self.rows("pbx_ivr_menu")}
        for table, r, rec in self.rows("pbx_ivr_option"):
            menu, digit = str(rec["menu"]), str(rec["digit"])
            if menu not in menus:
                self.err(table, r, "menu", f"no IVR menu {menu!r}")
                continue
            if not re.fullmatch(r"[0-9*#ti]", digit):
                self.err(table, r, "digit", "digit is one of 0-9, *, #, t (timeout), i (invalid)")
                continue
            dest = Destination(str(rec["dest_type"]), _s(rec["dest"]))
            self._pending.append((table, r, "dest", dest))
            options.setdefault(menu, {})[digit] = dest
        for table, r, rec in self.rows("pbx_ivr_menu"):
            name, menu_number = str(rec["name"]), _s(rec["number"])
            if menu_number is not None:
                self._number(table, r, "number", menu_number, Destination("ivr", name))
            self.cfg.ivrs[name] = IvrMenu(
                name,
                str(rec["prompt"]),
                menu_number,
                _i(rec["timeout"]),
                _i(rec["retries"]),
                options.get(name, {}),
            )

    def dids(self) -> None:
        for table, r, rec in self.rows("pbx_did"):
            number, trunk = str(rec["number"]), _s(rec["trunk"])
            if not _DID.fullmatch(number):
                self.err(table, r, "number", "number is digits with an optional +, or *")
            if trunk is not None and trunk not in self.cfg.trunks:
                self.err(table, r, "trunk", f"no trunk {trunk!r}")
            dest = Destination(str(rec["dest_type"]), _s(rec["dest"]))
            self._pending.append((table, r, "dest", dest))
            self.cfg.dids[number] = Did(number, dest, trunk, _s(rec["description"]))

    def dialplan(self) -> None:
        rules: list[tuple[int, int, DialRule]] = []
        for table, r, rec in self.rows("pbx_dialplan"):
            pattern = str(rec["pattern"])
            try:
                pattern_regex(pattern)
            except ValueError as e:
                offset, message = e.args
                line, col = table.where(r, "pattern")
                self.errors.append(
                    DbTextError(table.file or table.name, line, col + offset if col else 0, message)
                )
                continue
            action, trunk = str(rec["action"]), _s(rec["trunk"])
            if action == "trunk" and trunk is None:
                self.err(table, r, "trunk", "action trunk needs a trunk")
            elif trunk is not None and trunk not in self.cfg.trunks:
                self.err(table, r, "trunk", f"no trunk {trunk!r}")
            prepend = _s(rec["prepend"])
            if prepend is not None and not _DIALABLE.fullmatch(prepend):
                self.err(table, r, "prepend", "prepend must be digits, * # +")
            rule = DialRule(
                pattern,
                action,
                trunk,
                _i(rec["strip"]),
                prepend,
                _i(rec["priority"]),
                _s(rec["description"]),
                str(rec["call_class"]),
            )
            rules.append((rule.priority, r, rule))
        self.cfg.dialplan = tuple(rule for _p, _r, rule in sorted(rules, key=lambda x: x[:2]))

    def speed_dials(self) -> None:
        for table, r, rec in self.rows("pbx_speed_dial"):
            owner = None
            if rec["username"] is not None:
                owner = f"{rec['username']}@{rec['domain'] or self.domain}"
                if owner not in self.cfg.users:
                    self.err(table, r, "username", f"no subscriber {owner}")
                    continue
            code, number = str(rec["code"]), str(rec["number"])
            if not re.fullmatch(r"[0-9]{1,3}", code):
                self.err(table, r, "code", "code is 1 to 3 digits")
            if not _DIALABLE.fullmatch(number):
                self.err(table, r, "number", "number must be digits, * # +")
            self.cfg.speed_dials[speed_key(owner, code)] = SpeedDial(
                code, number, owner, _s(rec["name"])
            )

    def versions(self) -> None:
        for _table, _r, rec in self.rows("version"):
            self.cfg.versions[str(rec["table_name"])] = _i(rec["table_version"])

    def check_destinations(self) -> None:
        for table, r, column, dest in self._pending:
            problem = self._dest_problem(dest)
            if problem:
                self.err(table, r, column, problem)
        op = str(self.cfg.settings["operator"])
        if op and self.cfg.numbers.get(op, Destination("")).type not in ("extension", "group"):
            table, r = self._settings_at["operator"]
            self.err(table, r, "value", f"operator {op!r} is not an extension or ring group")

    def _dest_problem(self, dest: Destination) -> str | None:
        t, target = dest.type, dest.target
        if t == "hangup":
            return None
        if target is None:
            return f"destination {t} needs a target"
        if t in ("extension", "voicemail"):
            aor = f"{target}@{self.domain}"
            if self.cfg.numbers.get(target, Destination("")).type != "extension":
                return f"{target!r} is not an extension"
            if t == "voicemail" and not self.cfg.users[aor].settings.voicemail:
                return f"extension {target} has no voicemail"
            return None
        if t == "group":
            return None if target in self.cfg.groups else f"no ring group {target!r}"
        if t == "ivr":
            return None if target in self.cfg.ivrs else f"no IVR menu {target!r}"
        if t == "external":
            return None if _DIALABLE.fullmatch(target) else f"{target!r} is not a number"
        return f"unknown destination type {t!r}"
