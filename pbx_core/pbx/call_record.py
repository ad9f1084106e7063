"""Calls recorded on demand: the `Record` answer to an in-call code (`*1`,
features/recording) starts or stops recording an answered, anchored call.

Theory of operation. The extension stays in the call: the media engine records both
phones into one WAV (`AnchoredCall.record`: a listening bridge mixes what each phone
sends; the relay is untouched and the legs decode only while recording). Files are
G.711 µ-law, 8000 bytes a second (480 000 bytes a minute, 28.8 MB an hour), in
`recordings/calls/` beside the state LMDB on /data, named
`YYYYMMDD-HHMMSS-<call>-<n>.wav` (UTC, the PBX's call id, the call's n-th recording);
each is written as `.part` and renamed when whole, and the call's CDR names it
(`Call.recordings`). A hang-up, a transfer that takes the call's media elsewhere, or
the quota ends a recording; pressing the code again stops it.

The quota (`Record.quota_minutes`: the feature's setting): before a recording
starts, and every CHECK_EVERY seconds while any runs, the oldest finished recordings
are removed until they, the recordings in progress and CHECK_EVERY more seconds of
each fit in it (at most MAX_PRUNE removals a pass: bounded work on the event loop).
A recording is never longer than the quota; when the recordings in progress alone
are over it, the longest ends (so several at once may pass it by up to CHECK_EVERY
seconds each, between two checks). Below MIN_FREE bytes free on the file system
(voicemail and the configuration share the card) a recording neither starts nor
goes on. The folder is read once (at most
MAX_FILES entries; a `.part` left by a power cut is removed), then followed in RAM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pbx_core.features.api import Record
from pbx_core.media.engine import AnchoredCall
from pbx_core.media.errors import MediaError
from pbx_core.media.recorder import MAX_RECORD_SECONDS, Recording
from pbx_core.pbx.call_state import Call, media_side, other_side
from pbx_core.pbx.cdr import MAX_RECORDINGS

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("pbx.calls")

BYTES_PER_SECOND = 8000  # G.711 µ-law, 8 kHz mono
HEADER = 58  # bytes of a G.711 WAV header (wav.py)
CHECK_EVERY = 30.0  # seconds between quota checks while recording
MIN_FREE = 8 << 20  # bytes the file system keeps free
MAX_ACTIVE = 16  # recordings at once
MAX_PER_CALL = MAX_RECORDINGS  # recordings of one call (the CDR names each)
MAX_FILES = 10_000  # entries of the folder read
MAX_PRUNE = 64  # files removed per pass
MAX_QUOTA_MINUTES = 600  # a bound on the decision's quota
SUBDIR = "calls"


def free_bytes(folder: Path) -> int:
    """Bytes free for us on `folder`'s file system (0 when it cannot be asked)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


@dataclass
class Active:
    call: Call
    media: AnchoredCall
    name: str
    since: float  # loop time it started

    def size(self, now: float) -> int:
        return HEADER + int((now - self.since) * BYTES_PER_SECOND)


