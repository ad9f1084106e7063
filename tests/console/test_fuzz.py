"""Fuzz tests of what the serial line feeds the console and `pbx remote`: the line
editor (`terminal.py`), the machine-mode framing (`frame.py`), a whole session before
login and in machine mode, and `pbx remote`'s login. Any byte sequence gives a
documented outcome (a line, a timeout, InputCancelledError, HangupError, a refused
frame, RemoteError), never another exception, and no buffer grows without bound."""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.console import frame
from pbx_core.console.remote import Remote, RemoteError
from pbx_core.console.session import Options, Session
from pbx_core.console.terminal import (
    MAX_LINE,
    HangupError,
    InputCancelledError,
    Terminal,
)
from tests.conftest import FACTORY
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz

# Bytes a serial line can carry, with the console's special ones made likely.
SPECIAL = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"\x03", b"\x04", b"\x08", b"\x7f", b"\x15", b"\x1b", b"\x1b[",
     b"\x1bO", b"\x1b[24;80R", b"\xc2\x9b", b"\xe2\x82", b"\xff", b"!1 ", b" *"]
)  # fmt: skip
CHUNK = st.one_of(st.binary(max_size=64), SPECIAL)
STREAM = st.lists(CHUNK, max_size=40)
READ_SIZE = 4096


class ScriptedChannel:
    """A channel that delivers `chunks` (one per read, each at most READ_SIZE bytes,
    as a real read is) and then hangs up; records everything written."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = [c[i : i + READ_SIZE] for c in chunks for i in range(0, len(c), READ_SIZE)]
        self.written = bytearray()

    def read(self, timeout: float | None) -> bytes:
        if not self.chunks:
            raise HangupError
        return self.chunks.pop(0)

    def write(self, data: bytes) -> None:
        self.written += data


def read_lines(term: Terminal, **kwargs: bool) -> list[str | None]:
    """Lines until the hang-up; a Ctrl-C is recorded as None."""
    lines: list[str | None] = []
    while True:
        try:
            lines.append(term.read_line("", **kwargs))
        except InputCancelledError:
            lines.append(None)
        except HangupError:
            return lines
        assert len(term.pending) <= READ_SIZE


@fuzz_settings(300)
@given(STREAM)
def test_line_editor_any_bytes(chunks: list[bytes]) -> None:
    channel = ScriptedChannel(chunks)
    term = Terminal(channel, idle=None)
    for line in read_lines(term):
        if line is None:
            continue
        assert len(line) <= MAX_LINE
        # No control character (C0, DEL, C1) gets into a line.
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    # Nor into the echo: only printable text, "\b \b", "^C" and CRLF go back.
    echoed = bytes(channel.written).replace(b"\r\n", b"").replace(b"\b \b", b"")
    text = echoed.decode("utf-8")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)


@fuzz_settings(200)
@given(STREAM, st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E)))
def test_secret_input_is_never_echoed(chunks: list[bytes], secret: str) -> None:
    channel = ScriptedChannel([*chunks, secret.encode()])
    term = Terminal(channel, idle=None)
    read_lines(term, secret=True)
    assert set(bytes(channel.written)) <= set(b"\r\n^C")


def test_an_endless_line_is_cut_at_max_line() -> None:
    channel = ScriptedChannel([b"x" * READ_SIZE] * (3 * MAX_LINE // READ_SIZE + 1) + [b"\r"])
    term = Terminal(channel, idle=None)
    assert read_lines(term) == ["x" * MAX_LINE]
    assert len(channel.written) <= MAX_LINE + 2


def test_half_a_character_does_not_leak_into_the_next_line() -> None:
    channel = ScriptedChannel([b"ab\xe2\x82\r", b"\xacok\r"])
    lines = read_lines(Terminal(channel, idle=None))
    assert lines[0] == "ab" and lines[1] is not None and lines[1].endswith("ok"), lines
    assert "€" not in "".join(x or "" for x in lines)


@fuzz_settings(500)
@given(st.binary(max_size=300))
def test_frame_decode_any_bytes(line: bytes) -> None:
    got = frame.decode(line)
    if got is not None:
        seq, body = got
        assert 0 <= seq <= 999_999_999 and body.isascii()
        assert frame.encode(seq, body).strip(b"\r\n") == line.strip(b"\r\n")
    answer = frame.decode_response(line)
    assert answer is None or isinstance(answer[1], dict)


BODY = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


@fuzz_settings(300)
@given(st.integers(0, 999_999_999), BODY, st.data())
def test_frame_roundtrip_and_every_bit_flip_is_caught(
    seq: int, body: str, data: st.DataObject
) -> None:
    encoded = frame.encode(seq, body)
    assert frame.decode(encoded) == (seq, body)
    payload = len(encoded) - 2  # the CRLF is the line's end, not the frame
    bit = data.draw(st.integers(0, payload * 8 - 1))
    damaged = bytearray(encoded)
    damaged[bit // 8] ^= 1 << (bit % 8)
    assert frame.decode(bytes(damaged)) is None


@fuzz_settings(300)
@given(st.integers(0, 999_999_999), st.dictionaries(st.text(max_size=8), st.text(max_size=20)))
def test_response_roundtrip(seq: int, answer: dict[str, str]) -> None:
    assert frame.decode_response(frame.encode_response(seq, answer)) == (seq, answer)


def options(tmp: Path) -> Options:
    (tmp / "run").mkdir(exist_ok=True)
    args = argparse.Namespace(
        config_root=str(tmp / "config"),
        factory=str(FACTORY),
        control=str(tmp / "no-daemon.sock"),
        network_conf=str(tmp / "etc" / "network.conf"),
        idle=0,
        login_delay=0.0,
        failsafe=0.0,
        runtime=str(tmp / "run"),
        recordings=str(tmp / "recordings"),
    )
    return Options(args)


def serve(tmp: Path, chunks: list[bytes]) -> ScriptedChannel:
    channel = ScriptedChannel(chunks)
    session = Session(Terminal(channel, idle=None), options(tmp))
    session.serve()  # returns when the line hangs up; nothing else may escape
    assert not session.shell_requested
    return channel


@fuzz_settings(60)
@given(STREAM)
def test_session_before_login_any_bytes(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]
) -> None:
    channel = serve(tmp_path_factory.mktemp("s"), chunks)
    assert b"Password: " in channel.written


LOGIN = [b"admin\r", b"fuzz-pw-1\r", b"fuzz-pw-1\r", b"machine on\r"]
# Requests that touch nothing outside the session (no ping, no reboot, no commit).
SAFE = ["ping", "show settings", "get settings.domain", "changes", "tables", "revert",
        "set settings.hostname=fuzz", "pull-list", "pull-chunk subscriber 0 64",
        "rec-list", "rec-chunk a.wav 0 64", "rec-chunk ../x.wav 0 9", "nonsense"]  # fmt: skip
REQUEST = st.tuples(st.integers(1, 99), st.sampled_from(SAFE))


@fuzz_settings(60)
@given(st.lists(st.one_of(CHUNK, REQUEST), max_size=30))
def test_machine_mode_any_bytes(
    tmp_path_factory: pytest.TempPathFactory, items: list[bytes | tuple[int, str]]
) -> None:
    chunks = [frame.encode(*i) if isinstance(i, tuple) else i for i in items]
    channel = serve(tmp_path_factory.mktemp("m"), [*LOGIN, *chunks])
    out = bytes(channel.written)
    start = out.find(b"!0 ")
    assert start >= 0, out[-500:]
    # From `machine on` on, the console sends valid frames and nothing else, until a
    # Ctrl-C or a Ctrl-D ends the session (how `pbx remote` gets a stale one back).
    framed = out[start:]
    ends = [i for i in (framed.find(b"\nlogged out"), framed.find(b"\r\n=====")) if i >= 0]
    if ends:
        sent = b"".join(chunks)
        assert b"\x03" in sent or b"\x04" in sent, framed[-300:]
        framed = framed[: min(ends)]
    for line in framed.split(b"\r\n"):
        if line.strip(b"\r"):
            got = frame.decode_response(line)
            assert got is not None, line
            assert {"ok", "status"} <= got[1].keys(), got


class ScriptedPort:
    """pyserial's surface as `Remote` uses it: what the line sends, then silence."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written = bytearray()

    @property
    def in_waiting(self) -> int:
        return len(self.chunks[0]) if self.chunks else 0

    def read(self, n: int) -> bytes:
        if not self.chunks:
            time.sleep(0.01)  # pyserial's read timeout
            return b""
        data = self.chunks.pop(0)
        if len(data) > n:
            self.chunks.insert(0, data[n:])
        return data[:n]

    def write(self, data: bytes) -> int:
        self.written += data
        return len(data)


