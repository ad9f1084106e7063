"""A jitter buffer for audio the PBX consumes (recording, mixing, in-band DTMF),
sans-IO.  Pure relay does not use it: the far phone has its own.

Theory of operation
-------------------
Frames are filed by RTP timestamp, relative to the next timestamp to play out
(``ts_delta``, so 32-bit wraparound is harmless).  ``pop`` gives frames strictly in
timestamp order: the next frame when it is there; a gap (``(None, samples)``) once
the buffer holds ``depth`` samples beyond the hole, so a lost packet costs at most
``depth`` of delay; None while it is still filling.  A frame older than the playout
point is late and dropped; a jump beyond ``max_span`` (a restarted sender) flushes
and restarts at the new timestamp.  At most ``MAX_FRAMES`` frames are held (each
pop re-files them, so the count bounds the work a packet costs); more are dropped
and counted in ``overflows``.  ``flush`` at the end gives everything left,
gaps included.
"""

from __future__ import annotations

from pbx_core.media.rtp import ts_delta

__all__ = ["MAX_FRAMES", "JitterBuffer"]

MAX_FRAMES = 256  # 5 s of 20 ms frames


class JitterBuffer:
    __slots__ = (
        "_frames",
        "depth",
        "duplicates",
        "late",
        "max_span",
        "next_ts",
        "overflows",
        "restarts",
    )

    def __init__(self, depth: int = 480, max_span: int = 8000 * 4) -> None:
        self.depth = depth  # samples held back before declaring a hole lost
        self.max_span = max_span
        self.next_ts: int | None = None
        self._frames: dict[int, tuple[bytes, int]] = {}  # offset from next_ts -> frame
        self.late = 0
        self.duplicates = 0
        self.restarts = 0
        self.overflows = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, timestamp: int, payload: bytes, samples: int) -> bool:
        """File a frame; False if it was late or a duplicate."""
        if self.next_ts is None:
            self.next_ts = timestamp
        offset = ts_delta(self.next_ts, timestamp)
        if offset < 0:
            self.late += 1
            return False
        if offset > self.max_span:
            self.restarts += 1
            self._frames.clear()
            self.next_ts = timestamp
            offset = 0
        if offset in self._frames:
            self.duplicates += 1
            return False
        if len(self._frames) >= MAX_FRAMES:
            self.overflows += 1
            return False
        self._frames[offset] = (payload, samples)
        return True

    def _span(self) -> int:
        last = max(self._frames)
        return last + self._frames[last][1]

    def span(self) -> int:
        """Samples from the playout point to the end of the last frame held."""
        return self._span() if self._frames else 0

    def reset(self) -> None:
        """Forget everything: the next frame put starts a new playout point."""
        self._frames.clear()
        self.next_ts = None

    def pop(self, force: bool = False) -> tuple[bytes | None, int] | None:
        """The next frame ``(payload, samples)``, a gap ``(None, samples)``, or None
        when nothing can be given yet (``force``: give a gap rather than wait)."""
        if self.next_ts is None or not self._frames:
            return None
        frame = self._frames.pop(0, None)
        if frame is not None:
            self._advance(frame[1])
            return frame
        if not force and self._span() < self.depth:
            return None
        gap = min(self._frames)
        self._advance(gap)
        return None, gap

    def _advance(self, samples: int) -> None:
        self.next_ts = ((self.next_ts or 0) + samples) & 0xFFFFFFFF
        if self._frames:
            self._frames = {k - samples: v for k, v in self._frames.items() if k >= samples}

    def flush(self) -> list[tuple[bytes | None, int]]:
        """Everything still buffered, in order, with its gaps."""
        out = []
        while self._frames:
            item = self.pop(force=True)
            if item is None:
                break
            out.append(item)
        return out
