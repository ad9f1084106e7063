"""The restart policy on a fake clock (time is an argument)."""

from __future__ import annotations

import pytest

from pbx_core.watchdog.policy import RestartPolicy


def test_limit_within_the_window_then_give_up() -> None:
    p = RestartPolicy(delay=1, window=60, limit=3)
    assert [p.record(t) for t in (0.0, 10.0, 20.0)] == [True, True, True]
    assert p.recent(20.0) == 3
    assert p.record(30.0) is False  # a fourth restart within 60 s is a crash loop
    assert p.recent(30.0) == 3  # a refused restart is not counted


def test_old_restarts_leave_the_window() -> None:
    p = RestartPolicy(delay=1, window=60, limit=2)
    assert p.record(0.0) and p.record(50.0)
    assert not p.record(59.9)
    assert p.retry_at(59.9) == 60.0  # when the restart at 0 leaves the window
    assert p.record(60.0)  # the one at 0 s has left the window
    assert p.recent(60.0) == 2
    assert p.recent(200.0) == 0


def test_retry_at_without_restarts_is_now() -> None:
    assert RestartPolicy().retry_at(5.0) == 5.0


@pytest.mark.parametrize(("delay", "window", "limit"), [(-1, 60, 3), (1, 0, 3), (1, 60, 0)])
def test_nonsense_is_refused(delay: float, window: float, limit: int) -> None:
    with pytest.raises(ValueError, match="restart policy"):
        RestartPolicy(delay, window, limit)
