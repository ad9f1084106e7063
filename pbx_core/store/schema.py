"""Table schemas: SER 0.9.6's and Kamailio 5.x's tables, and the PBX's own.

A schema says which columns a known table has, which of them the PBX needs, their
type class (int, double or text: Kamailio treats str/string/blob alike on load), and
for the PBX's tables their default and meaning. Tables are matched to a schema by
name, and SER versus Kamailio by a column only one of them has (`ruid` in location
and aliases, `id` in subscriber and version).

SER and Kamailio tables may carry columns the PBX does not use (a SER subscriber has
a dozen): they are kept and written back, never an error. The PBX's own tables
(prefix `pbx_`, so they never collide with one of Kamailio's dozens of tables) are
strict: an unknown column is an error, so a misspelt optional column is caught.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pbx_core.store.dbtext import MAX_ERRORS_PER_FILE, Column, ColumnType, Row, RowRef, Table, Value
from pbx_core.store.errors import Capped, DbTextError
from pbx_core.store.index import Duplicates
from pbx_core.store.settings import CORE_SETTINGS, Setting

REQUIRED: Value = None  # default of a column that must have a value
T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """One column of a schema. `default` applies when the column is absent or NULL;
    a required column (`need=True`) has no default. `choices` limits text values;
    `lo`/`hi` limit ints. `any_type` accepts any type class (SER's last_modified)."""

    name: str
    type: ColumnType
    doc: str
    null: bool = False
    auto: bool = False
    need: bool = False
    default: Value = None
    choices: tuple[str, ...] = ()
    lo: int | None = None
    hi: int | None = None
    any_type: bool = False
    template: bool = True  # part of the header `TableSchema.empty()` writes
    # The feature this column belongs to when that feature is not built yet: any
    # value but the default is an error (`pbx db check`), never silently ignored.
    future: str = ""
    # A destination type column: its values are `DEST_TYPES` as joined at start (the
    # core's and the features' own), not `choices`.
    dest: bool = False
    # What else is wrong with a value (not NULL, of the right type, within choices and
    # lo..hi), in a few words, or None: a feature's rule the schema cannot say (a time
    # range, a zone name). Called by `pbx db check`, the compile and the console.
    check: Callable[[Value], str | None] | None = None
    # The value names a row of another table: (table, column). `pbx db check` refuses
    # a value that is not there (a time condition's time group).
    refs: tuple[str, str] | None = None
    # A feature table's column of internal numbers (optional, dialable): extensions
    # dialling one reach the feature's destination type `dials`, the row's first key
    # column as its target (step 4 of the dial plan), as a ring group's number does.
    dials: str = ""

    def column(self) -> Column:
        return Column(self.name, self.type, self.null, self.auto)


@dataclass(frozen=True)
class TableSchema:
    name: str
    dialect: str  # "ser", "kamailio" or "pbx"
    doc: str
    specs: tuple[Spec, ...]
    key: tuple[str, ...] = ()  # these columns together are unique
    strict: bool = False  # unknown columns are errors
    future: str = ""  # the feature the table belongs to, not built yet: a row is an error
    # Rows a table may hold (0: no bound; a feature's table always has one, since the
    # daemon keeps its rows in RAM for `ctx.rows`): more is a `pbx db check` error.
    max_rows: int = 0
    owner: str = ""  # the feature that declared the table ("": the core's)
    # (type column, target column) pairs naming a destination, checked as a DID's
    # are (the core's tables check their own in build.py; a feature's are these).
    destinations: tuple[tuple[str, str], ...] = ()
    # The destination type (a feature's) whose targets are this table's key: a
    # destination naming a target that is not a row here is a `pbx db check` error.
    targets: str = ""

    def spec(self, name: str) -> Spec | None:
        for s in self.specs:
            if s.name == name:
                return s
        return None

    def columns(self) -> tuple[Column, ...]:
        """The header of a new table: the dialect's own, column for column."""
        return tuple(s.column() for s in self.specs if s.template)

    def empty(self) -> Table:
        return Table(self.name, self.columns())


def _s(name: str, doc: str, **kw: object) -> Spec:
    return Spec(name, ColumnType.STRING, doc, **kw)  # type: ignore[arg-type]  # kw are Spec fields


def _i(name: str, doc: str, **kw: object) -> Spec:
    return Spec(name, ColumnType.INT, doc, **kw)  # type: ignore[arg-type]  # kw are Spec fields


def text(name: str, doc: str, **kw: object) -> Spec:
    """A text column (a feature's table declares its columns with these)."""
    return Spec(name, ColumnType.STRING, doc, **kw)  # type: ignore[arg-type]  # kw are Spec fields


def integer(name: str, doc: str, **kw: object) -> Spec:
    """An int column; `lo`/`hi` bound it (`**BOOL`: 0 or 1)."""
    return Spec(name, ColumnType.INT, doc, **kw)  # type: ignore[arg-type]  # kw are Spec fields


def double(name: str, doc: str, **kw: object) -> Spec:
    """A floating-point column."""
    return Spec(name, ColumnType.DOUBLE, doc, **kw)  # type: ignore[arg-type]  # kw are Spec fields


def pbx_table(
    name: str,
    doc: str,
    *specs: Spec,
    key: tuple[str, ...] = (),
    max_rows: int = 0,
    targets: str = "",
) -> TableSchema:
    """A PBX table (dialect pbx, strict): how a feature declares its own, named
    pbx_<something>; `max_rows` 0 = feature_schema.DEFAULT_ROWS; `targets`: the
    feature's destination type whose targets are the rows' key (`timecond`)."""
    names = {s.name for s in specs}
    dests = tuple(
        (s.name, s.name.removesuffix("_type"))
        for s in specs
        if s.dest and s.name.removesuffix("_type") in names
    )
    return TableSchema(
        name,
        "pbx",
        doc,
        specs,
        key=key,
        strict=True,
        max_rows=max_rows,
        destinations=dests,
        targets=targets,
    )


def destination(name: str, doc: str, *, need: bool = True) -> tuple[Spec, Spec]:
    """A destination's two columns, `NAME_type` (a destination type: extension,
    group, hangup, a feature's ...) and `NAME` (its target), checked as a DID's are
    (`*destination("match_dest", "where calls go when it matches")` in `pbx_table`)."""
    return (
        text(f"{name}_type", f"{doc}: the destination type", need=need, null=not need, dest=True),
        text(name, f"{doc}: the target; NULL only for hangup", null=True),
    )


def _prompt_name(value: Value) -> str | None:
    """A prompt's name (a DID's welcome): never a path."""
    ok = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", str(value))
    return None if ok else "a prompt name is letters, digits, . _ - (at most 64)"


def _id() -> Spec:
    return _i("id", "row id, assigned by Kamailio when empty", auto=True)


BOOL = {"lo": 0, "hi": 1}
# The core's destination types; DEST_TYPES, FUTURE_DEST_TYPES and BUILT_DEST_TYPES are
# rebound at start with the features' own (store/feature_schema.py).
DEST_TYPES: tuple[str, ...] = ("extension", "group", "ivr", "voicemail", "external", "hangup")
CORE_DEST_TYPES = DEST_TYPES
# Destination types of features not built yet: a destination naming one is an error.
# The others are the core's (extension, hangup) and the features' (group: ringgroup);
# tests/store/test_honesty.py keeps this in step with features/registry.py.
FUTURE_DEST_TYPES: Mapping[str, str] = {
    "ivr": "IVR",
    "voicemail": "voicemail",
    "external": "external destinations",
}
CORE_FUTURE_DEST_TYPES = FUTURE_DEST_TYPES
BUILT_DEST_TYPES = tuple(t for t in DEST_TYPES if t not in FUTURE_DEST_TYPES)
_DEST_DOC = (
    "where calls go: extension, group (ring group number), ivr (menu name), "
    "voicemail (mailbox), external (number dialled through the dial plan), hangup"
)

# --------------------------------------------------------------------- SER 0.9.6

_SER_SUBSCRIBER_EXTRA = [
    "phplib_id",
    "first_name",
    "last_name",
    "phone",
    "email_address",
    "datetime_created",
    "datetime_modified",
    "confirmation",
    "flag",
    "sendnotification",
    "greeting",
    "perms",
    "allow_find",
    "timezone",
]

SER_SUBSCRIBER = TableSchema(
    "subscriber",
    "ser",
    "SER 0.9.6 subscribers (serweb's columns are kept but unused)",
    (
        _s("username", "user part of the AOR; the extension number", need=True),
        _s("domain", "domain part of the AOR and digest realm", need=True),
        _s("password", "clear-text password (or give ha1/ha1b)", null=True),
        _s("ha1", "MD5(username:domain:password)", null=True),
        _s("ha1b", "MD5(username@domain:domain:password)", null=True),
        _s(
            "rpid",
            "SER's Remote-Party-ID, kept but unused (caller ID: pbx_extension's "
            "display_name and outbound_cid)",
            null=True,
        ),
        *(_s(n, "serweb field, unused", null=True, any_type=True) for n in _SER_SUBSCRIBER_EXTRA),
    ),
    key=("username", "domain"),
)


def _contact_specs(ser: bool) -> tuple[Spec, ...]:
    """usrloc's columns, in the order and with the nullability of SER 0.9.6's and
    Kamailio 5.x's own table files (Kamailio: utils/kamctl/dbtext/kamailio/location)."""
    k = not ser  # Kamailio declares most columns not null
    specs = {
        "id": _id(),
        "ruid": _s("ruid", "record unique id"),
        "username": _s("username", "user part of the AOR (for aliases: the alias)", need=True),
        "domain": _s("domain", "domain part of the AOR; NULL without use_domain", null=True),
        "contact": _s("contact", "contact URI the AOR routes to", need=True, null=ser),
        "received": _s("received", "source address when behind NAT", null=True),
        "path": _s("path", "Path header", null=True),
        "expires": _i("expires", "expiry, Unix time; 0 = never (Kamailio)", need=True, null=ser),
        "q": Spec("q", ColumnType.DOUBLE, "q value, -1 = unset", null=ser, default=-1.0),
        "callid": _s("callid", "Call-ID of the REGISTER", null=ser),
        "cseq": _i("cseq", "CSeq of the REGISTER", null=ser),
        "last_modified": Spec(
            "last_modified",
            ColumnType.INT if k else ColumnType.STR,
            "time of the last change",
            any_type=True,
        ),
        "replicate": _i("replicate", "SER replication mark", null=True),
        "state": _i("state", "SER replication state", null=True),
        "flags": _i("flags", "usrloc flags; 128 = permanent (never expires)", default=0),
        "cflags": _i("cflags", "contact branch flags", default=0),
        "user_agent": Spec(
            "user_agent", ColumnType.STRING if k else ColumnType.STR, "User-Agent of the REGISTER"
        ),
        "socket": _s("socket", "local socket the contact came in on", null=True),
        "methods": _i("methods", "allowed methods bitmask", null=True),
        "instance": _s("instance", "+sip.instance", null=True),
        "reg_id": _i("reg_id", "RFC 5626 reg-id", default=0),
        "server_id": _i("server_id", "server id", default=0),
        "connection_id": _i("connection_id", "TCP connection id", default=-1),
        "keepalive": _i("keepalive", "keepalive flag", default=0),
        "partition": _i("partition", "partition", default=0),
    }
    if ser:
        order = (
            "username domain contact expires q callid cseq last_modified replicate state "
            "flags user_agent received"
        )
        return tuple(
            Spec(sp.name, ColumnType.STR, sp.doc, sp.null, sp.auto, sp.need, sp.default,
                 any_type=sp.any_type)
            if sp.type.is_text
            else sp
            for sp in (specs[n] for n in order.split())
        )  # fmt: skip
    order = (
        "id ruid username domain contact received path expires q callid cseq last_modified "
        "flags cflags user_agent socket methods instance reg_id server_id connection_id "
        "keepalive partition"
    )
    return tuple(specs[n] for n in order.split())


SER_LOCATION = TableSchema("location", "ser", "SER 0.9.6 usrloc", _contact_specs(True))
SER_ALIASES = TableSchema("aliases", "ser", "SER 0.9.6 aliases", _contact_specs(True))
SER_VERSION = TableSchema(
    "version",
    "ser",
    "table versions",
    (_s("table_name", "table", need=True), _i("table_version", "its version", need=True)),
    key=("table_name",),
)

# --------------------------------------------------------------------- Kamailio 5.x

KAM_SUBSCRIBER = TableSchema(
    "subscriber",
    "kamailio",
    "Kamailio 5.x auth_db subscribers",
    (
        _id(),
        _s("username", "user part of the AOR; the extension number", need=True),
        _s("domain", "domain part of the AOR and digest realm", need=True),
        _s("password", "clear-text password; declare it null to give only ha1/ha1b"),
        _s("ha1", "MD5(username:domain:password)"),
        _s("ha1b", "MD5(username@domain:domain:password)"),
        _s("email_address", "older schemas, unused", null=True, template=False),
        _s("rpid", "older schemas: Remote-Party-ID, kept but unused", null=True, template=False),
    ),
    key=("username", "domain"),
)
KAM_LOCATION = TableSchema("location", "kamailio", "Kamailio 5.x usrloc", _contact_specs(False))
KAM_ALIASES = TableSchema("aliases", "kamailio", "Kamailio 5.x aliases", _contact_specs(False))
KAM_DBALIASES = TableSchema(
    "dbaliases",
    "kamailio",
    "Kamailio alias_db: alias_username@alias_domain -> username@domain",
    (
        _id(),
        _s("alias_username", "the alias", need=True),
        _s("alias_domain", "its domain", need=True),
        _s("username", "target user", need=True),
        _s("domain", "target domain", need=True),
    ),
    key=("alias_username", "alias_domain"),
)
KAM_VERSION = TableSchema(
    "version",
    "kamailio",
    "table versions",
    (_id(), _s("table_name", "table", need=True), _i("table_version", "its version", need=True)),
    key=("table_name",),
)

# --------------------------------------------------------------------- PBX tables

# Permission classes, least to most (an extension may use routes up to its own).
CALL_CLASSES = ("internal", "local", "national", "international")
RULE_CLASSES = ("emergency", "local", "national", "international")

PBX_EXTENSION = TableSchema(
    "pbx_extension",
    "pbx",
    "Settings of an extension; its credentials are the subscriber row of the same "
    "username and domain. A subscriber without a row here gets every default.",
    (
        _id(),
        _s("username", "the subscriber's username (the extension number)", need=True),
        _s("domain", "the subscriber's domain; NULL = setting `domain`", null=True),
        _s("display_name", "caller ID name shown to other phones", null=True),
        _i("enabled", "0 = calls to and from it are refused", default=1, **BOOL),
        _i("voicemail", "1 = has a mailbox (features/voicemail)", default=0, **BOOL),
        _s(
            "vm_pin",
            "mailbox PIN (digits, or hashed: sha256$SALT$HEX, features/voicemail/pins.py): "
            "asked by *98, and by *97 from the own phone; NULL = the own phone's SIP login "
            "is enough (*97) and *98 cannot open the box; one the owner sets from the "
            "phone wins until this value changes",
            null=True,
        ),
        _i("ring_timeout", "seconds to ring before no-answer handling", default=20, lo=5, hi=300),
        _i(
            "call_waiting",
            "initial call waiting (phones toggle it with *70/*71)",
            default=1,
            **BOOL,
        ),
        _i("dnd", "initial do-not-disturb (*78/*79)", default=0, **BOOL),
        _s("forward_all", "initial unconditional forward target (*72/*73)", null=True),
        _s("forward_busy", "initial forward-on-busy target (*90/*91)", null=True),
        _s("forward_noanswer", "initial forward-on-no-answer target (*52/*53)", null=True),
        _i(
            "pickup_group",
            "call pickup group: *8 answers a call ringing an extension of the same "
            "group; NULL = none",
            null=True,
            lo=0,
            hi=63,
        ),
        _i("max_contacts", "registrations kept per extension", default=3, lo=1, hi=20),
        _s("outbound_cid", "number presented on trunk calls; NULL = trunk's", null=True),
        _s(
            "call_class",
            "farthest it may dial out: internal (no trunk), local, national, international; "
            "emergency routes are always allowed",
            default="national",
            choices=CALL_CLASSES,
        ),
    ),
    key=("username", "domain"),
    strict=True,
)

PBX_TRUNK = TableSchema(
    "pbx_trunk",
    "pbx",
    "SIP trunks to providers.",
    (
        _id(),
        _s("name", "unique name, used by pbx_dialplan and pbx_did", need=True),
        _i("enabled", "0 = not used and not registered", default=1, **BOOL),
        _s("host", "provider host name or address", need=True),
        _i("port", "provider port", default=5060, lo=1, hi=65535),
        _s("transport", "udp or tcp", default="udp", choices=("udp", "tcp")),
        _s("username", "account user (From and REGISTER)", null=True),
        _s("auth_username", "digest user when it differs from username", null=True),
        _s("password", "digest password", null=True),
        _s("from_domain", "domain of From; NULL = host", null=True),
        _i("register", "1 = REGISTER to the provider", default=1, **BOOL),
        _i("register_expires", "REGISTER expiry asked for, seconds", default=3600, lo=60),
        _s(
            "outbound_proxy",
            "send requests here instead of host",
            null=True,
            future="trunk outbound proxy",
        ),
        _s("caller_id", "default number presented on outgoing calls", null=True),
        _s(
            "codecs",
            "comma-separated codec preference (the PBX offers its own: PCMU, PCMA)",
            default="PCMU,PCMA",
            future="per-trunk codecs",
        ),
        _i(
            "max_channels",
            "simultaneous calls over the trunk, in or out (one beyond gets 503); 0 = unlimited",
            default=0,
            lo=0,
        ),
        _s(
            "dtmf",
            "rfc4733, inband or info (the PBX sends RFC 4733 and hears all three)",
            default="rfc4733",
            choices=("rfc4733", "inband", "info"),
            future="per-trunk DTMF mode",
        ),
    ),
    key=("name",),
    strict=True,
)

PBX_DID = TableSchema(
    "pbx_did",
    "pbx",
    "Incoming numbers (DIDs) and where their calls go. `*` matches a number no other row has.",
    (
        _id(),
        _s(
            "number",
            "the called number as the trunk sends it (digits, optional +), or *",
            need=True,
        ),
        _s(
            "trunk",
            "only calls from this trunk (from another, the `*` row applies); NULL = any",
            null=True,
        ),
        _s("dest_type", _DEST_DOC, need=True, choices=DEST_TYPES, dest=True),
        _s("dest", "the destination; NULL only for hangup", null=True),
        _s("description", "free text", null=True),
        _s(
            "welcome",
            "a prompt played to the caller (the PBX answers) before the call goes to its "
            "destination: a prompt name (letters, digits, . _ -); NULL = none",
            null=True,
            check=_prompt_name,
        ),
    ),
    key=("number",),
    strict=True,
)

PBX_DIALPLAN = TableSchema(
    "pbx_dialplan",
    "pbx",
    "Outbound routes, tried by priority then row order after internal numbers. Patterns "
    "use Asterisk's letters: X any digit, Z 1-9, N 2-9, [1-5] a set, . one or more "
    "digits, ! zero or more (both only at the end); other characters match themselves.",
    (
        _id(),
        _i("priority", "lower is tried first", default=0),
        _s("pattern", "dialled-number pattern", need=True),
        _s("action", "trunk = send out, deny = refuse", default="trunk", choices=("trunk", "deny")),
        _s("trunk", "pbx_trunk name for action trunk", null=True),
        _i("strip", "digits removed from the front", default=0, lo=0, hi=32),
        _s("prepend", "digits added to the front after stripping", null=True),
        _s("description", "free text", null=True),
        _s(
            "call_class",
            "class a caller needs for this route (emergency = everybody, even internal)",
            default="national",
            choices=RULE_CLASSES,
        ),
    ),
    strict=True,
)

PBX_RING_GROUP = TableSchema(
    "pbx_ring_group",
    "pbx",
    "Ring groups: one number ringing several extensions.",
    (
        _id(),
        _s("number", "the group's dialable number", need=True),
        _s("name", "a label for people reading the table (no call shows it)", need=True),
        _s(
            "strategy",
            "ringall = every member at once; hunt = one after another in order; memoryhunt = "
            "the first, then the first two, then the first three...; random = one after "
            "another in a random order; firstavailable = the first member registered and "
            "not in a call, alone",
            default="ringall",
            choices=("ringall", "hunt", "memoryhunt", "random", "firstavailable"),
        ),
        _s("members", "comma-separated extension numbers", need=True),
        _i(
            "ring_timeout",
            "seconds each step of the strategy rings",
            default=20,
            lo=5,
            hi=300,
        ),
        _s(
            "fallback_type",
            "where unanswered calls go: " + _DEST_DOC,
            default="hangup",
            choices=DEST_TYPES,
            dest=True,
        ),
        _s("fallback", "fallback destination", null=True),
    ),
    key=("number",),
    strict=True,
)

PBX_SPEED_DIAL = TableSchema(
    "pbx_speed_dial",
    "pbx",
    "Speed dials (*0 + code, the speed dial feature). A row without username is for everyone.",
    (
        _id(),
        _s("username", "extension that owns it; NULL = every extension", null=True),
        _s(
            "domain", "NULL or the setting `domain` (feature codes serve its extensions)", null=True
        ),
        _s("code", "1 to 3 digits", need=True),
        _s("number", "number dialled, as the extension dials it: 0-9 * # +, at most 32", need=True),
        _s("name", "label", null=True),
    ),
    key=("username", "domain", "code"),
    strict=True,
)

PBX_SETTINGS = TableSchema(
    "pbx_settings",
    "pbx",
    "System settings, one per row; the names, types and defaults are listed below.",
    (
        _s("name", "setting name", need=True),
        _s("value", "its value, as text; NULL = default", null=True),
    ),
    key=("name",),
    strict=True,
)


# The core's settings and the checks of their values: store/settings.py.
# SETTINGS, SCHEMAS and PBX_TABLES are the core's joined with the features' own
# (store/feature_schema.py rebinds them at start, before anything reads the store):
# read them as `schema.X` at use, never import the names.
SETTINGS: Mapping[str, Setting] = CORE_SETTINGS

SCHEMAS: tuple[TableSchema, ...] = (
    SER_SUBSCRIBER,
    SER_LOCATION,
    SER_ALIASES,
    SER_VERSION,
    KAM_SUBSCRIBER,
    KAM_LOCATION,
    KAM_ALIASES,
    KAM_DBALIASES,
    KAM_VERSION,
    PBX_EXTENSION,
    PBX_TRUNK,
    PBX_DID,
    PBX_DIALPLAN,
    PBX_RING_GROUP,
    PBX_SPEED_DIAL,
    PBX_SETTINGS,
)
CORE_SCHEMAS = SCHEMAS
PBX_TABLES = tuple(s for s in SCHEMAS if s.dialect == "pbx")


def schema_for(table: RowSource) -> TableSchema | None:
    """The schema of a known table, picking SER or Kamailio by its columns."""
    name = table.name
    if name in ("location", "aliases"):
        kam = table.has("ruid")
        if name == "location":
            return KAM_LOCATION if kam else SER_LOCATION
        return KAM_ALIASES if kam else SER_ALIASES
    if name == "subscriber":
        return KAM_SUBSCRIBER if table.has("id") else SER_SUBSCRIBER
    if name == "version":
        return KAM_VERSION if table.has("id") else SER_VERSION
    if name == "dbaliases":
        return KAM_DBALIASES
    for s in PBX_TABLES:
        if s.name == name:
            return s
    return None


def _compatible(spec: Spec, col: Column) -> bool:
    if spec.any_type:
        return True
    if spec.type.is_text:
        return col.type.is_text
    if spec.type.is_int:
        return col.type.is_int
    return col.type is spec.type


class RowSource(Protocol):
    """A table read row by row: a `Table` in memory or a `TableFile` on disk."""

    name: str
    file: str
    columns: tuple[Column, ...]

    def has(self, column: str) -> bool: ...

    def iter_rows(self) -> Iterator[Row]: ...


def check_columns(table: RowSource, schema: TableSchema) -> list[DbTextError]:
    """Every way the header of `table` breaks `schema`."""
    f = table.file or table.name
    errors: list[DbTextError] = []
    for col in table.columns:
        spec = schema.spec(col.name)
        if spec is None:
            if schema.strict:
                known = ", ".join(s.name for s in schema.specs)
                errors.append(
                    DbTextError(f, 1, col.pos, f"unknown column {col.name!r} (known: {known})")
                )
        elif not _compatible(spec, col):
            errors.append(
                DbTextError(
                    f,
                    1,
                    col.pos,
                    f"column {col.name!r} must be {spec.type.value}, not {col.type.value}",
                )
            )
    errors.extend(
        DbTextError(
            f,
            1,
            0,
            f"missing column {spec.name!r} ({spec.type.value}) of the "
            f"{schema.dialect} {schema.name} table",
        )
        for spec in schema.specs
        if spec.need and not table.has(spec.name)
    )
    return errors


def scan_table(
    table: RowSource, schema: TableSchema | None
) -> tuple[list[DbTextError], list[DbTextError]]:
    """(errors, warnings) of `table` against `schema` (None: an unknown table, only
    its ids are looked at): columns, value ranges and unique keys are errors; an id
    (the auto column) that an earlier row has is a warning, as Kamailio loads both.
    One pass over the rows, a second only if a duplicate is suspected; memory is a
    hash per row (see index.py)."""
    errors = Capped(MAX_ERRORS_PER_FILE)
    errors.extend(check_columns(table, schema) if schema is not None else [])
    checked: list[tuple[int, Spec]] = []
    key_idx: list[int] = []
    if schema is not None and not errors:
        checked = [(i, s) for i, c in enumerate(table.columns) if (s := schema.spec(c.name))]
        if schema.key and all(table.has(k) for k in schema.key):
            key_idx = [_index(table, k) for k in schema.key]
    auto = next((i for i, c in enumerate(table.columns) if c.auto), None)
    keys, ids = Duplicates(), Duplicates()
    max_rows = schema.max_rows if schema is not None else 0
    for n, (ref, row) in enumerate(table.iter_rows(), 1):
        if max_rows and n == max_rows + 1:
            assert schema is not None  # noqa: S101  # max_rows comes from it
            errors.append(ref.error(None, f"table {schema.name} holds at most {max_rows} rows"))
        if schema is not None and schema.future:
            errors.append(
                ref.error(
                    None,
                    f"table {schema.name} belongs to {schema.future}, which is not built "
                    "yet: a row here would do nothing",
                )
            )
        for i, spec in checked:
            problem = _value_problem(spec, row[i])
            if problem:
                errors.append(ref.error(spec.name, problem))
        if key_idx:
            keys.add(tuple(row[i] for i in key_idx))
        if auto is not None:
            ids.add(row[auto])
    warnings = Capped(MAX_ERRORS_PER_FILE)
    if keys.suspects or ids.suspects:
        assert schema is not None or not keys.suspects  # noqa: S101  # keys need a schema
        for ref, row in table.iter_rows():
            key = tuple(row[i] for i in key_idx)
            first = keys.again(key, ref.line) if key_idx else None
            if first is not None and schema is not None:
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(schema.key, key, strict=True))
                errors.append(ref.error(None, f"duplicate {shown} (first at line {first})"))
            first = ids.again(row[auto], ref.line) if auto is not None else None
            if first is not None and auto is not None:
                name = table.columns[auto].name
                warnings.append(
                    ref.error(
                        name,
                        f"duplicate {name} {row[auto]} (first at line {first}): "
                        "Kamailio loads both rows",
                    )
                )
    where = table.file or table.name
    found = errors.closed(where, "errors")
    found.sort(key=lambda e: e.line if e.line else 1 << 62)
    return found, warnings.closed(where, "warnings")


