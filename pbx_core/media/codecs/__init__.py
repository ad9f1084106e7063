"""Audio codecs (sans-IO): G.711 µ-law and A-law, and the codec descriptors the media
engine negotiates with."""

from pbx_core.media.codecs.registry import CODECS, Codec, codec_by_name

__all__ = ["CODECS", "Codec", "codec_by_name"]
