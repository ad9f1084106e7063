"""From tables to the internal model, checking everything a table alone cannot say:
credentials, references between tables (a DID to an extension, a dial rule to a
trunk), number clashes, dial patterns and settings.

`build_config` raises every problem at once (`MultiError`), each located at the row
and field it comes from. `check_dir` is `pbx db check`: dbtext rules for every file,
schema rules for known tables, then these; it reads each table row by row and keeps
a hash per row, never the rows (`scan_dir` hands the same pass to a streaming
compile). Settings are judged by judge.py, as the daemon judges them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pbx_core.store import judge
from pbx_core.store import schema as sch
from pbx_core.store.dbtext import RowRef, Table, TableFile, Value, table_entries
from pbx_core.store.errors import Capped, DbTextError, raise_all
from pbx_core.store.index import HashSet, key_hash
from pbx_core.store.model import (
    PERMANENT_FLAG,
    Alias,
    Config,
    Contact,
    Destination,
    DialRule,
    Did,
    ExtensionSettings,
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
_SPEED_NUMBER = 32  # a speed dial's number (pbx/routing.py MAX_NUMBER: what a Redirect takes)
_DIGITS = re.compile(r"[0-9]+")
# A hashed mailbox PIN (features/voicemail/pins.py: sha256$SALT$HEX,
# pbkdf2_sha256$ITERATIONS$SALT$HEX), accepted beside plain digits.
_PIN_HASH = re.compile(r"(sha256|pbkdf2_sha256\$[0-9]{1,6})\$[A-Za-z0-9./+=-]{1,64}\$[0-9a-f]{64}")


@dataclass
class Report:
    """Result of checking a directory: errors (fatal) and warnings, in file order.
    `config` is the model when it was asked for (`check_tables`) and there is no
    error; `tables` counts the tables checked."""

    errors: list[DbTextError] = field(default_factory=list)
    warnings: list[DbTextError] = field(default_factory=list)
    config: Config | None = None
    tables: int = 0


# The `version` rows Kamailio 5.x's and SER 0.9.6's modules expect (as in their
# kamctl dbtext files). Kamailio's db_text loads a table whatever its version row
# says, but a module refuses to start on a missing or other version: a warning.
EXPECTED_VERSIONS: Mapping[tuple[str, str], int] = {
    ("kamailio", "subscriber"): 7,
    ("kamailio", "location"): 9,
    ("kamailio", "aliases"): 8,
    ("kamailio", "dbaliases"): 1,
    ("ser", "subscriber"): 5,
    ("ser", "location"): 6,
    ("ser", "aliases"): 6,
}


def _scan(sources: Mapping[str, sch.RowSource], report: Report) -> None:
    """Schema checks (errors) and duplicate ids (warnings) of every table."""
    for name in sorted(sources):
        errors, warnings = sch.scan_table(sources[name], sch.schema_for(sources[name]))
        report.errors.extend(errors)
        report.warnings.extend(warnings)


def _model(sources: Mapping[str, sch.RowSource], report: Report, *, keep: bool) -> None:
    builder = _Builder(sources, keep=keep, contacts=keep)
    config = builder.build()
    report.errors.extend(builder.errors.closed("<tables>", "errors"))
    report.warnings.extend(builder.warnings.closed("<tables>", "warnings"))
    if keep and not report.errors:
        report.config = config


def check_tables(tables: Mapping[str, Table]) -> Report:
    """Schema and model checks of already parsed tables; the model if no error."""
    report = Report(tables=len(tables))
    _scan(tables, report)
    if not tables:
        report.errors.append(DbTextError("<tables>", 0, 0, "no tables: an empty configuration"))
    if not report.errors:
        _model(tables, report, keep=True)
    return report


def check_dir(directory: str | os.PathLike[str]) -> Report:
    """`pbx db check`: every problem of a table directory, reading each table row by
    row (memory is a row plus a hash per row, never the table): dbtext rules for
    every file, schema rules for known tables, then the model's checks. Warnings
    (duplicate ids, version rows, ...) never make it fail."""
    return scan_dir(directory, contacts=False)[0]


def scan_dir(
    directory: str | os.PathLike[str], *, contacts: bool
) -> tuple[Report, dict[str, TableFile], _Builder | None]:
    """`check_dir`, also handing back the tables and the model builder (None after
    an error) for a streaming compile (`contacts`: keep location and aliases)."""
    report = Report()
    entries = table_entries(directory)
    if not entries:
        report.errors.append(DbTextError(str(directory), 0, 0, "no tables: an empty directory"))
    sources: dict[str, TableFile] = {}
    scan = Report()
    for path in entries:
        try:
            source = TableFile(path)
        except DbTextError as e:
            report.errors.extend(getattr(e, "errors", (e,)))
            continue
        _scan({source.name: source}, scan)  # also the dbtext pass over every row
        report.errors.extend(source.errors)
        report.warnings.extend(source.warnings)
        if not source.errors:
            sources[source.name] = source
    report.tables = len(sources)
    if report.errors:  # a table with dbtext errors: its schema problems would mislead
        return report, sources, None
    report.errors.extend(scan.errors)
    report.warnings.extend(scan.warnings)
    if report.errors:
        return report, sources, None
    builder = _Builder(sources, keep=False, contacts=contacts)
    builder.build()
    report.errors.extend(builder.errors.closed(str(directory), "errors"))
    report.warnings.extend(builder.warnings.closed(str(directory), "warnings"))
    return report, sources, None if report.errors else builder


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


_NO_DEST = Destination("")
MAX_MODEL_PROBLEMS = 500  # of the cross-table checks: the rest are counted
_DEFAULT_EXTENSION = ExtensionSettings()


def streamed_users(builder: _Builder) -> UserRows:
    """The subscribers a checked model (`scan_dir`) left in their table."""
    return UserRows(builder.tables.get("subscriber"), builder.ext_settings, builder.domain)


@dataclass
class UserRows:
    """The subscribers of a checked table, one `User` (with its pbx_extension settings)
    at a time; `domain` is the setting, whose users are extensions."""

    table: sch.RowSource | None
    ext_settings: Mapping[str, ExtensionSettings]
    domain: str

    def __iter__(self) -> Iterator[User]:
        for _ref, rec in _records(self.table, "subscriber"):
            user, domain = str(rec["username"]), str(rec["domain"])
            password, h1, h1b = _s(rec["password"]), _s(rec["ha1"]), _s(rec["ha1b"])
            if password is not None:
                h1, h1b = ha1(user, domain, password), ha1b(user, domain, password)
            assert h1 is not None  # checked  # noqa: S101
            settings = self.ext_settings.get(f"{user}@{domain}", _DEFAULT_EXTENSION)
            h1b = h1b.lower() if h1b else None
            sha = None if password is None else ha1_sha256(user, domain, password)
            yield User(user, domain, h1.lower(), h1b, _s(rec.get("rpid")), settings, ha1_sha256=sha)


def _records(table: sch.RowSource | None, name: str) -> Iterator[tuple[RowRef, dict[str, Value]]]:
    if table is None:
        return iter(())
    schema = sch.schema_for(table)
    assert schema is not None and schema.name == name  # noqa: S101  # a known table
    return sch.records(table, schema)


class _Builder:
    """Builds the model from row sources. With `keep=False` it keeps no record of the
    subscribers: they are hashes in `HashSet`s (index.py); with `contacts=False`
    (checking only) neither of location and aliases rows, so memory does not grow
    with those tables."""

    def __init__(
        self, tables: Mapping[str, sch.RowSource], *, keep: bool = True, contacts: bool = True
    ) -> None:
        self.tables = tables
        self.keep = keep
        self.contacts = contacts
        self.errors = Capped(MAX_MODEL_PROBLEMS)
        self.warnings = Capped(MAX_MODEL_PROBLEMS)
        self.cfg = Config(tables={k: v for k, v in tables.items() if isinstance(v, Table)})
        self.domain = str(sch.SETTINGS["domain"].default)
        # Destinations are checked last, when every table they may name is known.
        self._pending: list[tuple[RowRef, str, Destination]] = []
        self._settings_at: dict[str, RowRef] = {}  # the row of each setting given
        self._user_keys = HashSet()  # key_hash(aor) of every subscriber
        self._extension_keys = HashSet()  # key_hash(username) of subscribers in `domain`
        self._alias_keys = HashSet()
        self.ext_settings: dict[str, ExtensionSettings] = {}
        self._key_cache: dict[tuple[str, str], set[str]] = {}

    def rows(self, name: str) -> Iterator[tuple[RowRef, dict[str, Value]]]:
        return _records(self.tables.get(name), name)

    def err(self, ref: RowRef, column: str | None, message: str) -> None:
        self.errors.append(ref.error(column, message))

    # Subscribers, kept whole (`keep`) or as hashes.
    def is_user(self, aor: str) -> bool:
        return aor in self.cfg.users if self.keep else key_hash(aor) in self._user_keys

    def number(self, number: str) -> Destination:
        found = self.cfg.numbers.get(number)
        if found is None and not self.keep and key_hash(number) in self._extension_keys:
            return Destination("extension", number)
        return found or _NO_DEST

    def build(self) -> Config:
        self.settings()
        self.users()
        self.extensions()
        self.location()
        self.aliases()
        self.trunks()
        self.groups()
        self.dids()
        self.dialplan()
        self.speed_dials()
        self.versions()
        self.feature_destinations()
        self.feature_references()
        self.feature_numbers()
        self.check_destinations()
        return self.cfg

    # -------------------------------------------------------------- sections

    def settings(self) -> None:
        given: dict[str, Value] = {}
        refs: dict[str, RowRef] = {}
        for ref, rec in self.rows("pbx_settings"):
            name = str(rec["name"])
            refs[name] = ref
            given[name] = rec["value"]
            if rec["value"] is not None and name in sch.SETTINGS:
                self._settings_at[name] = ref
        values, problems = judge.typed_settings(given)
        problems += judge.settings_problems(values)
        for p in problems:
            column = "name" if p.message.startswith("unknown setting") else "value"
            at = next((refs[n] for n in p.names if n in self._settings_at), None)
            at = at or refs.get(p.names[0])
            if at is None:  # only defaults involved: cannot happen (tests/store/test_judge.py)
                e = DbTextError("pbx_settings", 0, 0, p.message)
            else:
                e = at.error(column, p.message)
            (self.warnings if p.warning else self.errors).append(e)
        self.cfg.settings = values
        self.domain = str(values["domain"])

    def users(self) -> None:
        for ref, rec in self.rows("subscriber"):
            user, domain = str(rec["username"]), str(rec["domain"])
            password, h1, h1b = _s(rec["password"]), _s(rec["ha1"]), _s(rec["ha1b"])
            for col, h in (("ha1", h1), ("ha1b", h1b)):
                if h is not None and not _HEX32.fullmatch(h):
                    self.err(ref, col, f"{col} must be 32 hex digits (an MD5 HA1)")
            if password is not None:
                want, wantb = ha1(user, domain, password), ha1b(user, domain, password)
                if h1 is not None and h1.lower() != want:
                    self.err(ref, "ha1", "ha1 does not match the password")
                if h1b is not None and h1b.lower() != wantb:
                    self.err(ref, "ha1b", "ha1b does not match the password")
                h1, h1b = want, wantb
            elif h1 is None:
                self.err(ref, "password", f"{user}@{domain} has neither password nor ha1")
                continue
            aor = f"{user}@{domain}"
            if password is None and "SHA-256" in str(self.cfg.settings.get("auth_algorithms")):
                self.warnings.append(
                    ref.error(
                        "ha1",
                        f"{aor} has an MD5 ha1 and no password: it is offered MD5"
                        " only, whatever auth_algorithms says",
                    )
                )
            if self.keep:
                self.cfg.users[aor] = User(
                    user,
                    domain,
                    h1.lower(),
                    h1b.lower() if h1b else None,
                    _s(rec.get("rpid")),
                    ha1_sha256=None if password is None else ha1_sha256(user, domain, password),
                )
                if domain == self.domain:
                    self.cfg.numbers.setdefault(user, Destination("extension", user))
            else:
                self._user_keys.add(key_hash(aor))
                if domain == self.domain:
                    self._extension_keys.add(key_hash(user))

    def extensions(self) -> None:
        for ref, rec in self.rows("pbx_extension"):
            aor = f"{rec['username']}@{rec['domain'] or self.domain}"
            if not self.is_user(aor):
                self.err(ref, "username", f"no subscriber {aor}")
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
            pin = settings.vm_pin
            if pin is not None and not (_DIGITS.fullmatch(pin) or _PIN_HASH.fullmatch(pin)):
                self.err(ref, "vm_pin", "vm_pin must be digits or a hashed PIN (sha256$SALT$HEX)")
            for col in ("forward_all", "forward_busy", "forward_noanswer"):
                v = rec[col]
                if v is not None and not _DIALABLE.fullmatch(str(v)):
                    self.err(ref, col, f"{col} must be a number (digits, * # +)")
            self.ext_settings[aor] = settings
            user = self.cfg.users.get(aor)
            if user is not None:
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

    def _has(self, name: str, column: str) -> bool:
        table = self.tables.get(name)
        return table is not None and table.has(column)

    def location(self) -> None:
        if not self.contacts:  # nothing in location refers to anything: no check to make
            return
        grouped: dict[str, list[Contact]] = {}
        kam = self._has("location", "ruid")
        for _ref, rec in self.rows("location"):
            aor = f"{rec['username']}@{rec['domain'] or self.domain}"
            grouped.setdefault(aor, []).append(self._contact(rec, kam))
        self.cfg.contacts = {
            aor: tuple(sorted(cs, key=lambda c: -c.q)) for aor, cs in grouped.items()
        }

    def aliases(self) -> None:
        grouped: dict[str, list[Contact]] = {}
        kam = self._has("aliases", "ruid")
        for _ref, rec in self.rows("aliases"):
            key = str(rec["username"]) + (f"@{rec['domain']}" if rec["domain"] else "")
            if self.contacts:
                grouped.setdefault(key, []).append(self._contact(rec, kam))
            else:
                self._alias_keys.add(key_hash(key))
        for key, cs in grouped.items():
            self.cfg.aliases[key] = Alias(key, None, tuple(sorted(cs, key=lambda c: -c.q)))
            self._alias_keys.add(key_hash(key))
        for ref, rec in self.rows("dbaliases"):
            key = f"{rec['alias_username']}@{rec['alias_domain']}"
            target = f"{rec['username']}@{rec['domain']}"
            if key_hash(key) in self._alias_keys:
                self.err(ref, "alias_username", f"alias {key} is also in the aliases table")
                continue
            if not self.is_user(target):
                self.warnings.append(ref.error("username", f"{target} is not a subscriber"))
            if self.contacts:
                self.cfg.aliases[key] = Alias(key, target, ())

    def trunks(self) -> None:
        for ref, rec in self.rows("pbx_trunk"):
            codecs = tuple(c.strip() for c in str(rec["codecs"]).split(","))
            if not all(codecs):
                self.err(ref, "codecs", "codecs is a comma-separated list like PCMU,PCMA")
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

    def _number(self, ref: RowRef, column: str, number: str, dest: Destination) -> None:
        if not _DIALABLE.fullmatch(number):
            self.err(ref, column, f"{number!r} is not a dialable number (digits, * # +)")
            return
        have = self.number(number)
        if have is not _NO_DEST:
            self.err(ref, column, f"number {number} is already {have.type} {have.target}")
            return
        self.cfg.numbers[number] = dest

    def groups(self) -> None:
        for ref, rec in self.rows("pbx_ring_group"):
            number = str(rec["number"])
            members = tuple(m.strip() for m in str(rec["members"]).split(","))
            for m in members:
                if self.number(m).type != "extension":
                    self.err(ref, "members", f"member {m!r} is not an extension")
            fallback = Destination(str(rec["fallback_type"]), _s(rec["fallback"]))
            self._pending.append((ref, "fallback", fallback))
            self._number(ref, "number", number, Destination("group", number))
            self.cfg.groups[number] = RingGroup(
                number,
                str(rec["name"]),
                members,
                str(rec["strategy"]),
                _i(rec["ring_timeout"]),
                fallback,
            )

    def dids(self) -> None:
        for ref, rec in self.rows("pbx_did"):
            number, trunk = str(rec["number"]), _s(rec["trunk"])
            if not _DID.fullmatch(number):
                self.err(ref, "number", "number is digits with an optional +, or *")
            if trunk is not None and trunk not in self.cfg.trunks:
                self.err(ref, "trunk", f"no trunk {trunk!r}")
            dest = Destination(str(rec["dest_type"]), _s(rec["dest"]))
            self._pending.append((ref, "dest", dest))
            self.cfg.dids[number] = Did(
                number, dest, trunk, _s(rec["description"]), _s(rec["welcome"])
            )

    def dialplan(self) -> None:
        rules: list[tuple[int, int, DialRule]] = []
        for ref, rec in self.rows("pbx_dialplan"):
            pattern = str(rec["pattern"])
            try:
                pattern_regex(pattern)
            except ValueError as e:
                offset, message = e.args
                at = ref.error("pattern", message)
                self.errors.append(
                    DbTextError(at.file, at.line, at.column + offset if at.column else 0, message)
                )
                continue
            action, trunk = str(rec["action"]), _s(rec["trunk"])
            if action == "trunk" and trunk is None:
                self.err(ref, "trunk", "action trunk needs a trunk")
            elif trunk is not None and trunk not in self.cfg.trunks:
                self.err(ref, "trunk", f"no trunk {trunk!r}")
            prepend = _s(rec["prepend"])
            if prepend is not None and not _DIALABLE.fullmatch(prepend):
                self.err(ref, "prepend", "prepend must be digits, * # +")
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
            rules.append((rule.priority, ref.index, rule))
        self.cfg.dialplan = tuple(rule for _p, _r, rule in sorted(rules, key=lambda x: x[:2]))

    def speed_dials(self) -> None:
        for ref, rec in self.rows("pbx_speed_dial"):
            owner = None
            if rec["domain"] is not None and rec["domain"] != self.domain:
                # feature codes serve the setting domain's extensions only
                self.err(ref, "domain", f"speed dials are for domain {self.domain}")
                continue
            if rec["username"] is not None:
                owner = f"{rec['username']}@{rec['domain'] or self.domain}"
                if not self.is_user(owner):
                    self.err(ref, "username", f"no subscriber {owner}")
                    continue
            code, number = str(rec["code"]), str(rec["number"])
            if not re.fullmatch(r"[0-9]{1,3}", code):
                self.err(ref, "code", "code is 1 to 3 digits")
            if not _DIALABLE.fullmatch(number):
                self.err(ref, "number", "number must be digits, * # +")
            elif len(number) > _SPEED_NUMBER:
                self.err(ref, "number", f"number is at most {_SPEED_NUMBER} characters")
            self.cfg.speed_dials[speed_key(owner, code)] = SpeedDial(
                code, number, owner, _s(rec["name"])
            )

    def versions(self) -> None:
        """Version rows: read into the model; a SER or Kamailio table whose row is
        missing or differs from what that dialect's modules expect is a warning."""
        rows: dict[str, RowRef] = {}
        version = self.tables.get("version")
        version_file = (version.file or version.name) if version is not None else ""
        for ref, rec in self.rows("version"):
            name = str(rec["table_name"])
            self.cfg.versions[name] = _i(rec["table_version"])
            rows[name] = ref
        for name in sorted(self.tables):
            schema = sch.schema_for(self.tables[name])
            want = EXPECTED_VERSIONS.get((schema.dialect, name)) if schema else None
            if want is None or schema is None:
                continue
            have = self.cfg.versions.get(name)
            if have is None:
                where = version_file or self.tables[name].file or name
                self.warnings.append(
                    DbTextError(
                        where,
                        0,
                        0,
                        f"no version row for table {name!r}: {schema.dialect}'s modules "
                        f"refuse the table without one (expected {name}:{want})",
                    )
                )
            elif have != want:
                self.warnings.append(
                    rows[name].error(
                        "table_version",
                        f"table {name!r} has version {have}, {schema.dialect}'s modules "
                        f"expect {want} for these columns and refuse another",
                    )
                )

    def feature_destinations(self) -> None:
        """The destinations a feature's own tables name (their `destinations`
        pairs), checked with every other (a feature table holds at most max_rows)."""
        for schema in sch.PBX_TABLES:
            if not schema.owner or not schema.destinations or schema.name not in self.tables:
                continue
            for ref, rec in self.rows(schema.name):
                for type_col, target_col in schema.destinations:
                    if rec[type_col] is not None:
                        dest = Destination(str(rec[type_col]), _s(rec[target_col]))
                        self._pending.append((ref, target_col, dest))

    def feature_references(self) -> None:
        """A feature's column with `refs` names a row of another table."""
        for schema in sch.PBX_TABLES:
            refs = [s for s in schema.specs if s.refs is not None]
            if not schema.owner or not refs or schema.name not in self.tables:
                continue
            for ref, rec in self.rows(schema.name):
                for spec in refs:
                    table, column = spec.refs or ("", "")
                    value = rec[spec.name]
                    if value is not None and str(value) not in self._keys(table, column):
                        self.err(ref, spec.name, f"no {column} {value!r} in {table}")

    def _keys(self, table: str, column: str) -> set[str]:
        """The values of one column of a table (what a feature's rows may name)."""
        found = self._key_cache.get((table, column))
        if found is None:
            known = any(s.name == table for s in sch.PBX_TABLES) and table in self.tables
            found = {str(rec[column]) for _ref, rec in self.rows(table)} if known else set()
            self._key_cache[(table, column)] = found
        return found

    def feature_numbers(self) -> None:
        """The internal numbers a feature's own tables give (a column declared with
        `dials=TYPE`): each reaches destination TYPE with the row's first key column
        as target, and clashes with any other number as a ring group's does."""
        for schema in sch.PBX_TABLES:
            if not schema.owner or not schema.key or schema.name not in self.tables:
                continue
            numbered = [s for s in schema.specs if s.dials]
            for ref, rec in self.rows(schema.name):
                for spec in numbered:
                    number, target = rec[spec.name], rec[schema.key[0]]
                    if number is not None and str(number) != "" and target is not None:
                        self._number(
                            ref, spec.name, str(number), Destination(spec.dials, str(target))
                        )

    def check_destinations(self) -> None:
        for ref, column, dest in self._pending:
            problem = self._dest_problem(dest)
            if problem:
                self.err(ref, column, problem)

    def _dest_problem(self, dest: Destination) -> str | None:
        t, target = dest.type, dest.target
        if t == "hangup":
            return None
        if t in sch.FUTURE_DEST_TYPES:
            return (
                f"destination type {t!r}: {sch.FUTURE_DEST_TYPES[t]} not built yet "
                f"(built: {', '.join(sch.BUILT_DEST_TYPES)})"
            )
        if target is None:
            return f"destination {t} needs a target"
        if t == "voicemail" and self._feature_target(t, target):
            return None  # a shared box (features/voicemail's pbx_mailbox)
        if t in ("extension", "voicemail"):
            aor = f"{target}@{self.domain}"
            if self.number(target).type != "extension":
                return f"{target!r} is not an extension"
            settings = self.ext_settings.get(aor, _DEFAULT_EXTENSION)
            if t == "voicemail" and not settings.voicemail:
                return f"extension {target} has no voicemail"
            return None
        if t == "group":
            return None if target in self.cfg.groups else f"no ring group {target!r}"
        if t == "external":
            return None if _DIALABLE.fullmatch(target) else f"{target!r} is not a number"
        if t in sch.BUILT_DEST_TYPES:  # a feature's own type: the table of its targets
            table = next((s for s in sch.PBX_TABLES if s.targets == t and s.key), None)
            if table is None or target in self._keys(table.name, table.key[0]):
                return None
            return f"no {t} {target!r} in {table.name}"
        return f"unknown destination type {t!r}"

    def _feature_target(self, t: str, target: str) -> bool:
        """Whether a feature's table whose keys are targets of type `t` has `target`."""
        table = next((s for s in sch.PBX_TABLES if s.targets == t and s.key), None)
        return table is not None and target in self._keys(table.name, table.key[0])