def _index(table: RowSource, column: str) -> int:
    return next(i for i, c in enumerate(table.columns) if c.name == column)


def check_table(table: RowSource, schema: TableSchema) -> list[DbTextError]:
    """Every way `table` breaks `schema`: columns, value ranges, unique keys."""
    return scan_table(table, schema)[0]


def _value_problem(spec: Spec, v: Value) -> str | None:
    if v is None:
        if spec.need:
            return f"column {spec.name!r} needs a value"
        return None
    if spec.future and v != spec.default:
        shown = "empty" if spec.default is None else f"at its default {spec.default!r}"
        return (
            f"column {spec.name!r} belongs to {spec.future}, which is not built yet: "
            f"leave it {shown}"
        )
    choices = DEST_TYPES if spec.dest else spec.choices
    if choices and v not in choices:
        return f"column {spec.name!r} is {v!r}; expected one of {', '.join(choices)}"
    if isinstance(v, int) and not spec.any_type:
        if spec.lo is not None and v < spec.lo:
            return f"column {spec.name!r} is {v}; expected at least {spec.lo}"
        if spec.hi is not None and v > spec.hi:
            return f"column {spec.name!r} is {v}; expected at most {spec.hi}"
    if spec.check is not None:
        problem = run_check(spec.check, v)
        if problem:
            return f"column {spec.name!r} is {v!r}: {problem}"
    return None


