"""Audio the engine plays: decoded once, encoded once per codec, served as slices.

``Audio`` is immutable 8 kHz mono 16-bit PCM; ``encoded(codec)`` caches the whole
clip in a G.711 law, so a player's per-frame work is a slice.  Sources give the next
frame of a leg's output (``frame(codec, samples)``; None when finished).
"""

from __future__ import annotations

from pbx_core.media.codecs import CODECS
from pbx_core.media.dtmf import DTMF_FREQUENCIES, MAX_PRESS_MS
from pbx_core.media.errors import MediaError
from pbx_core.media.tones import Tone, render
from pbx_core.media.wav import parse_wav

__all__ = ["Audio", "AudioSource", "Interrupt", "Source"]


class Audio:
    """An immutable clip of 8 kHz mono 16-bit little-endian PCM."""

    __slots__ = ("_encoded", "name", "pcm")

    def __init__(self, pcm: bytes, name: str = "audio") -> None:
        self.pcm = pcm[: len(pcm) & ~1]
        self.name = name
        self._encoded: dict[str, bytes] = {}

    @classmethod
    def from_wav(cls, data: bytes, name: str = "WAV file") -> Audio:
        return cls(parse_wav(data, name).pcm, name)

    @classmethod
    def from_tone(cls, tone: Tone, name: str = "tone") -> Audio:
        return cls(render(tone), name)

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    @property
    def seconds(self) -> float:
        return self.samples / 8000

    def encoded(self, codec: str) -> bytes:
        found = self._encoded.get(codec)
        if found is None:
            c = CODECS.get(codec)
            if c is None:
                raise MediaError(f"cannot play audio into a {codec} stream (G.711 only)")
            found = self._encoded[codec] = c.encode(self.pcm)
        return found


class Source:
    """The next frames of a leg's own output."""

    def frame(self, codec: str, samples: int) -> bytes | None:
        raise NotImplementedError


class AudioSource(Source):
    """Plays an Audio clip once or in a loop (the tail frame is padded with silence)."""

    __slots__ = ("audio", "loop", "pos")

    def __init__(self, audio: Audio, loop: bool = False) -> None:
        if loop and audio.samples == 0:
            raise MediaError(f"cannot loop the empty clip {audio.name!r}")
        self.audio = audio
        self.loop = loop
        self.pos = 0

    def frame(self, codec: str, samples: int) -> bytes | None:
        """The next ``samples`` bytes of G.711 (one byte per sample), None when a clip
        played once has ended. Linear in ``samples`` whatever the clip's length: a
        looped short clip is copied piece by piece into one buffer."""
        data = self.audio.encoded(codec)
        total = len(data)
        if self.pos >= total:
            if not self.loop:
                return None
            self.pos = 0
        end = self.pos + samples
        if end <= total:
            chunk = data[self.pos : end]
            self.pos = end
            return chunk
        out = bytearray(data[self.pos :])
        if self.loop:
            out += data * ((samples - len(out)) // total)  # whole repeats at once
            need = samples - len(out)
            out += data[:need]
            self.pos = need
        else:
            self.pos = total
            out += (b"\xff" if codec == "PCMU" else b"\xd5") * (samples - len(out))
        return bytes(out)


class Interrupt(Source):
    """A short source played over another, which resumes where it was after it."""

    __slots__ = ("first", "then")

    def __init__(self, first: Source, then: Source) -> None:
        self.first: Source | None = first
        self.then = then

    def frame(self, codec: str, samples: int) -> bytes | None:
        if self.first is not None:
            f = self.first.frame(codec, samples)
            if f is not None:
                return f
            self.first = None
        return self.then.frame(codec, samples)


def dtmf_audio(digit: str, ms: int = 100) -> Audio:
    """A key press as audio (Q.23 pair at -10 dBm0 per tone), for phones without
    telephone-event), at most MAX_PRESS_MS long."""
    ms = min(ms, MAX_PRESS_MS)
    low, high = DTMF_FREQUENCIES[digit]
    tone = Tone((low, high), ((ms, 0),), repeat=False, level_dbm0=-10.0)
    return Audio.from_tone(tone, f"dtmf {digit}")
