"""The RTP port allocator: even RTP ports with RTCP on the odd port above (RFC 3550
§11), over a configured range, sans-IO (binding is the caller's job).

Ports are handed out round-robin, so a pair just released is the last to be reused:
stray packets of a finished call do not land in the next one.
"""

from __future__ import annotations

from collections.abc import Iterator

from pbx_core.media.errors import MediaError

__all__ = ["PortAllocator"]


class PortAllocator:
    def __init__(self, port_min: int, port_max: int) -> None:
        first = port_min + (port_min & 1)
        if not (1024 <= port_min <= port_max <= 65535) or first + 1 > port_max:
            raise MediaError(
                f"RTP port range {port_min}-{port_max} must lie in 1024-65535 and hold "
                "at least one even/odd pair"
            )
        self.first = first
        self.count = (port_max - first + 1) // 2
        self._used: set[int] = set()
        self._next = 0

    @property
    def in_use(self) -> int:
        return len(self._used)

    @property
    def free(self) -> int:
        return self.count - len(self._used)

    def candidates(self) -> Iterator[int]:
        """Free even ports, starting after the last one handed out (each at most once)."""
        for i in range(self.count):
            index = (self._next + i) % self.count
            port = self.first + 2 * index
            if port not in self._used:
                yield port

    def take(self, port: int) -> None:
        """Mark a candidate as in use (after both of its sockets were bound)."""
        if port in self._used or not self.owns(port):
            raise MediaError(f"RTP port {port} is not a free port of this allocator")
        self._used.add(port)
        self._next = ((port - self.first) // 2 + 1) % self.count

    def release(self, port: int) -> None:
        self._used.discard(port)

    def owns(self, port: int) -> bool:
        return port % 2 == self.first % 2 and 0 <= (port - self.first) // 2 < self.count