class CallRecordings:
    """The calls being recorded and the recordings kept, of one CallManager."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.root: Path | None = None  # recordings/ beside the state LMDB (set by the engine)
        self.active: dict[str, Active] = {}  # by call id
        self.quota = 0  # bytes: the last decision's
        self.removed = 0  # files removed for the quota
        self._kept: list[tuple[float, str, int]] | None = None  # (mtime, name, bytes), oldest first
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ the code
    def toggle(self, call: Call, media: AnchoredCall, side: str, decision: Record) -> None:
        """`side`'s extension pressed the code: start recording `call`, or stop."""
        if call.id in self.active:
            self.stop(call.id, "the code again")
            self._beep(media, side, "off", decision.beep_both)
        elif self.start(call, media, decision.quota_minutes):
            self._beep(media, side, "on", decision.beep_both)
        else:
            self._beep(media, side, "error", False)

    def start(self, call: Call, media: AnchoredCall, quota_minutes: int) -> bool:
        """Start recording `call` (True), or say why not in the log (False)."""
        folder = self._folder()
        if folder is None:
            log.warning("call %s: not recorded: no recordings directory", call.id)
            return False
        if len(self.active) >= MAX_ACTIVE:
            log.warning("call %s: not recorded: %d calls are being recorded", call.id, MAX_ACTIVE)
            return False
        if len(call.recordings) >= MAX_PER_CALL:
            log.warning("call %s: not recorded: %d recordings of it already", call.id, MAX_PER_CALL)
            return False
        self.quota = max(1, min(int(quota_minutes), MAX_QUOTA_MINUTES)) * 60 * BYTES_PER_SECOND
        reserve = self._reserve(1)  # the new one's first seconds
        self._hold(reserve)
        if self._used() + reserve > self.quota or free_bytes(folder) < MIN_FREE + reserve:
            log.warning("call %s: not recorded: the quota or the disk is full", call.id)
            return False
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"{stamp}-{call.id}-{len(call.recordings) + 1}.wav"
        seconds = min(self.quota / BYTES_PER_SECOND, MAX_RECORD_SECONDS)
        try:
            media.record(
                folder / name,
                "ulaw",
                max_seconds=seconds,
                on_done=lambda result: self._done(call.id, name, result),
            )
        except MediaError as exc:
            log.warning("call %s: not recorded: %s", call.id, exc)
            return False
        self.active[call.id] = Active(call, media, name, self.loop.time())
        call.recordings.append(name)
        log.info("call %s: recording to %s", call.id, name)
        if self._timer is None:
            self._timer = self.loop.call_later(CHECK_EVERY, self._check)
        return True

    def stop(self, call_id: str, why: str) -> None:
        """Finish `call_id`'s recording (the file appears whole)."""
        active = self.active.get(call_id)
        if active is None:
            return
        log.info("call %s: recording %s stopped: %s", call_id, active.name, why)
        active.media.stop_record()  # -> _done
        self.active.pop(call_id, None)

    def status(self) -> dict[str, int]:
        """For `pbx status`: recordings in progress, kept (and their bytes with those
        in progress), and how many the quota removed since the start."""
        return {
            "recording": len(self.active),
            "kept": len(self._kept or ()),
            "bytes": self._used(),
            "removed": self.removed,
        }

    # ------------------------------------------------------------------ inside
    @staticmethod
    def _beep(media: AnchoredCall, side: str, kind: str, both: bool) -> None:
        sides = (side, other_side(side)) if both else (side,)
        for s in sides:
            with contextlib.suppress(MediaError):
                media.beep(media_side(s), kind)

    def _done(self, call_id: str, name: str, result: Recording) -> None:
        active = self.active.get(call_id)
        if active is not None and active.name == name:
            del self.active[call_id]
        if result.path is None:
            log.warning("call %s: recording %s failed (the disk)", call_id, name)
            if active is not None and name in active.call.recordings:
                active.call.recordings.remove(name)
            return
        log.info("call %s: recorded %s: %.0f s (%s)", call_id, name, result.seconds, result.reason)
        try:
            st = result.path.stat()
        except OSError:
            return
        if self._kept is not None:
            self._kept.append((st.st_mtime, name, st.st_size))

    def _folder(self) -> Path | None:
        if self.root is None:
            return None
        folder = self.root / SUBDIR
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("recordings directory %s: %s", folder, exc.strerror)
            return None
        if self._kept is None:
            self._kept = self._scan(folder)
        return folder

    def _scan(self, folder: Path) -> list[tuple[float, str, int]]:
        kept: list[tuple[float, str, int]] = []
        ours = {a.name + ".part" for a in self.active.values()}
        try:
            with os.scandir(folder) as it:
                for n, entry in enumerate(it):
                    if n >= MAX_FILES:
                        log.warning("%s: more than %d files; the rest not counted", folder, n)
                        break
                    if entry.name.endswith(".wav") and entry.is_file():
                        st = entry.stat()
                        kept.append((st.st_mtime, entry.name, st.st_size))
                    elif entry.name.endswith(".wav.part") and entry.name not in ours:
                        log.info("%s: removing %s (cut short)", folder, entry.name)
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
        except OSError as exc:
            log.warning("recordings directory %s: %s", folder, exc.strerror)
        kept.sort()
        return kept

    @staticmethod
    def _reserve(count: int) -> int:
        return int(count * CHECK_EVERY * BYTES_PER_SECOND)

    def _used(self) -> int:
        now = self.loop.time()
        kept = sum(size for _, _, size in self._kept or ())
        return kept + sum(a.size(now) for a in self.active.values())

    def _hold(self, reserve: int) -> None:
        """Remove the oldest kept recordings (at most MAX_PRUNE) until the kept ones,
        those in progress and `reserve` fit in the quota."""
        kept = self._kept
        if kept is None or self.root is None:
            return
        folder = self.root / SUBDIR
        over = self._used() + reserve - self.quota
        removed = 0
        while over > 0 and kept and removed < MAX_PRUNE:
            _, name, size = kept.pop(0)
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                pass  # removed by hand (or by `pbx remote`): no longer counted
            except OSError as exc:
                log.warning("recording %s not removed: %s", name, exc.strerror)
                continue
            log.info("recording %s removed (quota of %d bytes)", name, self.quota)
            over -= size
            removed += 1
        self.removed += removed

    def _check(self) -> None:
        """Every CHECK_EVERY seconds while recording: the quota and the disk."""
        self._timer = None
        if not self.active:
            return
        self._hold(self._reserve(len(self.active)))
        folder = self._folder()
        while self.active:
            self._hold(0)
            fits = self._used() <= self.quota
            if fits and folder is not None and free_bytes(folder) >= MIN_FREE:
                break
            longest = min(self.active.values(), key=lambda a: a.since)
            self.stop(longest.call.id, "the quota or the disk is full")
        if self.active:
            self._timer = self.loop.call_later(CHECK_EVERY, self._check)
