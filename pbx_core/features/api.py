"""The feature platform's contract: what a feature declares, what it is asked, what it
answers, and the one context through which it acts (docs/architecture.md).

A feature is a package `pbx_core/features/<name>/` whose `FEATURE` is an instance of a
`Feature` subclass. The composition root hands the registry's literal tuple to the
engine (`features/registry.py`); the engine never imports a feature by name and a
feature never imports `pbx_core.pbx` or another feature: it sees the PBX only through
the `Context` it is given.

The engine asks the features, in the registry's order, at fixed points of a call and
applies the first answer that is not None:

- `dial(ctx, dial)`: a number an extension dials starts with one of the feature's
  `codes`. Typical answers: `Answer(app)` (set a toggle, confirm with a prompt), `Reject`.
- `destination(ctx, call, dest)`: a table names a destination of one of its
  `destination_types`. `Answer(app)`, `Hunt` (a ring group), `Goto` (another
  destination: a time condition), `Reject`.
- `before_ring(ctx, call, ext)`: extension `ext` is about to ring. `Reject(486)`
  (do not disturb: busy), `Forward` (forward all).
- `unanswered(ctx, call, ext, why)`: `ext` was busy, did not answer or is not
  registered. `Forward` (forward on busy / no answer).
- `transfer(ctx, call, extension, number)`: an extension transfers a call (REFER).
  `Reject` refuses it.
- `call_ended(ctx, record)`: a call ended (nothing to answer).
- `registered(ctx, extension)`: a phone of the extension registered anew (nothing
  to answer; voicemail sends it the message-waiting state).
- `message_summary(ctx, extension, resource)`: extension `extension` subscribes
  (RFC 6665) to the message-waiting state of `resource` (a mailbox): `(new, old)`,
  `Reject(403)` (not its box), None (not mine).
- `take_message(ctx, mailbox, meta, store)`: another feature leaves a message in a
  mailbox (`Context.deposit`, a broadcast); asked of the feature owning the
  `voicemail` destination type: room checked, `store()` called, counted; the id or
  None (refused).
- `outgoing(ctx, call, extension)`: extension `extension` places a call (a new
  INVITE from its phone), asked after the emergency routes and before the feature
  codes. `Redirect(number)` (a hotline), `Answer(app)` (a warm line's dial tone),
  `Reject`.

Decisions are frozen dataclasses. The dial plan order (emergency routes, feature codes,
extensions and aliases, feature destinations, outbound routes) is the engine's; a
feature cannot reorder it. No decision is a way around call classes: a `Forward` to an
outside number is routed with the class of the extension that set it, a `Redirect`
with the class of the extension that dials.

A feature may declare tables (`pbx_table`, columns `text`/`integer`/`double`, a
destination's pair of columns `destination`) and
settings (`Setting`) of its own: the checker, compiler, console and docs know them as
the core's; it reads them with `ctx.rows(table)` and `ctx.setting(name)`. State that
must outlive a restart beyond toggles goes in its namespace: `ctx.state_set(key,
value)`. Rules and bounds: docs/architecture.md ("A feature's own tables and settings").
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pbx_core.store.schema import (
    BOOL,
    REQUIRED,
    Spec,
    TableSchema,
    destination,
    double,
    integer,
    pbx_table,
    text,
)
from pbx_core.store.settings import Setting
from pbx_core.tz import Zone, ZoneError, zone

T = TypeVar("T")

__all__ = [
    "BOOL",
    "REQUIRED",
    "Answer",
    "App",
    "Barge",
    "CallInfo",
    "Context",
    "Decision",
    "Destination",
    "Dial",
    "Feature",
    "Forward",
    "Goto",
    "Hunt",
    "Lamp",
    "Originate",
    "Page",
    "Pickup",
    "Record",
    "Recorded",
    "Redirect",
    "Reject",
    "Ringing",
    "Session",
    "Setting",
    "Spec",
    "Step",
    "TableSchema",
    "Talking",
    "Why",
    "Zone",
    "ZoneError",
    "destination",
    "double",
    "integer",
    "pbx_table",
    "text",
    "zone",
]


class Why(enum.Enum):
    """Why an extension did not take a call (the unanswered hook's reason; also the
    `Diversion` reason towards a trunk, RFC 5806)."""

    BUSY = "user-busy"
    NO_ANSWER = "no-answer"
    UNAVAILABLE = "unavailable"
    UNCONDITIONAL = "unconditional"


@dataclass(frozen=True, slots=True)
class Destination:
    """A destination as the tables write it: `type` and `target` (`voicemail`, `101`)."""

    type: str
    target: str | None = None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a feature may know about the call it is asked about."""

    caller: str  # the caller's AOR, or trunk:caller-id for an inbound call
    caller_number: str  # the caller's number as shown (extension or caller ID)
    caller_class: str  # call class of the caller (trunk calls: internal)
    number: str  # the number dialled (or the DID)
    from_extension: bool  # the caller is one of our extensions (not a trunk)
    diverted_by: tuple[str, ...] = ()  # extensions that forwarded the call, in order
    # The IP address an extension's own call came from ("" for a trunk's call and a
    # call routed anew: a transfer, a forward): what a failed PIN bans (DISA).
    source: str = ""
    # The caller withheld its number: a trunk call with `Privacy: id` (RFC 3323) or
    # no usable number in From (empty, `anonymous`); caller_number may still say one.
    anonymous: bool = False


