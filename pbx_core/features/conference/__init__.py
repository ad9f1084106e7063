"""Conference rooms: a number (or a DID, an IVR key) that puts callers in one room
where each hears everyone but themselves, with a PIN, an admin PIN, a size bound,
a join tone, music while alone, and keys in the room (mute, lock, mute all, drop
the last joiner). See README.md.

The mixing is the core's (`Session.join_room`: pbx/rooms.py on media/bridge.py's
MixBridge); this package keeps who is in which room, the PINs and the keys.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pbx_core.features.api import (
    BOOL,
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Destination,
    Feature,
    Originate,
    Reject,
    Session,
    integer,
    pbx_table,
    text,
)

MIN_PIN, MAX_PIN = 3, 16
MAX_MEMBERS = 50  # a room's max_members can never exceed this, whatever the row says
PIN_TRIES = 5
IDLE = 3600.0  # seconds one wait for a key in the room lasts (then it waits again)
STAR_TIMEOUT = 3.0  # seconds for the key after `*`
ADHOC = "*3"  # in-call code: + an extension and `#`, a three-party conference
ADHOC_RING = 30.0  # seconds the third extension rings
MAX_EXTENSION = 16  # digits of the third extension

# Keys in the room (Asterisk ConfBridge's sample menus: `1`/`*1` mute, `2`/`*2` lock,
# `3`/`*3` kick the last joiner; mute all is ConfBridge's admin_toggle_mute_participants).
MUTE, LOCK, KICK, MUTE_ALL = "1", "2", "3", "4"


def _digits(value: object) -> str | None:
    pin = str(value)
    if not pin.isdigit() or not pin.isascii() or not MIN_PIN <= len(pin) <= MAX_PIN:
        return f"a PIN is {MIN_PIN} to {MAX_PIN} digits (0-9)"
    return None


def _number(value: object) -> str | None:
    n = str(value)
    if not n.isdigit() or not n.isascii() or not 1 <= len(n) <= 16:
        return "a room number is 1 to 16 digits (0-9)"
    return None


CONFERENCE_TABLE = pbx_table(
    "pbx_conference",
    "Conference rooms: callers who dial the number (or reach the destination "
    "`conference`, target the number) talk together.",
    text(
        "number",
        "the room's number: extensions dial it; the `conference` destination's target",
        need=True,
        check=_number,
        dials="conference",
    ),
    text(
        "pin", f"PIN to join ({MIN_PIN}-{MAX_PIN} digits); none: no PIN", null=True, check=_digits
    ),
    text(
        "admin_pin",
        "PIN that makes the caller the room's admin (keys 2, 3, 4); none: no admin",
        null=True,
        check=_digits,
    ),
    integer("max_members", "members at once; more are refused", default=10, lo=2, hi=MAX_MEMBERS),
    integer(
        "announce_join", "1: the room hears a tone when someone joins or leaves", default=1, **BOOL
    ),
    integer("music_when_alone", "1: a member alone hears music on hold", default=1, **BOOL),
    integer("pin_attempts", "PIN tries per call", default=3, lo=1, hi=PIN_TRIES),
    integer("enabled", "0 = the room refuses calls (404)", default=1, **BOOL),
    text("description", "free text", null=True),
    key=("number",),
    max_rows=100,
)


@dataclass(eq=False)
class Member:
    session: Session
    caller: str
    admin: bool
    muted: bool = False  # by its own key


@dataclass
class RoomState:
    """One room while it has members (gone with the last one)."""

    members: list[Member] = field(default_factory=list)
    locked: bool = False
    muted_all: bool = False  # every member but the admins, by an admin's key


def caller_key(call: CallInfo) -> str:
    """What a wrong PIN counts against (as DISA's): the source address of an
    extension's own call, else `cid:` + the caller."""
    return call.source if call.source else f"cid:{call.caller}"


@dataclass
class AdHoc:
    """A two-party call turned three-party: the third extension's session while it
    is in the room; `ended` once the extension that pressed `*3` is back or gone."""

    third: Session | None = None
    joined: bool = False
    left: bool = False
    ended: bool = False


@dataclass(frozen=True)
class Conference(Feature):
    # The rooms with members now, by number (RAM only: a restart ends every call).
    rooms: dict[str, RoomState] = field(default_factory=dict, compare=False, repr=False)
    adhoc: dict[str, AdHoc] = field(default_factory=dict, compare=False, repr=False)

    def in_call(self, ctx: Context, call: CallInfo, extension: str, code: str) -> Decision | None:
        if code != ADHOC:
            return None
        return Answer(_adhoc(self, ctx, extension), "conference-adhoc")

    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        row = next((r for r in ctx.rows("pbx_conference") if r["number"] == dest.target), None)
        if row is None or not row["enabled"]:
            return Reject(404, f"no conference room {dest.target}")
        key = caller_key(call)
        if ctx.banned(key):
            return Reject(403, f"conference {dest.target}: {key} is banned after wrong PINs")
        return Answer(_app(self, ctx, dict(row), call, key), "conference")

    def status(self, ctx: Context) -> dict[str, Any]:
        rooms = {
            n: {"members": len(r.members), "locked": r.locked, "muted_all": r.muted_all}
            for n, r in sorted(self.rooms.items())
        }
        out: dict[str, Any] = {"rooms": rooms} if rooms else {}
        if self.adhoc:
            out["adhoc"] = len(self.adhoc)
        return out


def _app(
    feature: Conference, ctx: Context, row: Mapping[str, Any], call: CallInfo, key: str
) -> App:
    async def app(session: Session) -> None:
        await Caller(feature, ctx, session, row, call, key).run()

    return app


class Caller:
    """One caller of a room: the PIN, the join, the keys until it leaves."""

    def __init__(
        self,
        feature: Conference,
        ctx: Context,
        session: Session,
        row: Mapping[str, Any],
        call: CallInfo,
        key: str,
    ) -> None:
        self.feature, self.ctx, self.session, self.key = feature, ctx, session, key
        self.number = str(row["number"])
        self.pin = str(row["pin"]) if row["pin"] else ""
        self.admin_pin = str(row["admin_pin"]) if row["admin_pin"] else ""
        self.max_members = max(2, min(int(row["max_members"]), MAX_MEMBERS))
        self.tone = bool(row["announce_join"])
        self.music = bool(row["music_when_alone"])
        self.tries = max(1, min(int(row["pin_attempts"]), PIN_TRIES))
        self.caller = call.caller_number or call.caller

    async def run(self) -> None:
        s = self.session
        admin = await self._login()
        if admin is None:
            if not s.hung_up:
                await s.play("goodbye")
                s.hangup()
            return
        room = self.feature.rooms.get(self.number) or RoomState()
        refused = None
        if room.locked and not admin:
            refused = "conf-locked"
        elif len(room.members) >= self.max_members:
            refused = "conf-full"
        if refused is None:
            status = s.join_room(
                self.number,
                max_members=self.max_members,
                muted=room.muted_all and not admin,
                music_when_alone=self.music,
                tone=self.tone,
            )
            if status != 200:
                refused = "conf-full" if status == 503 else "not-available"
        if refused is not None:
            if not s.hung_up:
                await s.play(refused)
                s.hangup()
            return
        self.feature.rooms[self.number] = room
        me = Member(s, self.caller, admin)
        room.members.append(me)
        try:
            await self._keys(room, me)
        finally:
            if me in room.members:
                room.members.remove(me)
            if not room.members and self.feature.rooms.get(self.number) is room:
                del self.feature.rooms[self.number]  # the room ends with its last member
            s.leave_room()

    async def _login(self) -> bool | None:
        """True: the admin; False: a member; None: no (wrong PINs, hung up)."""
        s = self.session
        if not self.pin and not self.admin_pin:
            return False
        for _ in range(self.tries):
            await s.play("conf-pin")
            got = await s.collect(MAX_PIN, first_timeout=10.0, inter_timeout=5.0)
            if s.hung_up:
                return None
            if self.admin_pin and hmac.compare_digest(got.encode(), self.admin_pin.encode()):
                return True
            if self.pin and hmac.compare_digest(got.encode(), self.pin.encode()):
                return False
            if not self.pin and not got:
                return False  # only an admin PIN: `#` alone joins as a member
            if self.ctx.failed_auth(self.key) or s.hung_up:
                return None
            await s.play("vm-login-incorrect")
        return None

    async def _keys(self, room: RoomState, me: Member) -> None:
        s = self.session
        while not s.hung_up:
            key = await s.collect(1, first_timeout=IDLE, terminator="")
            if key == "*":
                key = await s.collect(1, first_timeout=STAR_TIMEOUT, terminator="")
            if not key or s.hung_up:
                continue
            if key == MUTE:
                me.muted = not me.muted
                self._apply(room, me)
                await s.play("conf-muted" if self._muted(room, me) else "conf-unmuted")
            elif key in (LOCK, KICK, MUTE_ALL) and not me.admin:
                await s.play("conf-not-allowed")
            elif key == LOCK:
                room.locked = not room.locked
                await s.play("conf-locked-now" if room.locked else "conf-unlocked-now")
            elif key == MUTE_ALL:
                room.muted_all = not room.muted_all
                for m in room.members:
                    self._apply(room, m)
                await s.play("conf-all-muted" if room.muted_all else "conf-all-unmuted")
            elif key == KICK:
                last = next((m for m in reversed(room.members) if not m.admin), None)
                if last is None:
                    await s.play("conf-not-allowed")
                    continue
                room.members.remove(last)
                last.session.hangup()
                await s.play("tone:confirmation")

    @staticmethod
    def _muted(room: RoomState, m: Member) -> bool:
        return m.muted or (room.muted_all and not m.admin)

    def _apply(self, room: RoomState, m: Member) -> None:
        m.session.mute(self._muted(room, m))


_ADHOC_IDS = itertools.count(1)


def _adhoc(feature: Conference, ctx: Context, extension: str) -> App:
    """`*3` + an extension + `#` in a two-party call: the extension and its other
    party talk in a room (at once) while the third rings; when it answers it joins
    them. When the third hangs up, the two are back in their call; when the call
    ends (either of the two hangs up), the third is released."""

    async def app(session: Session) -> None:
        number = await session.collect(MAX_EXTENSION, first_timeout=10.0, inter_timeout=3.0)
        if not number or session.hung_up:
            return
        if number == extension or ctx.extension(number) is None or ctx.in_call(number):
            await session.play("not-available")
            return
        room = f"adhoc-{next(_ADHOC_IDS)}"
        state = feature.adhoc[room] = AdHoc()
        try:
            await _run_adhoc(ctx, session, state, room, extension, number)
        finally:
            state.ended = True
            feature.adhoc.pop(room, None)
            third = state.third
            if third is not None:
                third.hangup()
            session.leave_room()

    return app


async def _run_adhoc(
    ctx: Context, session: Session, state: AdHoc, room: str, extension: str, number: str
) -> None:
    status = session.join_room(
        room, max_members=3, music_when_alone=False, tone=True, with_other=True
    )
    if status != 200:
        await session.play("not-available")
        return
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_done(result: int) -> None:
        if not done.done():
            done.set_result(result)

    async def third(s: Session) -> None:
        if state.ended:
            s.hangup()
            return
        state.third = s
        try:
            if s.join_room(room, max_members=3, music_when_alone=False) != 200:
                s.hangup()
                return
            state.joined = True
            while not s.hung_up and not state.ended:
                await s.wait(1.0)
        finally:
            state.third = None
            state.left = True
            s.leave_room()
            if not s.hung_up:
                s.hangup()

    placed = ctx.originate(
        Originate(
            extension=number,
            name="conference",
            app=third,
            caller_id=extension,
            ring_timeout=ADHOC_RING,
            on_done=on_done,
        )
    )
    if placed != 100:
        session.leave_room()
        await session.play("not-available")
        return
    while not done.done() and not session.hung_up:
        await session.wait(0.2)
    if session.hung_up:
        return
    if done.result() != 200:
        session.leave_room()
        await session.play("not-available")
        return
    while not session.hung_up and not state.left:  # until the third hangs up
        await session.wait(0.2)


FEATURE = Conference(
    name="conference",
    destination_types=("conference",),
    tables=(CONFERENCE_TABLE,),
    call_codes={ADHOC: "ad hoc conference: + an extension and #, it joins the call"},
)
