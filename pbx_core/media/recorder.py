"""Recording audio to a WAV file: what a phone sends (through a jitter buffer) or a
bridge's mix, with the end conditions voicemail needs.

The file appears under its name only when complete: it is written as NAME.part,
its header fixed up, fsynced, then renamed, so a crash or power cut never leaves a
truncated recording under the real name.

End conditions (each gives the ``Recording.reason``):

* ``"max"``     — ``max_seconds`` of audio written;
* ``"silence"`` — after speech (at least ``SPEECH_MS`` of frames louder than
  ``silence_db``), ``silence_seconds`` of quieter audio in a row; or, before any
  speech, ``initial_silence`` seconds.  The quiet run it waited for is cut off the
  file (a recording with no speech at all ends up empty: 0 seconds);
* ``"key"``     — the phone pressed one of ``terminators`` (the leg checks);
* ``"stopped"`` — ``stop_record()``; ``"closed"`` — the leg or bridge closed (the
  call hung up); ``"error"`` — the disk failed (``path`` is None, nothing appears).

Loudness is the RMS of each decoded frame in dB below full scale (a -42 dBFS default
threshold is about Asterisk's 256; line noise of a quiet phone is -60 dBFS or less).
"""

from __future__ import annotations

import contextlib
import logging
import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbx_core.media.codecs import CODECS
from pbx_core.media.errors import MediaError
from pbx_core.media.jitter import JitterBuffer
from pbx_core.media.mixer import samples as pcm_samples
from pbx_core.media.wav import wav_header

log = logging.getLogger("pbx.media")

__all__ = [
    "MAX_RECORD_SECONDS",
    "SPEECH_MS",
    "TERMINATOR_DIGITS",
    "DoneCallback",
    "RecordDone",
    "Recorder",
    "Recording",
]

DoneCallback = Callable[[], None]
MAX_RECORD_SECONDS = 4 * 3600  # a bound on max_seconds / silence options
MAX_PAYLOAD = 960  # samples in one RTP payload at most (120 ms, the longest ptime)
SPEECH_MS = 100  # loud audio needed before trailing silence can end a recording
TERMINATOR_DIGITS = frozenset("0123456789*#ABCD")
REASONS = ("max", "silence", "key", "stopped", "closed", "error")


@dataclass(frozen=True, slots=True)
class Recording:
    """How a recording ended: the file (None if it could not be written), its length
    in seconds (after trimming) and why it ended (``REASONS``); ``digit`` is the
    terminator pressed when ``reason == "key"``."""

    path: Path | None
    seconds: float
    reason: str
    digit: str | None = None


RecordDone = Callable[[Recording], None]


def _seconds(value: float | None, what: str, minimum: float = 0.0) -> int | None:
    """An option in seconds as samples, bounded (MediaError otherwise)."""
    if value is None:
        return None
    if not (minimum < value <= MAX_RECORD_SECONDS) or math.isnan(value):
        raise MediaError(f"{what} must be in ({minimum:g}, {MAX_RECORD_SECONDS}] seconds")
    return max(1, int(value * 8000))


MAX_SWEPT = 1000  # .part files removed at one start (a card holds a few)


def remove_partial(root: Path) -> int:
    """Remove the `.part` files a power cut or crash left in `root` and its
    subdirectories one level down (recordings/<feature>/): recordings that were never
    completed, which nothing counts against a quota. The number removed."""
    removed = 0
    try:
        found = [*root.glob("*.part"), *root.glob("*/*.part")][:MAX_SWEPT]
    except OSError:
        return 0
    for part in found:
        try:
            part.unlink()
        except OSError as exc:
            log.warning("cannot remove the unfinished recording %s: %s", part, exc.strerror)
        else:
            removed += 1
    if removed:
        log.warning("removed %d unfinished recording(s) under %s (a power cut?)", removed, root)
    return removed


