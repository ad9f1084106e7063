"""A queue's state in RAM (per engine context): who waits, which agents ring, the
figures `pbx status` shows. Nothing here is written to flash; agents' logins are the
only persistent state (the feature's state namespace, written on `*45` only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pbx_core.features.api import Context, Session
from pbx_core.features.queue.strategy import Figures

MAX_OFFERS = 256  # agent offers in flight (tokens), all queues together


@dataclass(eq=False)
class Waiter:
    """A caller waiting in a queue."""

    session: Session
    joined: float
    offering: bool = False  # its agents ring now
    tried: set[str] = field(default_factory=set)  # agents that did not answer this round


@dataclass
class Stats:
    """One queue's figures since the daemon started."""

    answered: int = 0
    abandoned: int = 0
    timed_out: int = 0  # max_wait reached: sent to the failover
    exited: int = 0  # left with the exit digit
    refused: int = 0  # max_callers, or no agent and join_empty=refuse
    wait_total: float = 0.0  # of answered calls
    talk_total: float = 0.0
    talked: int = 0  # calls whose talk ended
    within: int = 0  # answered within the service level
    agents: dict[str, Figures] = field(default_factory=dict)
    rr_last: str | None = None

    def agent(self, ext: str) -> Figures:
        got = self.agents.get(ext)
        if got is None:
            got = self.agents[ext] = Figures()
        return got


@dataclass
class Live:
    """An answered queue call, until it ends (then the agent's wrap-up starts)."""

    queue: str
    agent: str
    answered: float
    wrapup: float


class Book:
    def __init__(self) -> None:
        self.waiting: dict[str, list[Waiter]] = {}
        self.stats: dict[str, Stats] = {}
        self.offers: dict[str, tuple[str, tuple[str, ...], float]] = {}  # token -> offer
        self.ringing: set[str] = set()  # agents rung by a queue now
        self.free_at: dict[str, float] = {}  # agent -> end of its wrap-up
        self.live: dict[str, Live] = {}  # call id -> its answered queue call
        self.serial = 0

    def queue(self, number: str) -> list[Waiter]:
        return self.waiting.setdefault(number, [])

    def stat(self, number: str) -> Stats:
        got = self.stats.get(number)
        if got is None:
            got = self.stats[number] = Stats()
        return got

    def offer(self, queue: str, agents: tuple[str, ...], ring_time: float) -> str | None:
        if len(self.offers) >= MAX_OFFERS:
            return None
        self.serial += 1
        token = str(self.serial)
        self.offers[token] = (queue, agents, ring_time)
        self.ringing.update(agents)
        return token

    def offer_done(self, token: str) -> None:
        got = self.offers.pop(token, None)
        if got is not None:
            self.ringing.difference_update(got[1])

    def figures(self, number: str, now: float) -> dict[str, Any]:
        s = self.stat(number)
        waiting = self.waiting.get(number, [])
        done = s.answered + s.abandoned
        return {
            "waiting": len(waiting),
            "longest_wait": round(max((now - w.joined for w in waiting), default=0.0), 1),
            "answered": s.answered,
            "abandoned": s.abandoned,
            "timed_out": s.timed_out,
            "exited": s.exited,
            "refused": s.refused,
            "avg_wait": round(s.wait_total / s.answered, 1) if s.answered else 0.0,
            "avg_talk": round(s.talk_total / s.talked, 1) if s.talked else 0.0,
            "service_level": round(100.0 * s.within / done, 1) if done else 100.0,
            "agents": {a: f.calls for a, f in sorted(s.agents.items())},
        }


def book(ctx: Context) -> Book:
    return ctx.memory(Book)  # RAM only: one per running PBX, none after a restart
