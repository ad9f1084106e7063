"""The harness's clocks: timers fire in order, each at its own time, and asyncio's
sleeps and timeouts run on the clock the test moves (no real seconds pass)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.harness.clock import START, ClockLoop, FakeLoop


def test_fake_loop_fires_timers_in_order_at_their_time() -> None:
    loop = FakeLoop()
    fired: list[tuple[str, float]] = []
    loop.call_later(2.0, lambda: fired.append(("b", loop.time())))
    loop.call_later(1.0, lambda: fired.append(("a", loop.time())))
    h = loop.call_later(1.5, lambda: fired.append(("cancelled", loop.time())))
    h.cancel()
    loop.advance(1.9)
    assert fired == [("a", START + 1.0)]
    loop.advance(0.2)
    assert fired == [("a", START + 1.0), ("b", START + 2.0)]
    assert loop.time() == pytest.approx(START + 2.1)


def test_clock_loop_runs_asyncio_on_the_test_clock() -> None:
    loop = ClockLoop()
    try:
        seen: list[tuple[str, float]] = []

        async def sleeper() -> None:
            await asyncio.sleep(30)
            seen.append(("slept", loop.time()))
            try:
                await asyncio.wait_for(asyncio.Event().wait(), 5)
            except TimeoutError:
                seen.append(("timed out", loop.time()))

        real = time.monotonic()
        task = loop.run(loop.create_task, sleeper())
        loop.advance(29.9)
        assert seen == []
        loop.advance(0.2)
        assert seen == [("slept", START + 30)]
        loop.advance(5)
        assert seen[-1] == ("timed out", START + 35)
        assert task.done()
        assert time.monotonic() - real < 5  # 35 clock seconds, no real ones
        fired: list[float] = []
        loop.call_later(3, lambda: fired.append(loop.time()))
        loop.call_later(1, lambda: fired.append(loop.time()))
        loop.advance(10)
        assert fired == [loop.now - 9, loop.now - 7]
    finally:
        loop.close()


def test_clock_loop_runs_calls_inside_the_running_loop() -> None:
    loop = ClockLoop()
    try:
        assert loop.run(asyncio.get_running_loop) is loop
    finally:
        loop.close()