@dataclass(frozen=True, slots=True)
class Dial:
    """A dial string that matched one of a feature's codes: `code` + `arg`."""

    call: CallInfo
    aor: str  # the dialling extension's AOR
    extension: str  # and its number
    code: str
    arg: str


# ------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Reject:
    """End the call attempt with `status` (486 busy, 480, 403, 404 ...)."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Route `number` instead, as if extension `by` had dialled it (its call class
    applies), keeping the original caller ID and recording the diversion."""

    number: str
    by: str  # the forwarding extension's number
    why: Why


@dataclass(frozen=True, slots=True)
class Step:
    """Ring these extensions together for `timeout` seconds (`auto_answer`: their
    phones are asked to answer by themselves and open the speaker: intercom).
    `numbers` ring too, each routed as extension `by` would dial it (its call class;
    an outside number the class forbids is skipped), with `confirm`: an outside
    number's phone must press 1 before the caller is answered (follow-me)."""

    members: tuple[str, ...]
    timeout: float
    auto_answer: bool = False
    numbers: tuple[str, ...] = ()
    # The callee only listens: what it sends is not passed to the caller (one-way
    # intercom, paging).
    one_way: bool = False
    by: str = ""
    confirm: bool = False


@dataclass(frozen=True, slots=True)
class Hunt:
    """Ring the steps one after another (a ring group's strategy); when none answers,
    the `failover` destination, else the caller hears `status`."""

    steps: tuple[Step, ...]
    failover: Destination | None = None
    status: int = 480


