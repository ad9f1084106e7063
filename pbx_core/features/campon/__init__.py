"""Camp-on / automatic ringback (Asterisk's CCBS and CCNR): `*82` + extension, or
`*82` alone for the last extension you called that was busy or did not answer, asks
the PBX to call you back when it is free; `*83` cancels (all yours, or `*83` +
extension that one). With `campon_offer` = yes a busy extension's internal caller
hears an offer and presses 5 instead. When the callee is free again (in no call,
registered) and so is the caller, the PBX rings the caller first and, when it
answers, the callee (the caller hears ringback). Requests live in RAM only (never on
the card), expire after `campon_expire_minutes`, and are bounded per caller and in
all. See README.md."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pbx_core.features.api import (
    Answer,
    App,
    CallInfo,
    Context,
    Decision,
    Dial,
    Feature,
    Originate,
    Reject,
    Session,
    Setting,
    Why,
)
from pbx_core.features.prompts import confirm

log = logging.getLogger("pbx.features")

MAX_PER_CALLER = 3  # requests one extension may have waiting
MAX_TOTAL = 32  # requests waiting in the whole PBX
MAX_CALLBACKS = 3  # callbacks of one request that found the callee busy again
RETRY_AFTER = 60.0  # seconds before a request whose callee was busy again is tried again
POLL = 15.0  # seconds between looks at waiting requests (besides every call's end)
CALLBACK_RING = 30.0  # seconds the caller's phone rings for its callback
OFFER_KEY = "5"  # pressed at the busy offer
OFFER_WAIT = 6.0  # seconds to press it
LAST_KEEP = 600.0  # seconds "the last busy number" is remembered
MAX_LAST = 256  # callers whose last busy number is remembered


@dataclass
class Request:
    caller: str  # the extension to call back
    callee: str  # the extension it waits for
    made: float  # ctx.now() when asked
    expires: float
    why: str  # "busy" or "no answer" (CCBS / CCNR)
    state: str = "waiting"  # waiting, calling
    # CCNR: the callee was free but did not answer; it is called back only after it
    # has been in a call since (Asterisk's "activity, then idle").
    active: bool = False
    callbacks: int = 0
    next_try: float = 0.0


class Book:
    """The requests and the last busy numbers of one PBX (RAM only)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.last: dict[str, tuple[str, str, float]] = {}  # caller -> (callee, why, when)
        self.timer: asyncio.TimerHandle | None = None


def book(ctx: Context) -> Book:
    return ctx.memory(Book)  # RAM only: one per running PBX, none after a restart


def _prune(ctx: Context, b: Book) -> None:
    now = ctx.now()
    b.requests = [r for r in b.requests if r.state == "calling" or r.expires > now]
    for caller in [c for c, (_e, _w, t) in b.last.items() if now - t > LAST_KEEP]:
        del b.last[caller]


def add(ctx: Context, caller: str, callee: str, why: str) -> str | None:
    """Keep a request; None when kept, else why not (in a few words)."""
    b = book(ctx)
    _prune(ctx, b)
    if ctx.extension(callee) is None:
        return "no such extension"
    if callee == caller:
        return "that is you"
    mine = [r for r in b.requests if r.caller == caller]
    now = ctx.now()
    expires = now + int(ctx.setting("campon_expire_minutes")) * 60.0
    for r in mine:
        if r.callee == callee:  # asked again: the clock starts again
            r.expires = expires
            return None
    if len(mine) >= MAX_PER_CALLER or len(b.requests) >= MAX_TOTAL:
        return "too many callback requests"
    b.requests.append(Request(caller, callee, now, expires, why))
    _arm(ctx, b)
    return None


def cancel(ctx: Context, caller: str, callee: str = "") -> int:
    """Drop the caller's requests (for `callee`, or all); how many."""
    b = book(ctx)
    before = len(b.requests)
    b.requests = [
        r
        for r in b.requests
        if r.caller != caller or (callee and r.callee != callee) or r.state == "calling"
    ]
    return before - len(b.requests)


def _free(ctx: Context, number: str) -> bool:
    return ctx.registered(number) and not ctx.in_call(number)


def _arm(ctx: Context, b: Book) -> None:
    """A look every POLL seconds while requests wait (a callee may become free without
    a call of the PBX ending: its phone refused with 486 by itself)."""
    if b.timer is not None or not b.requests:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return

    def tick() -> None:
        b.timer = None
        try:
            scan(ctx)
        except Exception as exc:  # noqa: BLE001  # a failure must not stop the next look
            log.warning("camp-on: looking at the requests failed: %s: %s", type(exc).__name__, exc)
        _arm(ctx, b)

    b.timer = loop.call_later(POLL, tick)


def scan(ctx: Context) -> None:
    """Call back every waiting request whose callee and caller are free."""
    b = book(ctx)
    _prune(ctx, b)
    now = ctx.now()
    for r in list(b.requests):
        if r.state != "waiting" or r.next_try > now:
            continue
        if r.why == "no answer" and not r.active:
            r.active = ctx.in_call(r.callee)
            continue
        if not _free(ctx, r.callee) or not _free(ctx, r.caller):
            continue
        if any(o.state == "calling" and r.caller == o.caller for o in b.requests):
            continue
        _call_back(ctx, b, r)