def run_check(check: Callable[[T], str | None], value: T) -> str | None:
    """A declared check's verdict; its own failure is a problem, never a traceback."""
    try:
        return check(value)
    except Exception as exc:  # noqa: BLE001  # a feature's check must not crash db check
        return f"cannot be checked ({type(exc).__name__}: {exc})"


def records(table: RowSource, schema: TableSchema) -> Iterator[tuple[RowRef, dict[str, Value]]]:
    """Rows as dicts with every schema column, defaults filled in for absent or NULL,
    with where each came from; one row in memory at a time."""
    defaults = {s.name: s.default for s in schema.specs}
    names = [c.name for c in table.columns]
    for ref, row in table.iter_rows():
        out = dict(defaults)
        for k, v in zip(names, row, strict=True):
            if v is not None or k not in out:
                out[k] = v
        yield ref, out


def schema_markdown() -> str:
    """The tables of README.md's schema section (a test keeps README in step)."""
    out: list[str] = []
    for s in SCHEMAS:
        title = f"### `{s.name}` ({s.dialect})"
        if s.owner:
            title = f"### `{s.name}` (feature {s.owner})"
        out += [title, "", s.doc, ""]
        if s.future:
            out += [f"**Not built yet ({s.future}): a row is an error.**", ""]
        if s.key:
            out += [f"Unique: {', '.join(s.key)}.", ""]
        out += ["| column | type | default | meaning |", "|---|---|---|---|"]
        for c in s.specs:
            typ = c.column().definition().split("(", 1)[1].rstrip(")")
            if c.need:
                default = "required"
            elif c.auto:
                default = "auto"
            elif c.default is None:
                default = "NULL"
            else:
                default = f"`{c.default}`"
            extra = f" ({', '.join(c.choices)})" if c.choices and not c.dest else ""
            later = f" **Not built yet ({c.future}): only the default.**" if c.future else ""
            out.append(f"| {c.name} | {typ} | {default} | {c.doc}{extra}{later} |")
        out.append("")
    added = [t for t in DEST_TYPES if t not in CORE_DEST_TYPES]
    if added:
        out += ["### Destination types of features", ""]
        out += [f"Besides the core's, every destination type column takes: {', '.join(added)}.", ""]
    out += ["### Settings (`pbx_settings` rows)", ""]
    out += ["| name | type | default | meaning |", "|---|---|---|---|"]
    for st in SETTINGS.values():
        choices = f" ({', '.join(st.choices)})" if st.choices else ""
        default = f"`{st.default}`" if st.default != "" else "empty"
        later = f" **Not built yet ({st.future}): only the default.**" if st.future else ""
        rng = f" ({st.lo}..{st.hi})" if st.lo is not None and st.hi is not None else ""
        owner = f" (feature {st.owner})" if st.owner else ""
        doc = f"{st.doc}{rng}{choices}{later}{owner}"
        out.append(f"| {st.name} | {st.type.__name__} | {default} | {doc} |")
    return "\n".join(out) + "\n"