class Session(Protocol):
    """A call the PBX answered itself, as an application sees it. Every await ends
    at once when the caller hangs up (`hung_up` tells); the application then has a
    few seconds (the host's APP_GRACE) to finish, e.g. keep a message, before it is
    cancelled."""

    @property
    def hung_up(self) -> bool: ...

    @property
    def call_id(self) -> str:
        """The call's id, as `Context.ringing` and `Pickup` name calls (a parked call
        is picked up by it)."""
        ...

    def music_on_hold(self) -> None:
        """Play the PBX's music on hold to the caller, over and over, until the next
        `play` or `echo` (silence on a build without it)."""
        ...

    async def play(self, *prompts: str, interruptible: bool = False) -> str | None:
        """Play prompts (names from the prompt set) or tones (`tone:confirmation`),
        the feature's recordings (`rec:NAME`), system recordings (`sys:NAME`: the
        office's greetings, pbx_core/sysrec.py; a missing one is a warning and a
        beep) or an extension's recorded name (`name:EXT`: its voicemail name
        greeting); with `interruptible`, a key press stops it and is returned."""
        ...

    def has_recording(self, prompt: str) -> bool:
        """Whether a `rec:`, `sys:` or `name:` prompt has its recording (else `play`
        beeps instead)."""
        ...

    async def keep_system(self, recording: str, name: str) -> str | None:
        """Keep the feature's recording `recording` as the system recording `name`
        (checked, converted, written whole, replacing one of that name, within the
        store's bounds); None when kept, else why not. The feature's own recording
        stays (delete it)."""
        ...

    async def collect(
        self,
        max_digits: int,
        first_timeout: float = 5.0,
        inter_timeout: float = 3.0,
        terminator: str = "#",
    ) -> str:
        """Digits the caller presses, until `max_digits`, the terminator or a timeout;
        "" when the caller hung up meanwhile (a cut-short entry counts for nothing)."""
        ...

    def echo(self) -> None:
        """Send back what the caller sends (the echo test)."""
        ...

    async def wait(self, seconds: float) -> None:
        """Wait (the caller still hears what was started), or until hang-up."""
        ...

    def hangup(self) -> None:
        """End the call (BYE)."""
        ...

    async def bridge(self, number: str, call_class: str | None = None) -> int:
        """Ring `number` (the dial plan, with the caller's call class when the caller
        is an extension, else our own numbers only; with `call_class`, that class and
        no feature codes: an application that grants its own, such as DISA after
        its PIN) while the caller hears ringback,
        and join the caller to whoever answers: 200, after which the application has
        nothing more to do (the call goes on without it); else the final status
        (486 busy, 480/408 no answer, 403 not allowed, 404 no such number, 487 the
        caller hung up), and the caller is the application's again."""
        ...

    async def transfer(self, number: str) -> None:
        """`bridge`, and hang up when nobody answered."""
        ...

    async def goto(self, destination: Destination) -> int:
        """Send the call to `destination` as a table names one (an extension, a ring
        group, a time condition, a voicemail box, a feature's type...), as `bridge`
        does a number: the caller hears ringback while it rings; 200 when it was
        answered or an application (voicemail) took the call, after which the
        application has nothing more to do; else the final status and the caller is
        the application's again. An auto attendant's keys, a DID's welcome."""
        ...

    async def consult(self, number: str) -> int:
        """In an in-call application only (`*2`): ring `number` (the extension's call
        class) while the other party stays on hold; the extension hears ringback, then
        whoever answers. Returns when it is over: 200 the extension hung up (the other
        party is joined to the consulted one, still ringing or not) or the other party
        hung up (the consultation goes on as a normal call): nothing left to do; 487 the
        extension pressed `*` or the consulted party hung up; another status: it did
        not answer, was busy or refused (403: the call class). Unless 200, the
        application may announce it; when it returns, the extension is back with the
        other party. 404 outside an in-call application."""
        ...

    def join_room(
        self,
        room: str,
        *,
        max_members: int = 50,
        muted: bool = False,
        music_when_alone: bool = True,
        tone: bool = True,
        with_other: bool = False,
    ) -> int:
        """Put the caller in this feature's mix room `room` (a name, at most 64
        characters; made at the first join, gone when the last member leaves): each
        member hears everyone but itself, levels evened out (pbx/rooms.py). `tone`:
        the room hears a rising beep at a join, a falling one at a leave;
        `music_when_alone`: a member alone hears music on hold. The caller stays in
        it while the application waits (`collect` still hears its keys) until
        `leave_room`, its hang-up or the application's end. 200 joined; 503 the room
        holds `max_members` (2..64) or too many rooms are open; 488 a codec the room
        cannot mix (G.711 only); 491 already in a room; 400 a bad name or size; 487
        hung up. `with_other` (an in-call application only, else 404): the call's
        other party joins too (its music on hold stops) and leaves with the caller,
        back to their two-party call (an ad hoc conference)."""
        ...

    def leave_room(self) -> None:
        """Leave the mix room (nothing when in none)."""
        ...

    def mute(self, on: bool = True) -> bool:
        """In a mix room: nobody hears the caller (or hears it again); False when in
        no room."""
        ...

    async def record(
        self,
        name: str,
        max_seconds: float = 180.0,
        silence_seconds: float | None = 5.0,
        terminators: str = "#",
    ) -> Recorded:
        """Record what the caller says into the feature's recording `name` (letters,
        digits, `.`, `_`, `-`; at most 64), a WAV on /data that appears only whole.
        It ends at `max_seconds`, after `silence_seconds` of silence following speech
        (the silence is cut off), at a key in `terminators`, or when the caller hangs
        up (what was said is kept). `play("rec:NAME")` plays it back."""
        ...

    def delete_recording(self, name: str) -> bool:
        """Remove the feature's recording `name`; False when there was none."""
        ...


