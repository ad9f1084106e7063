"""System recordings (FreePBX's "System Recordings"): the office's own greetings and
prompts, by name, in `recordings/system/` beside the other recordings on /data (the
daemon's `recordings/` is beside the state LMDB; the console's is `--recordings`'s
folder's sibling). Applications play one with `Session.play("sys:NAME")`; an
extension with the permission records one from its phone (features/sysrec); `pbx
remote sysrec-push` sends one from a laptop, and the console lists and deletes them.

Every file is stored as the recorder writes (8 kHz mono G.711 µ-law WAV). What
arrives (a phone's recording, a laptop's file) is checked and converted here:
RIFF/WAVE, 8000 Hz, one channel, µ-law, A-law or 16-bit PCM; anything else is
refused with the reason. A file is written whole (a temporary file, fsync, rename,
fsync of the folder), so a power cut leaves the old recording or the new one.
Bounded: MAX_COUNT recordings, MAX_SECONDS each, MAX_TOTAL_BYTES together (the /data
partition is 64 MiB and holds voicemail and call recordings too).

A leaf module (files and bytes, and the pure G.711 tables of media/codecs/g711.py,
no media engine): the daemon's session and the console both use it (the console
imports nothing of the daemon: tests/test_layering.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
from pathlib import Path
from typing import Any

from pbx_core.media.codecs import g711

FOLDER = "system"  # under the recordings directory
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # never a path
RATE = 8000
MAX_SECONDS = 120  # one recording: 960 kB as µ-law
MAX_COUNT = 100
MAX_TOTAL_BYTES = 8 << 20  # all of them: about 17 minutes of audio
MAX_UPLOAD = 2 * RATE * MAX_SECONDS + 4096  # a file as it arrives (16-bit PCM at most)
CHUNK = 2048  # bytes per `sysrec-chunk` answer over the console (as rec-chunk)
HEADER = 58  # the stored header's bytes (fmt with cbSize, fact, data)
_FIX = "convert it with: sox IN.wav -r 8000 -c 1 -e mu-law OUT.wav"


class SysrecError(Exception):
    """A recording refused or not there; the message says why."""


def folder(recordings: Path) -> Path:
    """The system recordings' folder under a recordings directory."""
    return recordings / FOLDER


def path(directory: Path, name: str) -> Path | None:
    """The file of recording `name` in `directory`; None for a name that is not one."""
    return directory / f"{name}.wav" if NAME.fullmatch(name) else None


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise SysrecError(
            f"{name!r} is not a recording name (letters, digits, '.', '_', '-'; at most 64)"
        )


# ---------------------------------------------------------------------- WAV
def header(samples: int) -> bytes:
    """The stored header: µ-law, 8 kHz mono, cbSize and a fact chunk (as the recorder)."""
    fmt = struct.pack("<HHIIHHH", 7, 1, RATE, RATE, 1, 8, 0)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<II", 4, samples)
    riff = 4 + len(chunks) + 8 + samples + (samples & 1)
    return (
        b"RIFF" + struct.pack("<I", riff) + b"WAVE" + chunks + b"data" + struct.pack("<I", samples)
    )


def to_stored(data: bytes, what: str = "the file") -> bytes:
    """A whole WAV file in the stored format, from `data` (a WAV file as it arrived);
    SysrecError saying what is wrong with it otherwise."""
    if len(data) > MAX_UPLOAD:
        raise SysrecError(f"{what} is {len(data)} bytes; at most {MAX_UPLOAD}")
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SysrecError(f"{what} is not a WAV file (no RIFF/WAVE header)")
    pos, fmt, body = 12, None, None
    for _ in range(64):  # chunks looked at, at most
        if pos + 8 > len(data):
            break
        kind, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        start, end = pos + 8, pos + 8 + size
        if kind == b"fmt ":
            if size < 16 or end > len(data):
                raise SysrecError(f"{what} is truncated (in its fmt chunk)")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, start)
            if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the subformat
                tag = struct.unpack_from("<H", data, start + 24)[0]
            fmt = (tag, channels, rate, bits)
        elif kind == b"data":
            if end > len(data):
                raise SysrecError(
                    f"{what} is truncated: its data chunk says {size} bytes, "
                    f"{len(data) - start} are there"
                )
            body = data[start:end]
            break
        pos = end + (size & 1)
    if fmt is None:
        raise SysrecError(f"{what} has no fmt chunk (truncated?)")
    if body is None:
        raise SysrecError(f"{what} has no data chunk (truncated?)")
    tag, channels, rate, bits = fmt
    if rate != RATE:
        raise SysrecError(f"{what} is {rate} Hz, not 8000 Hz; {_FIX}")
    if channels != 1:
        raise SysrecError(f"{what} has {channels} channels, not 1 (mono); {_FIX}")
    if tag == 7 and bits == 8:
        ulaw = body
    elif tag == 6 and bits == 8:
        ulaw = body.translate(g711.ALAW_TO_ULAW)
    elif tag == 1 and bits == 16:
        ulaw = g711.ulaw_encode(body[: len(body) & ~1])
    else:
        raise SysrecError(
            f"{what} is format {tag} with {bits} bits per sample, not µ-law, A-law "
            f"or 16-bit PCM; {_FIX}"
        )
    if not ulaw:
        raise SysrecError(f"{what} holds no audio")
    if len(ulaw) > RATE * MAX_SECONDS:
        raise SysrecError(f"{what} lasts {len(ulaw) / RATE:.1f} s; at most {MAX_SECONDS} s")
    return header(len(ulaw)) + ulaw + (b"\x00" if len(ulaw) & 1 else b"")


