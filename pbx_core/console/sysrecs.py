"""System recordings on the console (pbx_core/sysrec.py is the store): `sysrec-list`
and `sysrec-delete NAME` for people and scripts, and the transfer commands `pbx
remote sysrec-push` / `sysrec-pull` speak: `sysrec-begin NAME SIZE SHA256`, then
`sysrec-data OFFSET BASE64` (in order; a repeated part is accepted again), then
`sysrec-finish`, which checks size and SHA-256, then the file itself (RIFF/WAVE,
8 kHz mono, µ-law, A-law or 16-bit PCM, converted to µ-law) and the store's bounds,
and only then writes it whole; `sysrec-chunk NAME OFFSET LENGTH` reads one. An
upload lives in the console's RAM (at most sysrec.MAX_UPLOAD bytes) until then: a
refused or abandoned one leaves nothing on /data."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbx_core import sysrec


class UploadError(Exception):
    """A transfer step refused (the message says why)."""


@dataclass
class Upload:
    name: str
    size: int
    sha256: str
    data: bytearray = field(default_factory=bytearray)


class SystemRecordings:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.upload: Upload | None = None

    def lines(self) -> tuple[list[str], dict[str, dict[str, Any]]]:
        got = sysrec.listing(self.directory)
        if not got:
            return ["no system recordings"], got
        out = [f"{n:<24} {m['seconds']:>6.1f} s {m['size']:>9} bytes" for n, m in got.items()]
        total = sum(int(m["size"]) for m in got.values())
        out.append(
            f"{len(got)} of at most {sysrec.MAX_COUNT}; {total} of {sysrec.MAX_TOTAL_BYTES} bytes"
        )
        return out, got

    def delete(self, name: str) -> None:
        sysrec.delete(self.directory, name)

    def chunk(self, name: str, offset: int, length: int) -> bytes:
        return sysrec.chunk(self.directory, name, offset, length)

    def begin(self, name: str, size: str, sha: str) -> None:
        sysrec.check_name(name)
        if not size.isdigit() or not 0 < int(size) <= sysrec.MAX_UPLOAD:
            raise UploadError(f"a recording is 1 to {sysrec.MAX_UPLOAD} bytes, not {size}")
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise UploadError("the SHA-256 is 64 lowercase hex digits")
        self.upload = Upload(name, int(size), sha)

    def data(self, offset: str, b64: str) -> int:
        up = self.upload
        if up is None:
            raise UploadError("no upload: sysrec-begin first")
        if not offset.isdigit():
            raise UploadError("the offset is a number")
        try:
            part = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise UploadError("bad base64") from None
        off = int(offset)
        if off == len(up.data):
            if off + len(part) > up.size:
                raise UploadError(f"longer than the {up.size} bytes announced")
            up.data += part
        elif off + len(part) > len(up.data) or up.data[off : off + len(part)] != part:
            raise UploadError(f"expected offset {len(up.data)}, not {off}")
        return len(up.data)

    def finish(self) -> tuple[str, int]:
        up, self.upload = self.upload, None
        if up is None:
            raise UploadError("no upload: sysrec-begin first")
        data = bytes(up.data)
        if len(data) != up.size or hashlib.sha256(data).hexdigest() != up.sha256:
            raise UploadError(f"{up.name} is incomplete or damaged ({len(data)}/{up.size} bytes)")
        return up.name, sysrec.save(self.directory, up.name, data)
