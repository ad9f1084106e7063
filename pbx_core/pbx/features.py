"""The core side of the feature platform (features/api.py): the features the
composition root handed in, asked in order; the `Context` they act through; toggles
kept in RAM and written to the state LMDB by one thread off the event loop; the
applications (`Answer`) run as tasks this host owns and cancels when their call ends.

The engine calls `dial`, `destination`, `before_ring` and `unanswered`; each returns the
first decision a feature gives, or None.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgpack

from pbx_core.features.api import (
    Answer,
    App,
    CallInfo,
    Decision,
    Destination,
    Dial,
    Feature,
    Lamp,
    Originate,
    Reject,
    Ringing,
    Talking,
    Why,
)
from pbx_core.pbx.mailboxes import Mailboxes
from pbx_core.pbx.rooms import Rooms
from pbx_core.pbx.security import Action, SecurityPolicy
from pbx_core.pbx.session import MAX_CODE_ARG, RECORDING_NAME, Bridge, Consult, LocalSession
from pbx_core.store.errors import StoreError

if TYPE_CHECKING:
    from pbx_core.media.audio import Audio
    from pbx_core.media.leg import MediaLeg
    from pbx_core.store.state import StateStore

T = TypeVar("T")
log = logging.getLogger("pbx.features")

MAX_TOGGLE_TEXT = 64  # a toggle's text value (a forward target)
APP_GRACE = 5.0  # seconds an application may run on after its caller hung up
# A feature's own state namespace (ctx.state_set): a key's UTF-8 bytes, a value's
# msgpack bytes, keys per feature. It is kept in RAM and in the state LMDB.
MAX_STATE_KEY = 128
MAX_STATE_VALUE = 4096
MAX_STATE_KEYS = 1000
# Where a mailbox message's audio is (`Context.deposit`): the voicemail feature's
# recordings, `BOX-ID.wav`, which it plays as `rec:BOX-ID`.
MAILBOX_AUDIO = "voicemail"
_UNREAD = object()  # a toggle not yet read from the state LMDB


class FeatureError(ValueError):
    """Two features claim the same code or destination type: a build error."""


class Facts:
    """What the host needs from the engine, as plain callables (no engine import)."""

    def __init__(
        self,
        *,
        now: Callable[[], float],
        setting: Callable[[str], Any],
        extension: Callable[[str], Mapping[str, Any] | None],
        group: Callable[[str], Mapping[str, Any] | None],
        registered: Callable[[str], bool],
        in_call: Callable[[str], bool],
        may_dial: Callable[[str, str], bool],
        domain: Callable[[], str],
        rows: Callable[[str], tuple[Mapping[str, Any], ...]] = lambda _table: (),
        ringing: Callable[[], tuple[Ringing, ...]] = tuple,
        talking: Callable[[], tuple[Talking, ...]] = tuple,
        wall: Callable[[], float] = time.time,
        failed_auth: Callable[[str], bool] | None = None,
        banned: Callable[[str], bool] | None = None,
        speed_dial: Callable[[str, str], str | None] = lambda _ext, _code: None,
        notify_mwi: Callable[[str, int, int], int] = lambda _ext, _new, _old: 0,
        originate: Callable[[Originate, str], int] = lambda _call, _feature: 500,
        extensions: Callable[[], tuple[str, ...]] = tuple,
        cdr_note: Callable[[str, str], bool] = lambda _call_id, _note: False,
        lamp_changed: Callable[[str], None] = lambda _resource: None,
    ) -> None:
        self.now = now
        self.wall = wall  # Unix time (tests move it with their clock)
        self.setting = setting
        self.extension = extension
        self.group = group
        self.registered = registered
        self.in_call = in_call
        self.may_dial = may_dial
        self.domain = domain
        self.rows = rows  # a feature table's rows in the configuration in force
        self.ringing = ringing  # the calls ringing extensions now (pickup)
        self.talking = talking  # extensions in answered calls now (barge)
        self.speed_dial = speed_dial  # pbx_speed_dial: (extension, code) -> number
        self.notify_mwi = notify_mwi  # message-summary NOTIFYs to a registered extension
        self.originate = originate  # a call the PBX places (pbx/call_originate.py)
        self.extensions = extensions  # every extension's number (the directory)
        self.cdr_note = cdr_note  # a note in a call's CDR (engine.py bounds it)
        self.lamp_changed = lamp_changed  # a feature's busy lamp changed (presence.py)
        # Failed authentications counted by the security policy (engine.py); without
        # an engine (tests of the host alone) a policy of the host's own, in RAM.
        if failed_auth is None or banned is None:
            failed_auth, banned = _own_policy(now)
        self.failed_auth = failed_auth
        self.banned = banned


def _own_policy(now: Callable[[], float]) -> tuple[Callable[[str], bool], Callable[[str], bool]]:
    policy = SecurityPolicy()

    def failed(key: str) -> bool:
        return policy.auth_failed(key, now()).action is not Action.ALLOW

    return failed, lambda key: policy.banned(key, now())


class HostContext:
    """The `Context` one feature sees: the engine's facts plus its own toggles."""

    def __init__(self, host: FeatureHost, feature: Feature) -> None:
        self._host = host
        self._feature = feature
        self._memory: object | None = None  # `memory`: the feature's RAM-only object
        facts = host.facts
        self.now = facts.now
        self.setting = facts.setting
        self.extension = facts.extension
        self.group = facts.group
        self.registered = facts.registered
        self.in_call = facts.in_call
        self.may_dial = facts.may_dial
        self.ringing = facts.ringing
        self.talking = facts.talking
        self.speed_dial = facts.speed_dial
        self.notify_mwi = facts.notify_mwi
        self.extensions = facts.extensions
        self.lamp_changed = facts.lamp_changed

    def toggle(self, extension: str, name: str) -> Any:
        return self._host.toggle(self._feature, extension, name)

    def set_toggle(self, extension: str, name: str, value: Any) -> None:
        self._host.set_toggle(self._feature, extension, name, value)

    def wall_time(self) -> float:
        return self._host.facts.wall()

    def rows(self, table: str) -> tuple[Mapping[str, Any], ...]:
        if all(t.name != table for t in self._feature.tables):
            mine = ", ".join(t.name for t in self._feature.tables) or "none"
            raise ValueError(
                f"feature {self._feature.name} declares no table {table!r} (its: {mine})"
            )
        return self._host.facts.rows(table)

    def state_get(self, key: str) -> Any:
        return self._host.state_get(self._feature, key)

    def state_set(self, key: str, value: Any) -> None:
        self._host.state_set(self._feature, key, value)

    def state_keys(self, prefix: str = "") -> tuple[str, ...]:
        return self._host.state_keys(self._feature, prefix)

    def memory(self, make: Callable[[], T]) -> T:
        if self._memory is None:
            self._memory = make()
        return cast(T, self._memory)

    def failed_auth(self, key: str) -> bool:
        return self._host.facts.failed_auth(key)

    def banned(self, key: str) -> bool:
        return self._host.facts.banned(key)

    def messages(self, mailbox: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        return self._host.messages(mailbox)

    def set_message(self, mailbox: str, msg_id: str, meta: Mapping[str, Any] | None) -> None:
        self._host.set_message(mailbox, msg_id, meta)

    def originate(self, call: Originate) -> int:
        return self._host.facts.originate(call, self._feature.name)

    def deposit(self, mailbox: str, recording: str, meta: Mapping[str, Any]) -> str | None:
        return self._host.deposit(self._feature, mailbox, recording, meta)

    def delete_recording(self, name: str) -> bool:
        return self._host.delete_recording(self._feature, name)

    def cdr_note(self, call_id: str, note: str) -> bool:
        return self._host.facts.cdr_note(call_id, str(note))


class FeatureHost:
    def __init__(
        self,
        features: Sequence[Feature],
        facts: Facts,
        state: StateStore | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        recordings: Path | None = None,
    ) -> None:
        self.features = tuple(features)
        self.facts = facts
        # Where applications' recordings go (a directory per feature), None: nowhere.
        self.recordings = recordings
        self.music: Audio | None = None  # the PBX's music on hold (the engine sets it)
        self.state = state
        self.loop = loop  # the engine's: applications are its tasks
        self._contexts = {f.name: HostContext(self, f) for f in self.features}
        self._codes: list[tuple[str, Feature]] = []
        self._call_codes: list[tuple[str, Feature]] = []
        self._numbers: dict[str, Feature] = {}
        self._dest_types: dict[str, Feature] = {}
        names: set[str] = set()
        toggle_names: set[str] = set()
        for f in self.features:
            if f.name in names:
                raise FeatureError(f"two features are named {f.name!r}")
            names.add(f.name)
            for code in f.codes:
                if any(code == c for c, _ in self._codes):
                    raise FeatureError(f"feature code {code} claimed twice ({f.name})")
                self._codes.append((code, f))
            for number in f.numbers:
                if not number or len(number) > MAX_CODE_ARG:
                    raise FeatureError(f"number {number!r} of {f.name}: 1-{MAX_CODE_ARG} keys")
                if number in self._numbers:
                    raise FeatureError(f"number {number} claimed twice ({f.name})")
                self._numbers[number] = f
            for code in f.call_codes:
                if not code or len(code) > 4 or any(c not in "0123456789*#" for c in code):
                    raise FeatureError(f"in-call code {code!r} of {f.name}: 1-4 keys")
                if any(code == c for c, _ in self._call_codes):
                    raise FeatureError(f"in-call code {code} claimed twice ({f.name})")
                self._call_codes.append((code, f))
            for t in f.destination_types:
                if t in self._dest_types:
                    raise FeatureError(f"destination type {t} claimed twice ({f.name})")
                self._dest_types[t] = f
            for name in f.toggles:  # the state LMDB keys a toggle by extension and name
                if name in toggle_names:
                    raise FeatureError(f"toggle {name} claimed twice ({f.name})")
                toggle_names.add(name)
        self._codes.sort(key=lambda cf: -len(cf[0]))  # longest code first
        self._call_codes.sort(key=lambda cf: -len(cf[0]))
        self.call_codes = tuple(c for c, _ in self._call_codes)
        self._toggles: dict[tuple[str, str, str], Any] = {}
        self.toggled: Callable[[str], None] = lambda _ext: None  # a toggle was set (lamps)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._write_lock = threading.Lock()
        self._pending: dict[tuple[str, str], Any] = {}
        self._state: dict[str, dict[str, Any]] = {}  # feature -> its namespace, read once
        self._pending_state: dict[tuple[str, str], Any] = {}
        self.mail = Mailboxes(state, self._queue_mail)  # the voicemail index
        self._pending_mail: dict[tuple[str, str], Any] = {}
        self._apps: dict[str, asyncio.Task[None]] = {}
        self._sessions: dict[str, LocalSession] = {}
        self.rooms = Rooms()  # the applications' mix rooms (Session.join_room)
        # The daemon's task group owns the applications (app.py sets it); without one
        # (in-process tests) the running loop does, and close() cancels what is left.
        self.tasks: asyncio.TaskGroup | None = None

    # ------------------------------------------------------------------ declarations
    @property
    def codes(self) -> list[str]:
        return [c for c, _ in self._codes]

    @property
    def destination_types(self) -> list[str]:
        return sorted(self._dest_types)

    def context(self, feature: Feature) -> HostContext:
        return self._contexts[feature.name]

    def is_code(self, number: str) -> bool:
        return any(number.startswith(code) for code, _ in self._codes)

    # ------------------------------------------------------------------ hooks
    def dial(self, call: CallInfo, aor: str, extension: str) -> Decision | None:
        """A number an extension dialled: the feature whose code it starts with
        (longest first) decides; None when no code matches."""
        number = call.number
        found = next(((c, f) for c, f in self._codes if number.startswith(c)), None)
        if found is None:
            return None
        code, feature = found
        arg = number[len(code) :]
        if len(arg) > MAX_CODE_ARG:
            return Reject(484, "too many digits after the feature code")
        dial = Dial(call, aor, extension, code, arg)
        return self._ask(feature, "dial", lambda f, ctx: f.dial(ctx, dial))

    def number(self, call: CallInfo, aor: str, extension: str) -> Decision | None:
        """A number an extension dialled that is one of a feature's exact `numbers`
        (asked after extensions and the tables' numbers): its feature decides."""
        feature = self._numbers.get(call.number)
        if feature is None:
            return None
        dial = Dial(call, aor, extension, call.number, "")
        return self._ask(feature, "dial", lambda f, ctx: f.dial(ctx, dial))

    def destination(self, call: CallInfo, dest: Destination) -> Decision | None:
        feature = self._dest_types.get(dest.type)
        if feature is None:
            return None
        return self._ask(feature, "destination", lambda f, ctx: f.destination(ctx, call, dest))

    def before_ring(self, call: CallInfo, extension: str) -> Decision | None:
        return self._first("before_ring", lambda f, ctx: f.before_ring(ctx, call, extension))

    def unanswered(self, call: CallInfo, extension: str, why: Why) -> Decision | None:
        return self._first("unanswered", lambda f, ctx: f.unanswered(ctx, call, extension, why))

    def registered(self, extension: str) -> None:
        """A phone of `extension` registered anew: every feature hears it."""
        for f in self.features:
            try:
                f.registered(self._contexts[f.name], extension)
            except Exception as exc:  # noqa: BLE001  # one feature's bug ends no other
                self._failed(f, "registered", exc)

    def message_summary(self, extension: str, resource: str) -> tuple[int, int] | Reject | None:
        """A SUBSCRIBE to `resource`'s message-waiting state: the first answer."""
        for f in self.features:
            try:
                got = f.message_summary(self._contexts[f.name], extension, resource)
            except Exception as exc:  # noqa: BLE001  # one feature's bug ends no other
                self._failed(f, "message_summary", exc)
                continue
            if got is not None:
                return got
        return None

    def lamp(self, resource: str) -> Lamp | None:
        """The busy lamp a feature lights for `resource` (a park slot): the first."""
        for f in self.features:
            try:
                got = f.lamp(self._contexts[f.name], resource)
            except Exception as exc:  # noqa: BLE001  # one feature's bug ends no other
                self._failed(f, "lamp", exc)
                continue
            if got is not None:
                return got
        return None

    def toggle_of(self, extension: str, name: str) -> Any:
        """Toggle `name` of `extension` whichever feature keeps it (None: none does)."""
        owner = next((f for f in self.features if name in f.toggles), None)
        return None if owner is None else self.toggle(owner, extension, name)

    def transfer(self, call: CallInfo, extension: str, number: str) -> Decision | None:
        return self._first("transfer", lambda f, ctx: f.transfer(ctx, call, extension, number))

    def in_call(self, call: CallInfo, extension: str, code: str) -> Decision | None:
        """An in-call code pressed: its owner decides."""
        found = next((f for c, f in self._call_codes if c == code), None)
        if found is None:
            return None
        return self._ask(found, "in_call", lambda f, ctx: f.in_call(ctx, call, extension, code))

    def outgoing(self, call: CallInfo, extension: str) -> Decision | None:
        return self._first("outgoing", lambda f, ctx: f.outgoing(ctx, call, extension))

    def call_ended(self, call_id: str, record: Mapping[str, Any]) -> None:
        task = self._apps.get(call_id)
        session = self._sessions.get(call_id)
        if session is not None:
            session.ended()
        if task is not None and not task.done():
            # Its awaits return at once now (hung_up): it may finish what the call
            # left (a message recorded before the hang-up); one that does not is
            # cancelled after APP_GRACE seconds.
            loop = self.loop or asyncio.get_running_loop()
            loop.call_later(APP_GRACE, task.cancel)
        for f in self.features:
            try:
                f.call_ended(self._contexts[f.name], record)
            except Exception as exc:  # noqa: BLE001  # one feature's bug ends no other
                self._failed(f, "call_ended", exc)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.features:
            try:
                got = f.status(self._contexts[f.name])
            except Exception as exc:  # noqa: BLE001  # status must always answer
                self._failed(f, "status", exc)
                got = {"error": type(exc).__name__}
            if got:
                out[f.name] = got
        return out

    def _first(
        self, hook: str, ask: Callable[[Feature, HostContext], Decision | None]
    ) -> Decision | None:
        for f in self.features:
            decision = self._ask(f, hook, ask)
            if decision is not None:
                return decision
        return None

    def _ask(
        self, f: Feature, hook: str, ask: Callable[[Feature, HostContext], Decision | None]
    ) -> Decision | None:
        try:
            decision = ask(f, self._contexts[f.name])
        except Exception as exc:  # noqa: BLE001  # a feature's bug: as if it said nothing
            self._failed(f, hook, exc)
            return None
        if isinstance(decision, Answer) and decision.feature != f.name:
            decision = dataclasses.replace(decision, feature=f.name)
        return decision

    @staticmethod
    def _failed(f: Feature, hook: str, exc: BaseException) -> None:
        log.warning("feature %s: %s failed: %s: %s", f.name, hook, type(exc).__name__, exc)
        log.debug("feature %s: %s failed", f.name, hook, exc_info=exc)

    # ------------------------------------------------------------------ toggles
    def _aor(self, extension: str) -> str:
        return f"{extension}@{self.facts.domain()}"

    def toggle(self, feature: Feature, extension: str, name: str) -> Any:
        """A toggle's value: set from a phone or the console (RAM, then the state
        LMDB), else the extension column that gives its initial value in the
        configuration in force (a reload that changes the column applies), else None."""
        key = (feature.name, extension, name)
        saved = self._toggles.get(key, _UNREAD)
        if saved is _UNREAD:
            saved = None
            if self.state is not None:
                try:
                    saved = self.state.toggle(self._aor(extension), name)
                except StoreError as exc:
                    log.warning("toggle %s of %s unreadable: %s", name, extension, exc)
            self._toggles[key] = saved
        return self._initial(feature, extension, name) if saved is None else saved

    def _initial(self, feature: Feature, extension: str, name: str) -> Any:
        """The extension column that gives a toggle its initial value (None: none)."""
        column = feature.toggles.get(name)
        row = self.facts.extension(extension) if column else None
        return row.get(column) if row is not None and column else None

    def set_toggle(self, feature: Feature, extension: str, name: str, value: Any) -> None:
        if name not in feature.toggles:
            raise KeyError(f"feature {feature.name} keeps no toggle {name!r}")
        if isinstance(value, str) and len(value) > MAX_TOGGLE_TEXT:
            raise ValueError(f"toggle {name} value longer than {MAX_TOGGLE_TEXT}")
        if not isinstance(value, bool | str | None):
            raise TypeError(f"toggle {name} takes on/off, text or nothing")
        # None removes the saved value (StateStore.set_toggle): back to the column's
        # initial value, now as after a restart.
        self._toggles[(feature.name, extension, name)] = value
        self.toggled(extension)
        if self.state is None:
            return
        with self._write_lock:
            queued = self._queued()
            self._pending[(self._aor(extension), name)] = value
        if not queued:
            self._writer.submit(self._write)

    def _write(self) -> None:
        """One thread writes the toggles and feature state set since its last commit
        (a synced LMDB commit takes milliseconds on a CF card: never on the event loop)."""
        with self._write_lock:
            pending, self._pending = self._pending, {}
            pending_state, self._pending_state = self._pending_state, {}
            pending_mail, self._pending_mail = self._pending_mail, {}
        state = self.state
        if state is None:
            return
        for (aor, name), value in pending.items():
            try:
                state.set_toggle(aor, name, value)
            except (StoreError, ValueError) as exc:
                log.error("toggle %s of %s not saved: %s", name, aor, exc)  # noqa: TRY400  # one line says it
        for (feature, key), value in pending_state.items():
            try:
                state.set_feature_state(feature, key, value)
            except (StoreError, ValueError) as exc:
                log.error("state %s of feature %s not saved: %s", key, feature, exc)  # noqa: TRY400  # one line says it
        Mailboxes.write(state, pending_mail)

    def _queued(self) -> bool:
        """Whether the writer has work queued already (call with the write lock)."""
        return bool(self._pending or self._pending_state or self._pending_mail)

    # ------------------------------------------------------------------ voicemail index
    def messages(self, mailbox: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        return self.mail.messages(mailbox)

    def set_message(self, mailbox: str, msg_id: str, meta: Mapping[str, Any] | None) -> None:
        self.mail.set_message(mailbox, msg_id, meta)

    def deposit(
        self, feature: Feature, mailbox: str, recording: str, meta: Mapping[str, Any]
    ) -> str | None:
        """`Context.deposit`: `feature`'s recording becomes a new message of
        `mailbox` (its audio hard-linked, so no second copy is written to the card),
        if the feature keeping the mailboxes takes it (`take_message`)."""
        keeper = self._dest_types.get("voicemail")
        if keeper is None or self.recordings is None or not RECORDING_NAME.fullmatch(recording):
            return None
        try:
            return keeper.take_message(
                self._contexts[keeper.name],
                mailbox,
                meta,
                lambda: self._store_message(feature, mailbox, recording, meta),
            )
        except Exception as exc:  # noqa: BLE001  # one feature's bug ends no other
            self._failed(keeper, "take_message", exc)
            return None

    def delete_recording(self, feature: Feature, name: str) -> bool:
        """`Context.delete_recording`: remove `feature`'s recording `name`."""
        if self.recordings is None or not RECORDING_NAME.fullmatch(name):
            return False
        try:
            (self.recordings / feature.name / f"{name}.wav").unlink()
        except OSError:
            return False
        return True

    def _store_message(
        self, feature: Feature, mailbox: str, recording: str, meta: Mapping[str, Any]
    ) -> str | None:
        if self.recordings is None:
            return None
        source = self.recordings / feature.name / f"{recording}.wav"
        try:
            taken = {msg_id for msg_id, _ in self.mail.messages(mailbox)}
        except ValueError:
            return None
        if not source.is_file():
            return None
        folder = self.recordings / MAILBOX_AUDIO
        n = int(self.facts.wall() * 1000)
        while f"{n:013d}" in taken or (folder / f"{mailbox}-{n:013d}.wav").exists():
            n += 1
        msg_id = f"{n:013d}"
        target = folder / f"{mailbox}-{msg_id}.wav"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)  # another file system: a copy
            self.mail.set_message(mailbox, msg_id, dict(meta))
        except (OSError, ValueError) as exc:
            log.warning("message for %s not deposited: %s", mailbox, exc)
            target.unlink(missing_ok=True)
            return None
        return msg_id

    def _queue_mail(self, mailbox: str, msg_id: str, value: Any) -> None:
        with self._write_lock:
            queued = self._queued()
            self._pending_mail[(mailbox, msg_id)] = value
        if not queued:
            self._writer.submit(self._write)

    # ------------------------------------------------------------------ feature state
    def _namespace(self, feature: Feature) -> dict[str, Any]:
        """A feature's namespace in RAM, read from the state LMDB at first use."""
        ns = self._state.get(feature.name)
        if ns is None:
            ns = {}
            if self.state is not None:
                try:
                    ns = self.state.feature_state(feature.name, MAX_STATE_KEYS)
                except StoreError as exc:
                    log.warning("state of feature %s unreadable: %s", feature.name, exc)
            self._state[feature.name] = ns
        return ns

    def state_get(self, feature: Feature, key: str) -> Any:
        return self._namespace(feature).get(key)

    def state_keys(self, feature: Feature, prefix: str = "") -> tuple[str, ...]:
        return tuple(sorted(k for k in self._namespace(feature) if k.startswith(prefix)))

    def state_set(self, feature: Feature, key: str, value: Any) -> None:
        """Keep a value in the feature's namespace: in RAM at once (as it reads back
        after a restart: msgpack's round trip), written by the writer thread."""
        if not isinstance(key, str) or not key or "\0" in key:
            raise ValueError(f"feature {feature.name}: a state key is non-empty text without NUL")
        if len(key.encode()) > MAX_STATE_KEY:
            raise ValueError(f"feature {feature.name}: state key longer than {MAX_STATE_KEY} bytes")
        ns = self._namespace(feature)
        if value is not None:
            try:
                packed = msgpack.packb(value, use_bin_type=True)
                value = msgpack.unpackb(packed, raw=False)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(
                    f"feature {feature.name}: state {key!r} is not msgpack-able: {exc}"
                ) from None
            if len(packed) > MAX_STATE_VALUE:
                raise ValueError(
                    f"feature {feature.name}: state {key!r} is {len(packed)} bytes; "
                    f"at most {MAX_STATE_VALUE}"
                )
            if key not in ns and len(ns) >= MAX_STATE_KEYS:
                raise ValueError(f"feature {feature.name}: at most {MAX_STATE_KEYS} state keys")
            ns[key] = value
        else:
            ns.pop(key, None)
        if self.state is None:
            return
        with self._write_lock:
            queued = self._queued()
            self._pending_state[(feature.name, key)] = value
        if not queued:
            self._writer.submit(self._write)

    def toggles(self, extension: str) -> dict[str, Any]:
        """Every toggle of an extension, by feature (for the console and status)."""
        return {
            f"{f.name}.{name}": self.toggle(f, extension, name)
            for f in self.features
            for name in f.toggles
        }

    def set_by_name(self, extension: str, qualified: str, value: Any) -> None:
        """The console's `feature.toggle` = value."""
        fname, _, name = qualified.partition(".")
        for f in self.features:
            if f.name == fname:
                if name not in f.toggles:
                    known = ", ".join(f"{f.name}.{t}" for t in f.toggles) or "none"
                    raise KeyError(f"feature {f.name} keeps no toggle {name!r} (its: {known})")
                refused = f.check_toggle(self._contexts[f.name], extension, name, value)
                if refused is not None:
                    raise ValueError(f"{qualified}: {refused}")
                self.set_toggle(f, extension, name, value)
                return
        known = ", ".join(f.name for f in self.features if f.toggles)
        raise KeyError(f"no feature {fname!r} with toggles (known: {known})")

    def stop_app(self, call_id: str) -> None:
        """The call was taken from its application (a parked call picked up): the
        application stops at once, its session hears the end."""
        session = self._sessions.get(call_id)
        if session is not None:
            session.ended()
        task = self._apps.get(call_id)
        if task is not None and not task.done():
            task.cancel()

    def stop_apps(self) -> None:
        """Cancel every running application (the daemon stops: its task group waits
        for its tasks, and an echo test would keep it an hour)."""
        for task in list(self._apps.values()):
            task.cancel()
        self._apps.clear()

    def close(self) -> None:
        self.stop_apps()
        self.rooms.close()
        self._writer.shutdown(wait=True)  # toggles set before the stop reach the disk

    # ------------------------------------------------------------------ applications
    def run_app(
        self,
        call_id: str,
        app: App,
        name: str,
        leg: MediaLeg,
        hangup: Callable[[], None],
        ended: Callable[[], bool],
        bridge: Bridge | None = None,
        feature: str = "",
        on_exit: Callable[[], None] | None = None,
        consult: Consult | None = None,
    ) -> None:
        """Run an application on an answered call: one task, owned here, cancelled
        when the call ends; an exception ends that call (one log line), no other.
        `feature`: the feature that answered (its recordings directory)."""
        where = self.recordings / feature if self.recordings and feature else None
        loop = self.loop or asyncio.get_running_loop()
        session = LocalSession(leg, hangup, ended, bridge, where, loop, self.recordings, consult)
        session.call_id = call_id
        session.music = self.music
        session.rooms, session.feature = self.rooms, feature
        self._sessions[call_id] = session

        async def main() -> None:
            try:
                await app(session)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the app's bug ends its own call only
                log.warning("application %s failed: %s: %s", name, type(exc).__name__, exc)
                log.debug("application %s failed", name, exc_info=exc)
                session.hangup()
            finally:
                # Only its own: an application it sent the call to (an auto
                # attendant's key to voicemail) runs on under the same call id.
                if self._apps.get(call_id) is asyncio.current_task():
                    self._apps.pop(call_id, None)
                if self._sessions.get(call_id) is session:
                    self._sessions.pop(call_id, None)
                session.close()
                if on_exit is not None:
                    try:
                        on_exit()
                    except Exception:
                        log.exception("application %s: its end failed", name)

        if self.tasks is not None:
            self._apps[call_id] = self.tasks.create_task(main())
            return
        loop = self.loop or asyncio.get_running_loop()
        self._apps[call_id] = loop.create_task(main())

    @property
    def running_apps(self) -> int:
        return len(self._apps)


def describe(features: Iterable[Feature]) -> list[dict[str, Any]]:
    """The registry as data: names, codes, destination types, toggles (docs, console)."""
    return [
        {
            "name": f.name,
            "codes": dict(f.codes),
            "destination_types": list(f.destination_types),
            "toggles": dict(f.toggles),
        }
        for f in features
    ]
