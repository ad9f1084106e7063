"""Call queues (automatic call distribution): callers dialling a queue's number are
answered by the PBX, hear music on hold and their position / estimated wait, and are
offered one at a time (by the queue's strategy) to its agents; the agent who answers
is joined to the caller. Agents are static members (`pbx_queue_member`, login 0) or
log in and out from their phone with `*45` (all their queues) / `*45` + queue.
Figures in `pbx status`. See README.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pbx_core.features.api import (
    BOOL,
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Destination,
    Dial,
    Feature,
    Goto,
    Hunt,
    Reject,
    Session,
    Step,
    destination,
    integer,
    pbx_table,
    text,
)
from pbx_core.features.prompts import confirm
from pbx_core.features.queue.book import Book, Live, Waiter, book
from pbx_core.features.queue.strategy import STRATEGIES, choose

MAX_MEMBERS = 64  # agents one queue reads (its first 64 rows)
MAX_WAIT = 4 * 3600.0  # no caller waits longer, whatever the table says
POLL = 1.0  # seconds between a waiting caller's looks for a free agent
MAX_SAY = 99  # a position or a number of minutes said as at most this
LOGIN = "agent:"
ANSWERED, TRIED, NONE = (
    "answered",
    "tried",
    "none",
)  # an offer's outcome  # state key prefix: agent:EXT -> the queue numbers it is logged into


def _check_number(value: object) -> str | None:
    v = str(value or "")
    return None if v.isdigit() and len(v) <= 32 else "digits only (at most 32)"


def _check_digit(value: object) -> str | None:
    return None if value is None or str(value) in tuple("0123456789*#") else "one key: 0-9 * #"


def _check_announce(value: object) -> str | None:
    v = int(value) if isinstance(value, int) else -1
    return None if v == 0 or 15 <= v <= 3600 else "0 (never) or 15-3600 seconds"


QUEUE = pbx_table(
    "pbx_queue",
    "Call queues (feature queue): callers wait for the next free agent.",
    text("number", "the queue's number", need=True, dials="queue", check=_check_number),
    text("name", "the queue's name, as `pbx status` shows it", null=True),
    text("strategy", "how agents are chosen", default="ringall", choices=STRATEGIES),
    integer("ring_time", "seconds an agent's phone rings", default=15, lo=5, hi=300),
    integer("wrapup", "seconds after a call before the agent's next", default=0, lo=0, hi=600),
    integer("max_callers", "callers waiting at most", default=20, lo=1, hi=200),
    integer("max_wait", "seconds a caller waits at most (0: 4 hours)", default=0, lo=0, hi=14400),
    *destination("failover", "after max_wait, or when max_callers wait", need=False),
    text(
        "join_empty",
        "when no agent is logged in: join (wait) or refuse",
        default="join",
        choices=("join", "refuse"),
    ),
    *destination("empty_dest", "where a refused caller goes (join_empty refuse)", need=False),
    integer("music", "1: music on hold while waiting, 0: silence", default=1, **BOOL),
    integer(
        "announce_every",
        "seconds between position / estimated wait announcements (0: never)",
        default=60,
        check=_check_announce,
    ),
    integer("service_level", "answered within this many seconds counts", default=20, lo=1, hi=3600),
    text("exit_digit", "a key that leaves the queue", null=True, check=_check_digit),
    *destination("exit_dest", "where the exit digit goes (voicemail, the operator)", need=False),
    key=("number",),
    max_rows=50,
    targets="queue",
)
MEMBER = pbx_table(
    "pbx_queue_member",
    "Agents of call queues (feature queue): static (login 0) or logging in with *45.",
    text("queue", "the queue's number", need=True, refs=("pbx_queue", "number")),
    text("extension", "the agent's extension", need=True, check=_check_number),
    integer("penalty", "lower is offered first; then the table's order", default=0, lo=0, hi=99),
    integer("login", "0: always a member, 1: logs in and out with *45", default=0, **BOOL),
    key=("queue", "extension"),
    max_rows=2000,
)


# ------------------------------------------------------------------ table reading


def _row(ctx: Context, number: str) -> Mapping[str, Any] | None:
    return next((r for r in ctx.rows("pbx_queue") if r.get("number") == number), None)


def _dest(row: Mapping[str, Any], which: str) -> Destination | None:
    """The row's `failover`, `empty_dest` or `exit_dest` destination (None: unset)."""
    kind, target = {
        "failover": (row.get("failover_type"), row.get("failover")),
        "empty_dest": (row.get("empty_dest_type"), row.get("empty_dest")),
        "exit_dest": (row.get("exit_dest_type"), row.get("exit_dest")),
    }[which]
    return Destination(str(kind), target) if kind else None


