"""Compact indexes for checking tables row by row.

Checking a table needs to remember a little about every row (is this key taken, is
this user known) but not the row itself. `HashSet` keeps a 64-bit hash per entry in
one flat array (11 to 21 bytes an entry, where a Python set of tuples of strings
costs hundreds), so checking a table of a million rows costs tens of megabytes,
never a copy of the table.

A hash proves nothing equal: `Duplicates` only suspects a key whose hash was seen
before, and a second pass (made only when there is a suspect) compares the keys
themselves, so a collision never reports a duplicate that is not one. A membership
test (`key in HashSet`) can be fooled by a collision with odds of about n / 2**64
per lookup (n entries): 1 in 10**13 for a million subscribers.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Hashable


def key_hash(key: object) -> int:
    """A 64-bit hash of a key (stable across runs; never 0)."""
    digest = hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class HashSet:
    """A set of 64-bit hashes (as from `key_hash`) in an open-addressing array."""

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * 64))
        self._mask = 63
        self.count = 0

    def add(self, h: int) -> bool:
        """Add a hash; False if it was there already."""
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            v = slots[i]
            if v == 0:
                slots[i] = h
                self.count += 1
                if self.count * 4 > len(slots) * 3:  # at most 3/4 full
                    self._grow()
                return True
            if v == h:
                return False
            i = (i + 1) & mask

    def __contains__(self, h: int) -> bool:
        slots, mask = self._slots, self._mask
        i = h & mask
        while True:
            v = slots[i]
            if v == h:
                return True
            if v == 0:
                return False
            i = (i + 1) & mask

    def __len__(self) -> int:
        return self.count

    def _grow(self) -> None:
        old = self._slots
        self._slots = array("Q", bytes(16 * len(old)))
        self._mask = len(self._slots) - 1
        self.count = 0
        for v in old:
            if v:
                self.add(v)


class Duplicates:
    """Finds rows whose key an earlier row has. First pass: `add` every key. Only if
    `suspects` is not empty, a second pass over the same rows in the same order:
    `again(key, line)` is the line of the first row with that key, or None."""

    def __init__(self) -> None:
        self.seen = HashSet()
        self.suspects: set[int] = set()
        self._first: dict[Hashable, int] = {}

    def add(self, key: Hashable) -> None:
        h = key_hash(key)
        if not self.seen.add(h):
            self.suspects.add(h)

    def again(self, key: Hashable, line: int) -> int | None:
        if not self.suspects or key_hash(key) not in self.suspects:
            return None
        first = self._first.get(key)
        if first is None:
            self._first[key] = line
        return first
