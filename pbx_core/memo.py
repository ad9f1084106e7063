"""A bounded memo for hot paths (parsed URIs, subscriber lookups, "is this our host").

Lookups are plain dict lookups (`memo.get(key)`, `key in memo`), at C speed. `keep`
stores an entry unless its key is longer than `longest`, and empties the memo when it
holds `size` entries: cheaper than LRU bookkeeping on every hit, and what recurs is
back after a few misses. A peer sending ever new or huge keys only empties it or
bypasses it, so its memory stays bounded whatever arrives. No I/O: the sans-IO core
may use it."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(dict[K, V]):
    __slots__ = ("longest", "size")

    def __init__(self, size: int, longest: int) -> None:
        super().__init__()
        self.size = size
        self.longest = longest

    def keep(self, key: K, value: V, length: int) -> V:
        """Remember `value` for `key` (whose size in characters is `length`); returns
        `value`."""
        if length <= self.longest:
            if len(self) >= self.size:
                self.clear()
            self[key] = value
        return value
