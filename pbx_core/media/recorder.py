"""Recording what a phone sends: a WAV file written through a jitter buffer.

The file appears under its name only when complete: it is written as NAME.part,
its header fixed up, fsynced, then renamed, so a crash or power cut never leaves a
truncated recording under the real name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from pbx_core.media.codecs import CODECS
from pbx_core.media.jitter import JitterBuffer
from pbx_core.media.wav import wav_header

__all__ = ["DoneCallback", "Recorder"]

DoneCallback = Callable[[], None]


class Recorder:
    """Writes what a leg receives to a WAV file through a jitter buffer; the file
    appears under its name only when complete (written as NAME.part, renamed)."""

    def __init__(
        self, path: Path, fmt: str, max_samples: int | None, on_done: DoneCallback | None
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.part = path.with_name(path.name + ".part")
        self.file = self.part.open("wb")
        self.file.write(wav_header(fmt, 0))
        self.samples = 0
        self.max_samples = max_samples
        self.on_done = on_done
        self.jitter = JitterBuffer()

    def write(self, codec: str, payload: bytes | None, samples: int) -> bool:
        """Append a frame (None: silence); False once the length limit is reached."""
        if self.max_samples is not None:
            samples = min(samples, self.max_samples - self.samples)
        if samples <= 0:
            return False
        c = CODECS[codec]
        pcm = c.decode(payload[:samples]) if payload is not None else bytes(2 * samples)
        if len(pcm) < 2 * samples:
            pcm += bytes(2 * samples - len(pcm))
        if self.fmt == "pcm":
            self.file.write(pcm)
        else:
            self.file.write(CODECS["PCMU" if self.fmt == "ulaw" else "PCMA"].encode(pcm))
        self.samples += samples
        return self.max_samples is None or self.samples < self.max_samples

    def finish(self) -> None:
        width = 2 if self.fmt == "pcm" else 1
        if (self.samples * width) & 1:
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