def _logins(ctx: Context, ext: str) -> list[str]:
    got = ctx.state_get(LOGIN + ext)
    return [str(q) for q in got] if isinstance(got, list) else []


def members(ctx: Context, queue: str) -> list[tuple[str, int]]:
    """The queue's logged-in agents: (extension, penalty), the table's order."""
    out: list[tuple[str, int]] = []
    for r in ctx.rows("pbx_queue_member"):
        if r.get("queue") != queue:
            continue
        ext = str(r.get("extension"))
        if r.get("login") and queue not in _logins(ctx, ext):
            continue
        out.append((ext, int(r.get("penalty") or 0)))
        if len(out) >= MAX_MEMBERS:
            break
    return out


def _free(ctx: Context, b: Book, agents: list[tuple[str, int]], w: Waiter) -> list[str]:
    now = ctx.now()
    return [
        a
        for a, _p in agents
        if a not in w.tried
        and a not in b.ringing
        and b.free_at.get(a, 0.0) <= now
        and ctx.registered(a)
        and not ctx.in_call(a)
    ]


# ------------------------------------------------------------------ the caller


def _say(n: int) -> list[str]:
    n = max(0, min(n, MAX_SAY))
    if n <= 20 or n % 10 == 0:
        return [f"number-{n}"]
    return [f"number-{n - n % 10}", f"number-{n % 10}"]


