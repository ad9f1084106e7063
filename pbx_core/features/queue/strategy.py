"""Which agent(s) a waiting caller is offered to: the queue's strategy over the
agents free now (logged in, registered, not in a call or ringing, past their wrap-up,
not yet tried in this caller's round), lowest penalty first. Pure: the caller of
`choose` keeps the figures it reads (`Figures`) and the round-robin memory."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear")
_rng = random.SystemRandom()


@dataclass
class Figures:
    """What the strategies read of one agent in one queue."""

    calls: int = 0  # calls taken from this queue
    last_end: float | None = None  # when its last call from this queue ended


def choose(
    strategy: str,
    members: Sequence[tuple[str, int]],
    free: Sequence[str],
    figures: Mapping[str, Figures],
    last: str | None,
    rng: random.Random = _rng,
) -> tuple[str, ...]:
    """The agents to ring now: `members` are (extension, penalty) in the table's
    order, `free` those that may ring now, `last` the agent rrmemory offered last."""
    order = [m for m, _p in members]
    pens = dict(members)
    avail = [m for m in order if m in free]
    if not avail:
        return ()
    if strategy == "linear":
        return (min(avail, key=lambda m: (pens[m], order.index(m))),)
    best = min(pens[m] for m in avail)
    tier = [m for m in avail if pens[m] == best]
    if strategy == "ringall":
        return tuple(tier)
    if strategy == "random":
        return (rng.choice(tier),)
    if strategy == "rrmemory":
        start = order.index(last) + 1 if last in order else 0
        for i in range(len(order)):
            m = order[(start + i) % len(order)]
            if m in tier:
                return (m,)
        return ()
    if strategy == "fewestcalls":
        return (min(tier, key=lambda m: (figures.get(m, Figures()).calls, order.index(m))),)
    # leastrecent: the agent whose last call ended longest ago (never: first)

    def ended(m: str) -> float:
        got = figures.get(m, Figures()).last_end
        return float("-inf") if got is None else got

    return (min(tier, key=lambda m: (ended(m), order.index(m))),)