def _call_back(ctx: Context, b: Book, r: Request) -> None:
    r.state = "calling"
    r.callbacks += 1

    def done(status: int) -> None:
        if status == 200:
            return  # the caller answered: the application decides
        # The caller did not answer (busy, no answer, gone): the request is dropped.
        if r in b.requests:
            b.requests.remove(r)

    status = ctx.originate(
        Originate(
            r.caller,
            f"campon:{r.callee}",
            app=_bridge(ctx, b, r),
            caller_id=r.callee,
            caller_name=f"Callback {r.callee}",
            ring_timeout=CALLBACK_RING,
            on_done=done,
        )
    )
    if status == 503:  # the PBX places too many calls now: later
        r.state = "waiting"
        r.callbacks -= 1
    elif status != 100 and r in b.requests:
        b.requests.remove(r)


def _bridge(ctx: Context, b: Book, r: Request) -> App:
    """On the caller's answer: ring the callee; the caller hears ringback."""

    async def app(session: Session) -> None:
        status = await session.bridge(r.callee)
        if status == 200:
            if r in b.requests:
                b.requests.remove(r)
            return
        if session.hung_up:
            if r in b.requests:
                b.requests.remove(r)
            return
        # The callee is busy again (or did not answer): the request waits on, a
        # minute at least, for at most MAX_CALLBACKS callbacks.
        if r.callbacks >= MAX_CALLBACKS or ctx.now() >= r.expires:
            if r in b.requests:
                b.requests.remove(r)
            await session.play("campon-busy-again", "campon-off")
        else:
            r.state = "waiting"
            r.next_try = ctx.now() + RETRY_AFTER
            await session.play("campon-busy-again", "campon-on")
        session.hangup()

    return app


def _offer(ctx: Context, caller: str, callee: str) -> App:
    """The busy announcement with the camp-on offer: 5 asks for the callback."""

    async def app(session: Session) -> None:
        key = await session.play("campon-offer", interruptible=True)
        if key is None and not session.hung_up:
            key = (await session.collect(1, first_timeout=OFFER_WAIT)) or None
        if key == OFFER_KEY:
            why = add(ctx, caller, callee, "busy")
            await session.play("campon-on" if why is None else "campon-full")
        session.hangup()

    return app


class CampOn(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.code == "*83":
            cancel(ctx, dial.extension, dial.arg)
            return Answer(confirm("campon-off"), "campon")
        callee, why = dial.arg, "busy"
        if not callee:
            b = book(ctx)
            _prune(ctx, b)
            last = b.last.get(dial.extension)
            if last is None:
                return Reject(404, "no busy number to call back")
            callee, why = last[0], last[1]
        if not callee.isdigit() or len(callee) > 16:
            return Reject(404, "no such extension")
        refused = add(ctx, dial.extension, callee, why)
        if refused == "too many callback requests":
            return Answer(confirm("campon-full"), "campon")
        if refused is not None:
            return Reject(404 if refused == "no such extension" else 403, refused)
        return Answer(confirm("campon-on"), "campon")

    def unanswered(self, ctx: Context, call: CallInfo, extension: str, why: Why) -> Decision | None:
        if not call.from_extension or why not in (Why.BUSY, Why.NO_ANSWER):
            return None
        caller = call.caller_number
        if caller == extension or ctx.extension(caller) is None:
            return None
        b = book(ctx)
        if caller not in b.last and len(b.last) >= MAX_LAST:
            _prune(ctx, b)
            if len(b.last) >= MAX_LAST:
                b.last.pop(next(iter(b.last)))
        b.last.pop(caller, None)  # newest last: the oldest is dropped first
        b.last[caller] = (extension, "busy" if why is Why.BUSY else "no answer", ctx.now())
        calling_back = any(
            r.caller == caller and r.callee == extension and r.state == "calling"
            for r in b.requests
        )
        if why is Why.BUSY and ctx.setting("campon_offer") == "yes" and not calling_back:
            return Answer(_offer(ctx, caller, extension), "campon")
        return None

    def call_ended(self, ctx: Context, record: Any) -> None:
        parties = {str(record.get(k, "")).partition("@")[0] for k in ("caller", "callee")}
        for r in book(ctx).requests:
            if r.callee in parties:
                r.active = True  # the callee used its phone (CCNR waits for this)
        scan(ctx)

    def status(self, ctx: Context) -> dict[str, Any]:
        b = book(ctx)
        _prune(ctx, b)
        now = ctx.now()
        return {
            "requests": [
                {
                    "caller": r.caller,
                    "callee": r.callee,
                    "why": r.why,
                    "state": r.state,
                    "callbacks": r.callbacks,
                    "expires_in": round(max(0.0, r.expires - now)),
                }
                for r in b.requests
            ]
        }


FEATURE = CampOn(
    name="campon",
    codes={
        "*82": "+ extension (or alone: the last busy one you called): call me back when it is free",
        "*83": "cancel my callback requests (+ extension: that one)",
    },
    settings=(
        Setting(
            "campon_expire_minutes",
            int,
            30,
            "minutes a camp-on (callback) request waits before it is dropped",
            lo=1,
            hi=1440,
        ),
        Setting(
            "campon_offer",
            str,
            "no",
            "yes: an internal caller who finds an extension busy hears an offer and "
            "presses 5 to be called back (instead of forward on busy and voicemail)",
            choices=("no", "yes"),
        ),
    ),
)
