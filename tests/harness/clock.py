"""Clocks the test moves.

`FakeLoop` is only the timers of an event loop (`time`, `call_at`, `call_later`):
enough for code that schedules callbacks and never awaits (CallManager without media).

`ClockLoop` is a real asyncio selector loop (sockets, tasks, futures) whose `time()`
is a number the test advances: `asyncio.sleep`, `wait_for` and every `call_later` run
on it, so a 20 s ring timeout fires in `advance(20)` at once. Nothing runs between
calls: the test drives the loop with `run(fn)` (call `fn` inside the loop, then let
everything that became ready run) and `advance(seconds)` (fire the timers due, in
order, each at its own time).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

START = 1000.0  # a clock that does not start at zero catches "0 means unset" bugs


class Handle:
    def __init__(self, when: float, cb: Callable[[], None]) -> None:
        self.when, self.cb, self.cancelled = when, cb, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The event loop's timers, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = START
        self._heap: list[tuple[float, int, Handle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[..., None], *args: object) -> Handle:
        handle = Handle(when, lambda: cb(*args))
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        return handle

    def call_later(self, delay: float, cb: Callable[..., None], *args: object) -> Handle:
        return self.call_at(self.now + delay, cb, *args)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _n, handle = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.cb()
        self.now = end


class ClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a clock the test moves (see the module docstring)."""

    MAX_ROUNDS = 100_000  # rounds of one settle(): a busy loop is a bug the test sees

    def __init__(self) -> None:
        super().__init__()
        self.now = START

    def time(self) -> float:
        return self.now

    def _round(self) -> None:
        # stop() before run_forever(): exactly one iteration, polling with timeout 0.
        self.stop()
        self.run_forever()

    def settle(self) -> None:
        """Run everything ready now (callbacks, tasks' steps, readable sockets)
        until nothing is; no time passes."""
        ready: Any = self._ready  # type: ignore[attr-defined]  # asyncio's run queue
        for _ in range(self.MAX_ROUNDS):
            self._round()
            if not ready:
                return
        raise RuntimeError("the loop never settles: something reschedules itself at once")

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call `fn(*args)` inside the running loop (get_running_loop works, tasks
        start), settle, and return what it returned."""
        box: list[Any] = []
        self.call_soon(lambda: box.append(fn(*args)))
        self.settle()
        return box[0] if box else None

    def next_timer(self) -> float | None:
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        live = [h.when() for h in scheduled if not h.cancelled()]
        return min(live) if live else None

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` on, firing each timer due at its own time."""
        end = self.now + seconds
        self.settle()
        for _ in range(self.MAX_ROUNDS):
            when = self.next_timer()
            if when is None or when > end:
                break
            self.now = max(self.now, when)
            self.settle()
        else:
            raise RuntimeError("timers keep firing without the clock moving")
        self.now = end
        self.settle()
