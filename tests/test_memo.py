"""The bounded memo the hot paths share (pbx_core/memo.py)."""

from __future__ import annotations

from pbx_core.memo import Memo


def test_keeps_short_keys_and_starts_over_when_full() -> None:
    memo: Memo[str, int] = Memo(3, 5)
    assert memo.keep("a", 1, 1) == 1 and memo.get("a") == 1
    assert memo.keep("toolong", 2, 7) == 2 and "toolong" not in memo  # bypassed
    memo.keep("b", 2, 1)
    memo.keep("c", 3, 1)
    assert len(memo) == 3
    memo.keep("d", 4, 1)  # full: emptied, then kept
    assert dict(memo) == {"d": 4}
