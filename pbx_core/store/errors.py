"""Errors of the store.

Everything the store raises on purpose is a `StoreError`. Problems found in dbtext
tables are `DbTextError`s: they name the file, line and column (1-based, like a
compiler) and say what was expected. `MultiError` carries every problem found in one
pass, so `pbx db check` can print them all at once; it is itself a `DbTextError` (the
first problem), so callers that want one error type catch `DbTextError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class StoreError(Exception):
    """Base of everything the store raises on purpose."""


class DbTextError(StoreError):
    """A problem at a place in a dbtext file. `line`/`column` are 1-based; 0 = unknown."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(self.location() + message)

    def location(self) -> str:
        if self.line and self.column:
            return f"{self.file}:{self.line}:{self.column}: "
        if self.line:
            return f"{self.file}:{self.line}: "
        return f"{self.file}: "

    def __str__(self) -> str:
        return self.location() + self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.file!r}, {self.line}, {self.column}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DbTextError):
            return NotImplemented
        return (self.file, self.line, self.column, self.message) == (
            other.file,
            other.line,
            other.column,
            other.message,
        )

    def __hash__(self) -> int:
        return hash((self.file, self.line, self.column, self.message))


class MultiError(DbTextError):
    """Several problems found in one pass; behaves as the first one."""

    def __init__(self, errors: Sequence[DbTextError]) -> None:
        if not errors:
            raise ValueError("MultiError needs at least one error")
        first = errors[0]
        self.errors: tuple[DbTextError, ...] = tuple(errors)
        super().__init__(first.file, first.line, first.column, first.message)

    def __str__(self) -> str:
        more = len(self.errors) - 1
        base = super().__str__()
        return f"{base} (and {more} more)" if more else base


def raise_all(errors: Sequence[DbTextError]) -> None:
    """Raise the one error, or all of them as `MultiError`; do nothing if none."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise MultiError(errors)


class Capped(list[DbTextError]):
    """Problems, of which the first `limit` are kept and the rest only counted: a
    table with a million bad rows costs a page of messages, not a million."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def append(self, error: DbTextError) -> None:
        if len(self) < self.limit:
            super().append(error)
        else:
            self.dropped += 1

    def extend(self, errors: Iterable[DbTextError]) -> None:
        for e in errors:
            self.append(e)

    def closed(self, where: str, what: str = "problems") -> list[DbTextError]:
        """The kept problems, and one saying how many more there were."""
        more = [DbTextError(where, 0, 0, f"{self.dropped} more {what} not shown")]
        return list(self) + (more if self.dropped else [])