@fuzz_settings(60)
@given(STREAM)
def test_remote_login_any_bytes(chunks: list[bytes]) -> None:
    port = ScriptedPort(chunks)
    remote = Remote(port, "pw", new_password="new-pw-1", timeout=0.02, login_timeout=0.1)
    try:
        remote.login()
    except RemoteError as e:
        message = str(e)
        assert all(c == "\n" or c.isprintable() for c in message), repr(message)
    assert len(remote.seen) <= 240
    assert len(remote.buf) <= 1 << 20


def test_remote_login_flood_is_bounded() -> None:
    port = ScriptedPort([b"x" * 4096] * 600)  # 2.4 MB without a prompt
    remote = Remote(port, "pw", timeout=0.02, login_timeout=0.5)
    with pytest.raises(RemoteError, match="none of them a prompt"):
        remote.login()
    assert len(remote.buf) <= 1 << 20 and len(remote.seen) <= 240


def test_frame_json_is_ascii() -> None:
    line = frame.encode_response(7, {"lines": ["é\x1b[2J"]})
    assert line.isascii() and b"\x1b" not in line
    decoded = frame.decode(line)
    assert decoded is not None and json.loads(decoded[1])["lines"] == ["é\x1b[2J"]
    assert frame.crc(b"!7 x") == f"{zlib.crc32(b'!7 x'):08x}"
