"""The codecs the media engine can decode, encode and transcode between."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pbx_core.media.codecs import g711

__all__ = ["CODECS", "Codec", "codec_by_name", "transcode_table"]


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec by its SDP encoding name (RFC 3551 §6).

    ``decode`` turns a payload into 16-bit little-endian PCM at ``clock_rate``;
    ``encode`` is its inverse.  ``static_pt`` is the RFC 3551 payload type, if any."""

    name: str
    clock_rate: int
    static_pt: int | None
    decode: Callable[[bytes], bytes]
    encode: Callable[[bytes], bytes]
    bytes_per_sample: float = 1.0


PCMU = Codec("PCMU", 8000, 0, g711.ulaw_decode, g711.ulaw_encode)
PCMA = Codec("PCMA", 8000, 8, g711.alaw_decode, g711.alaw_encode)

CODECS: dict[str, Codec] = {c.name: c for c in (PCMU, PCMA)}

_TRANSCODE = {("PCMU", "PCMA"): g711.ULAW_TO_ALAW, ("PCMA", "PCMU"): g711.ALAW_TO_ULAW}


def codec_by_name(name: str) -> Codec | None:
    """The codec for an SDP encoding name (case-insensitive), None if unsupported."""
    return CODECS.get(name.upper())


def transcode_table(src: str, dst: str) -> bytes | None:
    """A ``bytes.translate`` table from one G.711 law to the other, None if the pair
    is not a sample-by-sample translation."""
    return _TRANSCODE.get((src.upper(), dst.upper()))
