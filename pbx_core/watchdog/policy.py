"""The restart policy, in the spirit of OpenWrt procd's respawn (threshold, timeout,
retry): wait `delay` before each restart; more than `limit` restarts within `window`
seconds means a crash loop, and the supervisor gives up (stops feeding the hardware
watchdog, so the box resets). Time is an argument (STYLE 2): tests use a fake clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    delay: float = 2.0
    window: float = 300.0
    limit: int = 5
    restarts: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.delay < 0 or self.window <= 0 or self.limit < 1:
            raise ValueError("restart policy: delay >= 0, window > 0 and limit >= 1")

    def _forget(self, now: float) -> None:
        while self.restarts and self.restarts[0] <= now - self.window:
            self.restarts.popleft()

    def recent(self, now: float) -> int:
        """Restarts within the window ending now."""
        self._forget(now)
        return len(self.restarts)

    def record(self, now: float) -> bool:
        """A restart is wanted at `now`; False when it would exceed the limit (give up)."""
        self._forget(now)
        if len(self.restarts) >= self.limit:
            return False
        self.restarts.append(now)
        return True

    def retry_at(self, now: float) -> float:
        """When a gave-up supervisor may try again: once the window has forgotten the
        oldest restart (only matters without a hardware watchdog to reset the box)."""
        self._forget(now)
        return self.restarts[0] + self.window if self.restarts else now
