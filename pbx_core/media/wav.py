"""WAV (RIFF) files for prompts and recordings, sans-IO: bytes in, bytes out.

Read: 8 kHz mono, 16-bit PCM (format 1), µ-law (7) or A-law (6), also wrapped in
WAVE_FORMAT_EXTENSIBLE; unknown chunks are skipped.  Anything else raises WavError
with a sentence saying what the file is and what is needed (e.g. ``sox in.wav -r
8000 -c 1 -b 16 out.wav``).  Write: a header for a given format and sample count;
the recorder writes the data first and the header last.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pbx_core.media.codecs import g711
from pbx_core.media.errors import WavError

__all__ = ["FORMATS", "WavAudio", "parse_wav", "wav_bytes", "wav_header"]

FORMAT_PCM, FORMAT_ALAW, FORMAT_ULAW, FORMAT_EXTENSIBLE = 1, 6, 7, 0xFFFE
FORMATS = {"pcm": FORMAT_PCM, "alaw": FORMAT_ALAW, "ulaw": FORMAT_ULAW}
_NAMES = {v: k for k, v in FORMATS.items()}
RATE = 8000


@dataclass(frozen=True, slots=True)
class WavAudio:
    """Decoded content: 8 kHz mono 16-bit little-endian PCM, and the file's format."""

    pcm: bytes
    format: str

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


def parse_wav(data: bytes, name: str = "WAV file") -> WavAudio:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"{name} is not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    body: bytes | None = None
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        start = pos + 8
        end = start + size
        if chunk == b"fmt ":
            if size < 16 or end > len(data):
                raise WavError(f"{name} has a short fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, start)
            if tag == FORMAT_EXTENSIBLE and size >= 40:
                tag = struct.unpack_from("<H", data, start + 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data":
            # A recorder killed before writing its header leaves size 0 or too big:
            # take what is there.
            body = data[start : min(end, len(data))] if size else data[start:]
            break
        pos = end + (size & 1)
    if fmt is None:
        raise WavError(f"{name} has no fmt chunk")
    if body is None:
        raise WavError(f"{name} has no data chunk")
    tag, channels, rate, bits = fmt
    fix = "convert it with: sox IN.wav -r 8000 -c 1 -b 16 OUT.wav"
    if channels != 1 or rate != RATE:
        raise WavError(f"{name} is {rate} Hz with {channels} channel(s), not 8000 Hz mono; {fix}")
    if tag == FORMAT_PCM and bits == 16:
        return WavAudio(body[: len(body) & ~1], "pcm")
    if tag == FORMAT_ULAW and bits == 8:
        return WavAudio(g711.ulaw_decode(body), "ulaw")
    if tag == FORMAT_ALAW and bits == 8:
        return WavAudio(g711.alaw_decode(body), "alaw")
    raise WavError(f"{name} uses format {tag} with {bits} bits per sample; {fix}")


def wav_header(fmt: str, samples: int) -> bytes:
    """The 44-byte (PCM) or 58-byte (G.711, with a fact chunk) header for ``samples``
    samples of 8 kHz mono audio in ``fmt`` ("pcm", "ulaw", "alaw")."""
    tag = FORMATS.get(fmt)
    if tag is None:
        raise WavError(f"unknown WAV format {fmt!r} (have {', '.join(FORMATS)})")
    width = 2 if tag == FORMAT_PCM else 1
    data_size = samples * width
    if tag == FORMAT_PCM:
        fmt_chunk = struct.pack("<HHIIHH", tag, 1, RATE, RATE * width, width, 8 * width)
        extra = b""
    else:
        # Non-PCM formats carry cbSize and a fact chunk (RIFF spec, WAVEFORMATEX).
        fmt_chunk = struct.pack("<HHIIHHH", tag, 1, RATE, RATE * width, width, 8 * width, 0)
        extra = b"fact" + struct.pack("<II", 4, samples)
    chunks = b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + extra
    riff_size = 4 + len(chunks) + 8 + data_size + (data_size & 1)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + chunks
        + b"data"
        + struct.pack("<I", data_size)
    )


def wav_bytes(pcm: bytes, fmt: str = "pcm") -> bytes:
    """A whole WAV file from 8 kHz 16-bit PCM, stored as ``fmt``."""
    samples = len(pcm) // 2
    if fmt == "pcm":
        body = pcm[: samples * 2]
    elif fmt == "ulaw":
        body = g711.ulaw_encode(pcm[: samples * 2])
    elif fmt == "alaw":
        body = g711.alaw_encode(pcm[: samples * 2])
    else:
        raise WavError(f"unknown WAV format {fmt!r} (have {', '.join(FORMATS)})")
    return wav_header(fmt, samples) + body + (b"\x00" if len(body) & 1 else b"")
