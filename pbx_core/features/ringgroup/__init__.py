"""Ring groups (`pbx_ring_group`): the destination type `group`, rung with the group's
strategy for its ring time per step, then its failover destination. See README.md.

| strategy | rings |
|---|---|
| `ringall` | every member at once, for `ring_timeout` |
| `hunt` | one member after another, each for `ring_timeout` |
| `memoryhunt` | the first, then the first two, then the first three … (FreePBX's memoryhunt) |
| `random` | one member after another in a random order |
| `firstavailable` | the first member that is registered and not in a call, alone |

Members with do-not-disturb on, or with call waiting off while in a call, are skipped
(the core asks `before_ring` for each); members' own forwards do not apply in a group.
"""

from __future__ import annotations

import random

from pbx_core.features.api import (
    CallInfo,
    Context,
    Decision,
    Destination,
    Feature,
    Hunt,
    Reject,
    Step,
)

STRATEGIES = ("ringall", "hunt", "memoryhunt", "random", "firstavailable")
_rng = random.SystemRandom()


def steps(ctx: Context, strategy: str, members: tuple[str, ...], timeout: float) -> list[Step]:
    if strategy == "hunt":
        return [Step((m,), timeout) for m in members]
    if strategy == "memoryhunt":
        return [Step(members[: i + 1], timeout) for i in range(len(members))]
    if strategy == "random":
        order = list(members)
        _rng.shuffle(order)
        return [Step((m,), timeout) for m in order]
    if strategy == "firstavailable":
        for m in members:
            if ctx.registered(m) and not ctx.in_call(m):
                return [Step((m,), timeout)]
        return []
    return [Step(members, timeout)] if members else []  # ringall


class RingGroups(Feature):
    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        group = ctx.group(dest.target or "")
        if group is None:
            return Reject(404, f"no ring group {dest.target}")
        members = tuple(group["members"])
        timeout = float(group["ring_timeout"])
        strategy = str(group["strategy"])
        plan = steps(ctx, strategy, members, timeout)
        fallback_type = group.get("fallback_type")
        failover = None
        if fallback_type and fallback_type != "hangup":
            failover = Destination(str(fallback_type), group.get("fallback"))
        busy = strategy == "firstavailable" and not plan
        return Hunt(tuple(plan), failover, 486 if busy else 480)


FEATURE = RingGroups(name="ringgroup", destination_types=("group",))