# ---------------------------------------------------------------------- the store
def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        return [
            e
            for e in os.scandir(directory)
            if e.name.endswith(".wav") and NAME.fullmatch(e.name[:-4]) and e.is_file()
        ]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SysrecError(f"{directory}: {exc.strerror}") from None


def save(directory: Path, name: str, data: bytes) -> int:
    """Check and convert `data` (a WAV file) and keep it as recording `name`, written
    whole; replaces one of that name. Its stored size; SysrecError (nothing written)
    when the file, the name or the bounds refuse it."""
    check_name(name)
    stored = to_stored(data, f"recording {name!r}")
    target = directory / f"{name}.wav"
    others = [e for e in _entries(directory) if e.name != target.name]
    if len(others) >= MAX_COUNT:
        raise SysrecError(f"{MAX_COUNT} system recordings already: delete one first")
    used = 0
    for e in others:
        with contextlib.suppress(OSError):
            used += e.stat().st_size
    if used + len(stored) > MAX_TOTAL_BYTES:
        raise SysrecError(
            f"no room: the system recordings hold {used} bytes, this one {len(stored)}, "
            f"at most {MAX_TOTAL_BYTES} together"
        )
    temp = directory / f".{name}.wav.part"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(stored)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        _sync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise SysrecError(f"{target}: {exc.strerror}") from None
    return len(stored)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(source: Path) -> bytes:
    """A WAV file as it is, refused when larger than any can be (MAX_UPLOAD)."""
    try:
        size = source.stat().st_size
        if size > MAX_UPLOAD:
            raise SysrecError(f"{source.name} is {size} bytes; at most {MAX_UPLOAD}")
        with open(source, "rb") as f:
            return f.read(MAX_UPLOAD + 1)
    except OSError as exc:
        raise SysrecError(f"{source}: {exc.strerror}") from None


def save_file(directory: Path, name: str, source: Path) -> int:
    """`save` from a file (a feature's own recording being kept as a system one)."""
    return save(directory, name, read(source))


def delete(directory: Path, name: str) -> None:
    check_name(name)
    try:
        (directory / f"{name}.wav").unlink()
    except FileNotFoundError:
        raise SysrecError(f"no system recording {name!r}") from None
    except OSError as exc:
        raise SysrecError(f"{name}: {exc.strerror}") from None
    with contextlib.suppress(OSError):
        _sync_dir(directory)


def listing(directory: Path) -> dict[str, dict[str, Any]]:
    """name -> {"size", "seconds", "sha256"}, by name."""
    out: dict[str, dict[str, Any]] = {}
    for e in sorted(_entries(directory), key=lambda e: e.name):
        h = hashlib.sha256()
        size = 0
        try:
            with open(e.path, "rb") as f:
                while block := f.read(1 << 16):
                    h.update(block)
                    size += len(block)
        except OSError:
            continue  # deleted meanwhile
        seconds = round(max(size - HEADER, 0) / RATE, 1)
        out[e.name[:-4]] = {"size": size, "seconds": seconds, "sha256": h.hexdigest()}
    return out


def chunk(directory: Path, name: str, offset: int, length: int) -> bytes:
    """Up to `length` (at most CHUNK) bytes of recording `name` from `offset`."""
    check_name(name)
    try:
        with open(directory / f"{name}.wav", "rb") as f:
            f.seek(offset)
            return f.read(max(0, min(length, CHUNK)))
    except FileNotFoundError:
        raise SysrecError(f"no system recording {name!r}") from None
    except OSError as exc:
        raise SysrecError(f"{name}: {exc.strerror}") from None