class Recorder:
    """Writes 8 kHz audio to NAME.part and renames it when complete (see module doc).

    ``feed`` takes RTP payloads through the jitter buffer, ``write``/``write_pcm``
    take frames in order; each returns the end reason once one is reached (the owner
    then calls ``close``)."""

    def __init__(
        self,
        path: Path,
        fmt: str = "pcm",
        *,
        max_seconds: float | None = None,
        silence_seconds: float | None = None,
        silence_db: float = -42.0,
        initial_silence: float | None = None,
        terminators: str = "",
        on_done: RecordDone | None = None,
    ) -> None:
        if fmt not in ("pcm", "ulaw", "alaw"):
            raise MediaError(f"unknown recording format {fmt!r} (pcm, ulaw, alaw)")
        bad = set(terminators.upper()) - TERMINATOR_DIGITS
        if bad or len(terminators) > 16:
            raise MediaError(f"terminators must be DTMF digits (0-9 * # A-D), not {terminators!r}")
        if not -90.0 <= silence_db <= 0.0:
            raise MediaError("silence_db must be in [-90, 0] dBFS")
        self.max_samples = _seconds(max_seconds, "max_seconds")
        self.silence_samples = _seconds(silence_seconds, "silence_seconds")
        self.initial_samples = _seconds(initial_silence, "initial_silence")
        self.terminators = terminators.upper()
        # Mean square of a 16-bit frame at the threshold.
        self._quiet_ms = (32768.0 * 10 ** (silence_db / 20)) ** 2
        self._detect = self.silence_samples is not None or self.initial_samples is not None
        self.path = path
        self.fmt = fmt
        self.on_done = on_done
        self.part = path.with_name(path.name + ".part")
        self._header = len(wav_header(fmt, 0))
        self._width = 2 if fmt == "pcm" else 1
        try:
            self.file = self.part.open("wb")
            self.file.write(wav_header(fmt, 0))
        except OSError as exc:
            raise MediaError(f"cannot record to {path}: {exc.strerror}") from exc
        self.samples = 0
        self.loud = 0  # samples of frames above the threshold
        self.quiet_run = 0  # samples of the current run of quiet frames
        self.jitter = JitterBuffer()

    @property
    def seconds(self) -> float:
        return self.samples / 8000

    def feed(self, codec: str, ts: int, payload: bytes) -> str | None:
        """An RTP payload of ``codec`` (G.711): reordered, gaps filled with silence.
        A payload over ``MAX_PAYLOAD`` samples (120 ms) is dropped: 256 frames of
        what a datagram can hold would be 16 MB in the jitter buffer."""
        if not payload or len(payload) > MAX_PAYLOAD:
            return None
        self.jitter.put(ts, payload, len(payload))
        while (item := self.jitter.pop()) is not None:
            reason = self.write(codec, item[0], item[1])
            if reason is not None:
                return reason
        return None

    def write(self, codec: str, payload: bytes | None, samples: int) -> str | None:
        """Append a frame of ``codec`` (None: silence, at most 10 s of it)."""
        samples = min(samples, 8000 * 10)
        pcm = CODECS[codec].decode(payload[:samples]) if payload is not None else b""
        if len(pcm) < 2 * samples:
            pcm += bytes(2 * samples - len(pcm))
        return self.write_pcm(pcm)

    def write_pcm(self, pcm: bytes) -> str | None:
        """Append 16-bit LE PCM; the end reason ("max", "silence") once reached."""
        samples = len(pcm) // 2
        if self.max_samples is not None and self.samples + samples >= self.max_samples:
            samples = self.max_samples - self.samples
            pcm = pcm[: 2 * samples]
        if samples > 0:
            if self.fmt == "pcm":
                self.file.write(pcm)
            else:
                self.file.write(CODECS["PCMU" if self.fmt == "ulaw" else "PCMA"].encode(pcm))
            self.samples += samples
            if self._detect:
                a = pcm_samples(pcm)
                if sum(map(operator.mul, a, a)) > self._quiet_ms * samples:
                    self.loud += samples
                    self.quiet_run = 0
                else:
                    self.quiet_run += samples
        if self.max_samples is not None and self.samples >= self.max_samples:
            return "max"
        if self.loud >= SPEECH_MS * 8:
            if self.silence_samples is not None and self.quiet_run >= self.silence_samples:
                return "silence"
        elif self.initial_samples is not None and self.samples >= self.initial_samples:
            return "silence"
        return None

    def close(self, reason: str, digit: str | None = None, codec: str = "PCMU") -> Recording:
        """Write what the jitter buffer still holds (unless the end was reached), fix
        the header, rename the file into place; then ``on_done(Recording)``."""
        if reason == "error":
            self.abort()
            return Recording(None, 0.0, "error", None)
        try:
            if reason in ("stopped", "closed", "key"):
                for payload, samples in self.jitter.flush():
                    if self.write(codec, payload, samples) == "max":
                        break
            if reason == "silence":
                self.samples -= min(self.quiet_run, self.samples)  # the wait, cut off
                self.file.truncate(self._header + self.samples * self._width)
                self.file.seek(0, os.SEEK_END)
            self._finish()
            result = Recording(self.path, self.seconds, reason, digit)
        except OSError:
            self.abort()
            result = Recording(None, 0.0, "error", None)
        return result

    def notify(self, result: Recording) -> None:
        """Call ``on_done(result)`` (an exception in it is logged)."""
        if self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:
                log.exception("record callback failed")

    def _finish(self) -> None:
        if (self.samples * self._width) & 1:
            self.file.write(b"\x00")
        self.file.seek(0)
        self.file.write(wav_header(self.fmt, self.samples))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.part.replace(self.path)

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            self.part.unlink()
