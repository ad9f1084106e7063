"""Voice message broadcasting: an extension allowed to (`senders` of a
`pbx_broadcast_group` row) dials the group's number, records a message once (`#`
ends it), and the PBX calls every member, a few at a time (auto-answer when the row
says so): who answers hears the message; who does not (busy, no answer, not
registered) finds it in their voicemail box. Anyone else hears that they may not.
`pbx status` shows each broadcast's progress; the CDR has a row per member called
(callee `broadcast:NUMBER`). See README.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
    Setting,
    integer,
    pbx_table,
    text,
)
from pbx_core.features.prompts import confirm

MAX_MEMBERS = 64
# Broadcasts delivered at once (each keeps its recording, at most
# broadcast_max_seconds, on the card until delivered): bounds the card space.
MAX_RUNNING = 4
AT_ONCE = 4  # members rung at the same time
MEMBER_RING = 25.0  # seconds a member's phone rings
MIN_SECONDS = 1.0  # a shorter recording is no message
KEEP_DONE = 8  # finished broadcasts `pbx status` still shows


def _list(value: object) -> tuple[str, ...]:
    return tuple(m.strip() for m in str(value or "").split(",") if m.strip())[:MAX_MEMBERS]


def _check_list(value: object) -> str | None:
    items = [m.strip() for m in str(value or "").split(",") if m.strip()]
    if not items:
        return "at least one extension"
    if len(items) > MAX_MEMBERS:
        return f"at most {MAX_MEMBERS} extensions"
    bad = [m for m in items if not m.isdigit() or len(m) > 32]
    return f"not an extension number: {bad[0]}" if bad else None


def _check_number(value: object) -> str | None:
    v = str(value or "")
    return None if v.isdigit() and len(v) <= 32 else "digits only (at most 32)"


TABLE = pbx_table(
    "pbx_broadcast_group",
    "Voice broadcast groups (feature broadcast): a sender dials `number`, records a "
    "message, and every member is called to hear it (or finds it in voicemail).",
    text(
        "number",
        "the number a sender dials to record a broadcast",
        need=True,
        dials="broadcast",
        check=_check_number,
    ),
    text("name", "the group's name, as `pbx status` shows it", null=True),
    text("members", "member extensions, comma-separated", need=True, check=_check_list),
    text("senders", "extensions that may broadcast, comma-separated", need=True, check=_check_list),
    integer("auto_answer", "1: members' phones answer by themselves", default=0, **BOOL),
    key=("number",),
    max_rows=50,
)


@dataclass
class Job:
    """One broadcast being delivered."""

    number: str
    sender: str
    recording: str
    seconds: float
    auto_answer: bool
    started: float
    queue: list[str]
    members: dict[str, str] = field(default_factory=dict)  # member -> its state

    @property
    def done(self) -> bool:
        return not self.queue and all(s not in ("queued", "ringing") for s in self.members.values())


class Book:
    def __init__(self) -> None:
        self.running: dict[str, Job] = {}  # group number -> its job
        self.done: list[Job] = []


def book(ctx: Context) -> Book:
    return ctx.memory(Book)  # RAM only: one per running PBX, none after a restart


def _row(ctx: Context, number: str | None) -> Mapping[str, Any] | None:
    return next((r for r in ctx.rows("pbx_broadcast_group") if r.get("number") == number), None)


def _record(ctx: Context, row: Mapping[str, Any], sender: str) -> App:
    number = str(row.get("number"))

    async def app(session: Session) -> None:
        b = book(ctx)
        if number in b.running or len(b.running) >= MAX_RUNNING:
            await session.play("broadcast-busy", "goodbye")
            session.hangup()
            return
        await session.play("broadcast-record", "tone:confirmation")
        name = f"bc-{number}"
        got = await session.record(
            name,
            max_seconds=float(ctx.setting("broadcast_max_seconds")),
            silence_seconds=5.0,
            terminators="#",
        )
        if got.reason == "error" or got.seconds < MIN_SECONDS or number in b.running:
            if not session.hung_up:
                await session.play("broadcast-nothing", "goodbye")
                session.hangup()
            return
        members = [m for m in _list(row.get("members")) if m != sender]
        job = Job(
            number,
            sender,
            name,
            got.seconds,
            bool(row.get("auto_answer")),
            ctx.wall_time(),
            list(members),
            dict.fromkeys(members, "queued"),
        )
        b.running[number] = job
        _next(ctx, b, job)
        if not session.hung_up:
            await session.play("broadcast-sent", "goodbye")
            session.hangup()

    return app


def _next(ctx: Context, b: Book, job: Job) -> None:
    """Call queued members while fewer than AT_ONCE ring or listen."""
    while job.queue and sum(1 for s in job.members.values() if s == "ringing") < AT_ONCE:
        member = job.queue.pop(0)
        job.members[member] = "ringing"
        status = ctx.originate(
            Originate(
                member,
                f"broadcast:{job.number}",
                app=_listen(job, member),
                caller_id=job.number,
                caller_name="Broadcast",
                auto_answer=job.auto_answer,
                ring_timeout=MEMBER_RING,
                on_done=_done_hook(ctx, b, job, member),
            )
        )
        if status != 100:
            _member_done(ctx, b, job, member, status)
    if job.done and b.running.get(job.number) is job:
        del b.running[job.number]
        b.done = [*b.done, job][-KEEP_DONE:]
        # The mailboxes' copies are links of their own: the group's file goes, so
        # the card holds a broadcast only while it is delivered or in a mailbox.
        ctx.delete_recording(job.recording)


def _done_hook(ctx: Context, b: Book, job: Job, member: str) -> Callable[[int], None]:
    return lambda status: _member_done(ctx, b, job, member, status)


def _listen(job: Job, member: str) -> App:
    async def app(session: Session) -> None:
        await session.wait(0.5)  # an auto-answering phone opens its speaker
        await session.play(f"rec:{job.recording}")
        if not session.hung_up:
            job.members[member] = "heard"
            session.hangup()

    return app


def _member_done(ctx: Context, b: Book, job: Job, member: str, status: int) -> None:
    if status == 200:
        job.members[member] = "answered"  # `heard` once the message played through
        return
    job.members[member] = _deposit(ctx, job, member)
    _next(ctx, b, job)


def answered_ended(ctx: Context, b: Book, job: Job, member: str) -> None:
    """A member who answered is done (heard it, or hung up before the end: then the
    message is left in the mailbox too)."""
    if job.members.get(member) == "answered":
        job.members[member] = _deposit(ctx, job, member, partly=True)
    _next(ctx, b, job)


def _deposit(ctx: Context, job: Job, member: str, partly: bool = False) -> str:
    row = ctx.extension(member)
    if row is None or not row.get("voicemail"):
        return "missed"
    msg_id = ctx.deposit(
        member,
        job.recording,
        {
            "caller": job.sender,
            "time": round(ctx.wall_time(), 3),
            "duration": job.seconds,
            "folder": "new",
            "broadcast": job.number,
        },
    )
    if msg_id is None:
        return "missed"  # no recording, or voicemail refused it: a full box or card
    return "heard, mailbox" if partly else "mailbox"  # voicemail lit the lamps


class Broadcast(Feature):
    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        row = _row(ctx, dest.target)
        if row is None:
            return Reject(404, "no such broadcast group")
        if not call.from_extension or call.caller_number not in _list(row.get("senders")):
            return Answer(confirm("broadcast-refused"), "broadcast")
        return Answer(_record(ctx, row, call.caller_number), "broadcast")

    def call_ended(self, ctx: Context, record: Mapping[str, Any]) -> None:
        callee = str(record.get("callee", ""))
        if not callee.startswith("broadcast:"):
            return
        b = book(ctx)
        job = b.running.get(callee.partition(":")[2])
        member = str(record.get("caller", "")).partition("@")[0]
        if job is not None and member in job.members:
            answered_ended(ctx, b, job, member)

    def status(self, ctx: Context) -> dict[str, Any]:
        b = book(ctx)
        return {
            "broadcasts": [
                {
                    "number": j.number,
                    "sender": j.sender,
                    "seconds": j.seconds,
                    "running": j in b.running.values(),
                    "members": dict(j.members),
                }
                for j in [*b.done, *b.running.values()]
            ]
        }


FEATURE = Broadcast(
    name="broadcast",
    destination_types=("broadcast",),
    tables=(TABLE,),
    settings=(
        Setting(
            "broadcast_max_seconds",
            int,
            60,
            "seconds a broadcast message may last at most",
            lo=5,
            hi=300,
        ),
    ),
)