@dataclass(frozen=True, slots=True)
class Recorded:
    """How `Session.record` ended: the recording's `name`, its length in seconds, and
    why (`"max"`, `"silence"`, `"key"` with the `digit`, `"hangup"`, `"error"`: the
    disk failed or the name was refused, nothing kept)."""

    name: str
    seconds: float
    reason: str
    digit: str | None = None


App = Callable[[Session], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Answer:
    """The PBX answers the call itself and runs `app` on it; `name` names the
    application in `pbx status`, the log and the CDR's cause. `feature` is filled in
    by the core (the feature that answered: its recordings are the app's)."""

    app: App
    name: str
    feature: str = ""
    # Prompts for the extension that sent the call here by an in-call blind transfer
    # (`##`), played on its leg before it is released (call park's slot). A REFER's
    # transferor only gets the NOTIFY (its phone holds the call: it would not play).
    announce: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pickup:
    """Answer the ringing call `call_id` (from `Context.ringing`) with the phone that
    dialled: the caller talks to it, the ringing stops."""

    call_id: str


@dataclass(frozen=True, slots=True)
class Page:
    """Page these extensions: the PBX answers the caller and calls every member's
    phones at once with auto-answer; each phone that answers hears the caller (after
    a short tone); `duplex`: the caller hears them too. Members in a call are skipped."""

    members: tuple[str, ...]
    duplex: bool = False
    # Also (or only, without members) as plain RTP to a multicast group (address,
    # port) with this TTL (1..32) and codec (PCMU or PCMA) for phones that listen to
    # it: the caller's audio after a short tone.
    multicast: tuple[str, int] | None = None
    multicast_ttl: int = 1
    multicast_codec: str = "PCMU"


@dataclass(frozen=True, slots=True)
class Barge:
    """The dialling phone joins the answered call `call_id` (from `Context.talking`):
    `listen` (it hears both, nobody hears it), `whisper` (it hears both, only
    `extension` hears it) or `barge` (everyone hears everyone)."""

    call_id: str
    mode: str
    extension: str


@dataclass(frozen=True, slots=True)
class Talking:
    """One of our extensions in an answered call now (`Context.talking`)."""

    call_id: str
    extension: str
    other_number: str  # who it talks to, as shown
    since: float


@dataclass(frozen=True, slots=True)
class Lamp:
    """A busy lamp a feature lights (`Feature.lamp`): a park slot. `busy`: lit
    (a `dialog` subscription sees `confirmed`), else `terminated`."""

    busy: bool
    other_number: str = ""  # who is there (a parked caller), as shown


@dataclass(frozen=True, slots=True)
class Ringing:
    """A call ringing one of our extensions now (`Context.ringing`)."""

    call_id: str
    extension: str  # the extension it rings
    caller_number: str
    since: float  # when the call came in (`Context.now()`'s clock)


@dataclass(frozen=True, slots=True)
class Goto:
    """Route the call to `destination` instead, as if the table had named it there (a
    time condition choosing its day or night destination). The core follows at most
    MAX_GOTOS (routing.py) in a row: a loop of gotos fails the call with 480."""

    destination: Destination


@dataclass(frozen=True, slots=True)
class Redirect:
    """Route `number` instead, as the dialling extension would dial it: the whole dial
    plan again (emergency routes, feature codes, our numbers, outbound routes with its
    call class), as if its phone had sent `number` (a speed dial, a hotline). Only for
    a call an extension places (`dial`, `outgoing`); at most the router's
    MAX_REDIRECTS per call (a speed dial naming itself is a loop: 482)."""

    number: str


@dataclass(frozen=True, slots=True)
class Record:
    """An in-call code's answer (`in_call` only): record the call, or stop if it is
    being recorded. The extension stays in the call: both parties go into one file
    under `recordings/calls/` beside the state LMDB, named in the call's CDR. Before
    a recording starts, and every 30 s while one runs, the oldest recordings are
    removed to keep them within `quota_minutes` (pbx/call_record.py). `beep_both`:
    both parties hear the start and stop beeps, else only the extension that
    pressed."""

    quota_minutes: int
    beep_both: bool = True


@dataclass(frozen=True, slots=True)
class Originate:
    """A call the PBX places to extension `extension` (`Context.originate`): its
    registered phones ring (`ring_timeout` seconds, bounded 1-300; `auto_answer`:
    the intercom headers, Call-Info answer-after=0 and Alert-Info), showing
    `caller_id`/`caller_name`. When one answers, either `app` runs on that call (a
    Session, as for `Answer`; the extension is its caller, so its `bridge` has the
    extension's call class) or the call is bridged to `number` (the phone hears
    ringback) with `call_class` (None: the extension's own class, feature codes
    excluded either way when a class is given). Exactly one of `app` and `number`.
    `on_done(status)` is called once: 200 when the phone answered (an app) or the
    bridge was answered; else 486 busy, 480/408 not answered, 487 ended, 488, or the
    bridge's status. `name` names the call in `pbx status` and the CDR's callee.
    The extension's own features (DND, forwards) are not asked: the originator
    decides whom it rings."""

    extension: str
    name: str
    app: App | None = None
    number: str = ""
    call_class: str | None = None
    caller_id: str = ""
    caller_name: str = ""
    auto_answer: bool = False
    ring_timeout: float = 30.0
    on_done: Callable[[int], None] | None = None


Decision = Reject | Forward | Hunt | Answer | Pickup | Goto | Redirect | Record | Barge | Page


# ------------------------------------------------------------------ the context


class Context(Protocol):
    """What a feature may use. Implemented by the core (pbx/features.py)."""

    def now(self) -> float: ...

    def wall_time(self) -> float:
        """Unix time (UTC seconds since 1970) now: the clock of dates and time zones
        (`now()` is the event loop's monotonic clock, for durations)."""
        ...

    def setting(self, name: str) -> Any:
        """A setting's typed value (its default when the table leaves it out)."""
        ...

    def extension(self, number: str) -> Mapping[str, Any] | None:
        """An extension's configured row as a read-only mapping (None: no such)."""
        ...

    def extensions(self) -> tuple[str, ...]:
        """Every extension's number (the PBX's domain), sorted; at most 4096 (the
        dial-by-name directory reads each one's `extension` row)."""
        ...

    def group(self, number: str) -> Mapping[str, Any] | None:
        """A ring group's row (members as a tuple of numbers), None: no such."""
        ...

    def registered(self, number: str) -> bool:
        """Whether extension `number` has a live registration."""
        ...

    def in_call(self, number: str) -> bool:
        """Whether extension `number` is ringing or talking in a call now."""
        ...

    def may_dial(self, number: str, by: str) -> bool:
        """Whether extension `by` may call `number` (its call class against the
        route; emergency always; our own extensions always)."""
        ...

    def toggle(self, extension: str, name: str) -> Any:
        """A per-extension toggle this feature keeps (None when never set)."""
        ...

    def set_toggle(self, extension: str, name: str, value: Any) -> None:
        """Keep a toggle: in force at once, written to flash off the event loop,
        back after a restart."""
        ...

    def rows(self, table: str) -> tuple[Mapping[str, Any], ...]:
        """The rows of one of this feature's own `tables` in the configuration in
        force (every column, defaults filled in), read-only; a reload is seen at
        once. ValueError for a table the feature did not declare."""
        ...

    def state_get(self, key: str) -> Any:
        """A value this feature kept in its state namespace (None: never set)."""
        ...

    def state_set(self, key: str, value: Any) -> None:
        """Keep a value (msgpack-able: None, bool, int, float, str, bytes, lists and
        dicts of them; None deletes) under `key` in this feature's own namespace: in
        force at once, written to flash off the event loop, back after a restart;
        it reads back as msgpack returns it (a tuple as a list). Bounded (the host's
        MAX_STATE_*: a key 128 UTF-8 bytes, a value 4096 msgpack bytes, 1000 keys):
        ValueError, keeping nothing, when too big or too many."""
        ...

    def state_keys(self, prefix: str = "") -> tuple[str, ...]:
        """The keys this feature keeps that start with `prefix`, sorted."""
        ...

    def memory(self, make: Callable[[], T]) -> T:
        """This feature's RAM-only object for this PBX (camp-on requests, running
        broadcasts, queue callers): made by `make()` at the first call, the same object
        afterwards (`make` is not called again), never written to flash, gone at a
        restart. Each PBX in a process has its own (tests run several)."""
        ...

    def talking(self) -> tuple[Talking, ...]:
        """Our extensions in answered calls whose media passes through the PBX (one
        entry per extension and call)."""
        ...

    def ringing(self) -> tuple[Ringing, ...]:
        """The calls ringing our extensions now, oldest first (one entry per
        extension rung: a ring group's call appears once per member)."""
        ...

    def failed_auth(self, key: str) -> bool:
        """Count a failed authentication (a wrong PIN) against `key`, as a failed
        digest login counts against its source: the security policy's
        sec_ban_failures within sec_ban_window ban the key for sec_ban_seconds.
        `key` is the caller's source address (an extension's call: its SIP is then
        dropped as after failed logins) or a name no address can be (`cid:...`:
        only `banned` sees it). A trusted address (a trunk's, sec_trusted) is never
        banned. True when this failure banned the key."""
        ...

    def banned(self, key: str) -> bool:
        """Whether `key` is banned now (failed_auth)."""
        ...

    def speed_dial(self, extension: str, code: str) -> str | None:
        """The number of speed dial `code` in the core's `pbx_speed_dial` table:
        `extension`'s own row, else the row for everyone; None when neither."""
        ...

    def messages(self, mailbox: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        """The voicemail index of `mailbox` (the state LMDB's `voicemail` database):
        (message id, metadata) pairs in id order. ValueError for a bad mailbox name
        (1-64 letters, digits, `.`, `_`, `-`)."""
        ...

    def set_message(self, mailbox: str, msg_id: str, meta: Mapping[str, Any] | None) -> None:
        """Keep a message's metadata (msgpack-able, at most 4096 bytes; None deletes
        it) in `mailbox`'s index: in force at once, written to flash off the event
        loop, back after a restart. ValueError (nothing kept) for a bad name, too
        big a value, or more than the host's MAX_MESSAGES (10000) in one box."""
        ...

    def notify_mwi(self, extension: str, new: int, old: int) -> int:
        """Message waiting (RFC 3842): the core sends a `message-summary` NOTIFY
        with these counts to each subscription (RFC 6665) to `extension` (a mailbox
        or an extension number), and an unsolicited one (fire and forget) to each
        registered contact of `extension` that holds no such subscription; how
        many were sent."""
        ...

    def lamp_changed(self, resource: str) -> None:
        """A lamp this feature lights (`Feature.lamp`) changed: the core tells its
        `dialog` subscribers (pbx/presence.py; bursts coalesced)."""
        ...

    def originate(self, call: Originate) -> int:
        """Place `call` (see `Originate`): 100 when its phones ring (`on_done`
        follows, once; also when it failed at once), else at once and without
        `on_done`: 404 no such extension, 480 disabled or not registered, 400 not
        exactly one of app and number, 503 too many calls placed by the PBX
        (pbx/call_originate.py's MAX_ORIGINATED), 500 no media."""
        ...

    def cdr_note(self, call_id: str, note: str) -> bool:
        """Add `note` (short text, `key=value` pairs: at most 128 characters kept, 8
        notes per call) to the CDR of the call `call_id` (`Session.call_id`), in its
        `notes` field; False when that call has ended (or is unknown) or has its 8."""
        ...

    def deposit(self, mailbox: str, recording: str, meta: Mapping[str, Any]) -> str | None:
        """Leave this feature's recording `recording` (Session.record's name) in
        `mailbox` as a new voicemail message: its audio linked (no copy on the card)
        to where the voicemail feature keeps a message's (`BOX-ID`), `meta` kept as
        `set_message` keeps it (add `folder: new`). The feature that keeps the
        mailboxes is asked first (`Feature.take_message`: a full box or a full card
        refuses it, and the message counts against the card's quota). The new
        message's id, None when the recording is missing or the box refused it."""
        ...

    def delete_recording(self, name: str) -> bool:
        """Remove this feature's recording `name` (Session.record's name); False when
        there was none. A message `deposit` linked from it keeps its audio."""
        ...


# ------------------------------------------------------------------ the feature


@dataclass(frozen=True)
class Feature:
    """Base of every feature: declarations, and hooks that answer None (not mine).

    `codes` maps a dial prefix (`*72`) to a short description; a dialled number
    matches the longest code it starts with (FreePBX's codes take their argument
    after the code: `*72` + number). `toggles` names the per-extension state the
    feature keeps, with the extension column (if any) that gives its initial value.
    """

    name: str
    codes: Mapping[str, str] = field(default_factory=dict)
    destination_types: tuple[str, ...] = ()
    toggles: Mapping[str, str | None] = field(default_factory=dict)

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        return None

    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        return None

    def before_ring(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        return None

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        return None

    def transfer(
        self, ctx: Context, call: CallInfo, extension: str, number: str
    ) -> Decision | None:
        """Extension `extension` transfers the other party of `call` (its number,
        caller, class) to `number` (a REFER; attended transfers name the number the
        phone put in the Refer-To). `Reject` refuses it: the REFER gets the status
        and the call goes on as it was. None lets the core transfer it."""
        return None

    def in_call(self, ctx: Context, call: CallInfo, extension: str, code: str) -> Decision | None:
        """Extension `extension` pressed one of the feature's `call_codes` during an
        answered call. `Answer(app)`: the extension steps aside (the other party
        hears music on hold) and the app talks to it; in that app `transfer(number)`
        sends the other party to `number` (blind; the extension is released), and
        returning or `hangup()` brings the extension back into the call. `Record`:
        the call is recorded (or stops being recorded); the extension stays in it."""
        return None

    def call_ended(self, ctx: Context, record: Mapping[str, Any]) -> None:
        return None

    def registered(self, ctx: Context, extension: str) -> None:
        """A phone of `extension` registered anew (a binding the registrar did not
        have: a phone that booted, or the PBX restarted): e.g. tell it its message
        waiting state. Nothing to answer."""
        return

    def message_summary(
        self, ctx: Context, extension: str, resource: str
    ) -> tuple[int, int] | Reject | None:
        """Extension `extension` subscribes to the message-waiting state of
        `resource` (the SUBSCRIBE's Request-URI user): its (new, old) counts,
        `Reject` (403: another's mailbox) or None (not mine: 404 if no feature
        knows it). Asked again on every refresh and after a reload."""
        return None

    def take_message(
        self, ctx: Context, mailbox: str, meta: Mapping[str, Any], store: Callable[[], str | None]
    ) -> str | None:
        """Another feature leaves a message in `mailbox` (`Context.deposit`); asked
        of the feature that owns the destination type `voicemail`. It checks there
        is room (the box, the card's quota), calls `store()` (which links the audio
        and indexes `meta`: the new id, or None), counts what it stored, tells the
        phones (MWI) and returns the id; None refuses it. The default refuses."""
        return None

    def lamp(self, ctx: Context, resource: str) -> Lamp | None:
        """The busy lamp of `resource` (a SUBSCRIBE's Request-URI user that is no
        extension) for a `dialog` subscription (RFC 4235): a `Lamp`, or None when
        not this feature's (404 if no feature lights it). Asked on each change
        (`Context.lamp_changed`) and subscribe; cheap, no I/O."""
        return None

    def check_toggle(self, ctx: Context, extension: str, name: str, value: Any) -> str | None:
        """Whether `value` may be given to toggle `name` from outside a call (the
        console, over the control socket): None, else why not, in a few words.
        The default takes nothing: a feature that keeps toggles says what fits."""
        return "this toggle is not set from the console"

    def status(self, ctx: Context) -> dict[str, Any]:
        return {}

    def outgoing(self, ctx: Context, call: CallInfo, extension: str) -> Decision | None:
        """Extension `extension` places a call to `call.number` (a new INVITE from its
        phone; not a transfer or an application's bridge). Asked after the emergency
        routes and before the feature codes: `Redirect` (a hotline), `Answer` (a warm
        line), `Reject`; None lets the dial plan go on."""
        return None

    # The feature's own tables (each named pbx_<something>, strict) and settings
    # (pbx_settings rows): `pbx db check`, `pbx db compile`, the console and the
    # generated docs know them as the core's own; `ctx.rows(table)` reads them.
    tables: tuple[TableSchema, ...] = ()
    settings: tuple[Setting, ...] = ()
    # In-call codes (`##` …): keys an extension presses during an answered call ->
    # a short description; the `in_call` hook is asked when one is pressed.
    call_codes: Mapping[str, str] = field(default_factory=dict)
    # Exact numbers (`70`, `71` … of call park): dialled as they are, they reach the
    # feature's `dial` hook (with an empty `arg`) after extensions, aliases and the
    # tables' numbers (step 4 of the dial plan), so they never shadow an extension.
    numbers: Mapping[str, str] = field(default_factory=dict)