def _announcement(ctx: Context, b: Book, queue: str, w: Waiter) -> list[str]:
    waiting = b.queue(queue)
    position = waiting.index(w) + 1 if w in waiting else 1
    out = ["queue-position", *_say(position)]
    s = b.stat(queue)
    if s.answered:
        agents = max(1, len(members(ctx, queue)))
        ewt = s.wait_total / s.answered * position / agents
        minutes = int(ewt // 60) + (1 if ewt % 60 else 0)
        if minutes <= 1:
            out += ["queue-wait", "queue-less-minute"]
        else:
            out += ["queue-wait", *_say(minutes), "queue-minutes"]
    return out


def _waiting_app(ctx: Context, queue: str) -> App:
    async def app(session: Session) -> None:
        b = book(ctx)
        w = Waiter(session, ctx.now())
        b.queue(queue).append(w)
        ctx.cdr_note(session.call_id, f"queue={queue}")
        try:
            await _wait(ctx, b, queue, w)
        finally:
            if w in b.queue(queue):
                b.queue(queue).remove(w)

    return app


async def _leave(session: Session, dest: Destination | None) -> None:
    if dest is not None and dest.type != "hangup" and await session.goto(dest) == 200:
        return
    if not session.hung_up:
        session.hangup()


async def _wait(ctx: Context, b: Book, queue: str, w: Waiter) -> None:
    session, s = w.session, b.stat(queue)
    row = _row(ctx, queue)
    if row is None:
        session.hangup()
        return
    last_say = w.joined
    holding = False
    while not session.hung_up:
        row = _row(ctx, queue) or row
        now = ctx.now()
        limit = float(row.get("max_wait") or 0) or MAX_WAIT
        if now - w.joined >= min(limit, MAX_WAIT):
            s.timed_out += 1
            b.queue(queue).remove(w)
            ctx.cdr_note(session.call_id, f"wait={round(now - w.joined)} timeout")
            await _leave(session, _dest(row, "failover"))
            return
        every = int(row.get("announce_every") or 0)
        key: str | None = None
        if every and now - last_say >= every:
            last_say = now
            key = await session.play(*_announcement(ctx, b, queue, w), interruptible=True)
            holding = False
        elif (offered := await _offer(ctx, b, queue, row, w)) == ANSWERED:
            return
        elif offered == NONE and not session.hung_up:
            if not holding and row.get("music"):
                session.music_on_hold()
                holding = True
            key = await session.collect(1, first_timeout=POLL, terminator="")
        exit_digit = row.get("exit_digit")
        if key and exit_digit and key == exit_digit and not session.hung_up:
            s.exited += 1
            b.queue(queue).remove(w)
            ctx.cdr_note(session.call_id, f"wait={round(ctx.now() - w.joined)} exit")
            await _leave(session, _dest(row, "exit_dest"))
            return
    s.abandoned += 1


async def _offer(ctx: Context, b: Book, queue: str, row: Mapping[str, Any], w: Waiter) -> str:
    """Offer `w` to the agent(s) the strategy picks, if it may be offered now (the
    callers ahead of it are ringing agents already): ANSWERED, TRIED (nobody
    answered: the next agent at once) or NONE (nobody to offer it to now)."""
    waiting = b.queue(queue)
    if any(not x.offering for x in waiting[: waiting.index(w)]):
        return NONE
    agents = members(ctx, queue)
    free = _free(ctx, b, agents, w)
    if not free and w.tried:
        w.tried.clear()  # a new round: who did not answer may be offered again
        return NONE
    s = b.stat(queue)
    chosen = choose(str(row.get("strategy")), agents, free, s.agents, s.rr_last)
    ring_time = float(row.get("ring_time") or 15)
    token = b.offer(queue, chosen, ring_time) if chosen else None
    if token is None:
        return NONE
    if row.get("strategy") == "rrmemory":
        s.rr_last = chosen[0]
    w.offering = True
    try:
        status = await w.session.goto(Destination("queue", f"{queue}>{token}"))
    finally:
        w.offering = False
        b.offer_done(token)
    if status != 200:
        w.tried.update(chosen)
        return TRIED
    session = w.session
    talking = [t.extension for t in ctx.talking() if t.call_id == session.call_id]
    agent = next((a for a in talking if a in chosen), chosen[0])
    now = ctx.now()
    wait = now - w.joined
    waiting.remove(w)
    s.answered += 1
    s.wait_total += wait
    s.within += wait <= int(row.get("service_level") or 20)
    s.agent(agent).calls += 1
    b.live[session.call_id] = Live(queue, agent, now, float(row.get("wrapup") or 0))
    ctx.cdr_note(session.call_id, f"wait={round(wait)} agent={agent}")
    return ANSWERED


# ------------------------------------------------------------------ agents


def _toggle_app(ctx: Context, ext: str, queue: str) -> App:
    dynamic = [
        str(r.get("queue"))
        for r in ctx.rows("pbx_queue_member")
        if r.get("extension") == ext and r.get("login")
    ]
    if queue:
        if queue not in dynamic:
            return confirm("queue-not-member")
        now = _logins(ctx, ext)
        logged = [q for q in now if q != queue] if queue in now else [*now, queue]
        on = queue in logged
    elif not dynamic:
        return confirm("queue-not-member")
    else:
        on = not any(q in dynamic for q in _logins(ctx, ext))
        logged = sorted(dynamic) if on else []
    ctx.state_set(LOGIN + ext, sorted(set(logged)) or None)
    return confirm("queue-agent-login" if on else "queue-agent-logout")


# ------------------------------------------------------------------ the feature


class Queues(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        arg = dial.arg
        if arg and (not arg.isdigit() or len(arg) > 32):
            return Answer(confirm("queue-not-member"), "queue login")
        return Answer(_toggle_app(ctx, dial.extension, arg), "queue login")

    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        target = dest.target or ""
        queue, sep, token = target.partition(">")
        b = book(ctx)
        if sep:  # a waiting caller's offer to agents (an application's goto)
            offer = b.offers.get(token)
            if offer is None or offer[0] != queue:
                return Reject(404, "no such queue offer")
            return Hunt((Step(offer[1], offer[2]),), None, 480)
        row = _row(ctx, queue)
        if row is None:
            return Reject(404, f"no queue {queue}")
        if len(b.queue(queue)) >= int(row.get("max_callers") or 1):
            b.stat(queue).refused += 1
            full = _dest(row, "failover")
            return Goto(full) if full is not None else Reject(486, "queue full")
        if row.get("join_empty") == "refuse" and not members(ctx, queue):
            b.stat(queue).refused += 1
            empty = _dest(row, "empty_dest")
            return Goto(empty) if empty is not None else Reject(480, "no agent logged in")
        return Answer(_waiting_app(ctx, queue), "queue")

    def call_ended(self, ctx: Context, record: Mapping[str, Any]) -> None:
        b = book(ctx)
        live = b.live.pop(str(record.get("call_id", "")), None)
        if live is None:
            return
        now = ctx.now()
        s = b.stat(live.queue)
        s.talk_total += now - live.answered
        s.talked += 1
        s.agent(live.agent).last_end = now
        b.free_at[live.agent] = now + live.wrapup

    def status(self, ctx: Context) -> dict[str, Any]:
        b = book(ctx)
        now = ctx.now()
        out: dict[str, Any] = {}
        for row in ctx.rows("pbx_queue"):
            number = str(row.get("number"))
            fig = b.figures(number, now)
            fig["logged_in"] = [a for a, _p in members(ctx, number)]
            out[number] = fig
        return {"queues": out} if out else {}


FEATURE = Queues(
    name="queue",
    codes={"*45": "queue agent log in / out (+ queue number: that queue only)"},
    destination_types=("queue",),
    tables=(QUEUE, MEMBER),
)
