"""`pbx remote` against `pbx console` over a TCP bridge to the console's pty, the way
the tests reach QEMU's serial port (socket://), with and without line noise."""

from __future__ import annotations

import os
import random
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.console import frame
from pbx_core.media.wav import wav_bytes
from pbx_core.store.dbtext import read_dir
from pbx_core.store.generations import Generations
from tests.conftest import FACTORY, ROOT
from tests.console.conftest import ConsoleProc


class NoisyLine:
    """A TCP server bridged to the console's pty; flips bits and drops bytes in both
    directions with the given probabilities (per byte), from a fixed seed."""

    def __init__(self, console: ConsoleProc, flip: float = 0.0, drop: float = 0.0) -> None:
        self.console = console
        self.flip, self.drop = flip, drop
        self.rng = random.Random(7)
        self.damaged = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _noise(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            r = self.rng.random()
            if r < self.drop:
                self.damaged += 1
                continue
            if r < self.drop + self.flip:
                self.damaged += 1
                out.append(byte ^ (1 << self.rng.randrange(8)))
            else:
                out.append(byte)
        return bytes(out)

    def _serve(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            with conn:
                self._bridge(conn)

    def _bridge(self, conn: socket.socket) -> None:
        master = self.console.master
        while not self.stop:
            ready, _, _ = select.select([conn, master], [], [], 0.1)
            try:
                if conn in ready:
                    data = conn.recv(4096)
                    if not data:
                        return
                    os.write(master, self._noise(data))
                if master in ready:
                    data = os.read(master, 4096)
                    self.console.out += data
                    conn.sendall(self._noise(data))
            except OSError:
                return

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.server.close()


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[ConsoleProc, NoisyLine]]:
    c = ConsoleProc(tmp_path)
    n = NoisyLine(c)
    yield c, n
    n.close()
    c.close()
    assert "Traceback" not in c.stderr.read_text(errors="replace")


def remote(
    port: int, *args: str, password: str = "admin", new: str | None = "remote-pw"
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pbx_core", "remote", "--port", f"socket://127.0.0.1:{port}"]
    cmd += ["--password", password, "--timeout", "1", "--retries", "30"]
    if new:
        cmd += ["--new-password", new]
    return subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )


def test_frames_round_trip_and_reject_damage() -> None:
    line = frame.encode_response(42, {"ok": True, "data": "ä:\n"})
    assert frame.decode_response(line) == (42, {"ok": True, "data": "ä:\n"})
    assert line.isascii() and line.endswith(b"\r\n")
    for i in range(len(line) - 2):
        for bit in range(8):
            damaged = bytearray(line)
            damaged[i] ^= 1 << bit
            assert frame.decode_response(bytes(damaged)) is None, (i, bit)
    assert frame.decode(frame.encode(7, "commit")) == (7, "commit")
    assert frame.decode(b"!7 commit *00000000\r\n") is None


def test_first_login_commands_and_exit_status(line: tuple[ConsoleProc, NoisyLine]) -> None:
    console, net = line
    res = remote(net.port, "run", "set settings.hostname=office", "get settings.hostname", "commit")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "office" and re.fullmatch(r"committed gen-\d{6}", lines[1]), res.stdout
    assert ("hostname", "office") in Generations(console.root).tables()["pbx_settings"].rows
    # Now the new password is the one; the factory one is refused.
    res = remote(net.port, "run", "get settings.hostname", password="admin", new=None)
    assert res.returncode == 1 and "login refused 3 times" in res.stderr, res.stderr
    res = remote(net.port, "--json", "run", "get settings.hostname", password="remote-pw")
    assert res.returncode == 0, res.stderr
    assert '"data": "office"' in res.stdout
    # A bad value: status 1, stops there, nothing staged survives the session.
    first = Generations(console.root).current()
    res = remote(
        net.port, "run", "set settings.hostname=other", "set pbx_trunk[provider].port=x", "commit",
        password="remote-pw",
    )  # fmt: skip
    assert res.returncode == 1
    assert "takes an integer" in res.stderr
    assert Generations(console.root).current() == first
    res = remote(net.port, "run", "frobnicate", password="remote-pw")
    assert res.returncode == 2 and "unknown command" in res.stderr


def test_factory_login_needs_a_new_password(line: tuple[ConsoleProc, NoisyLine]) -> None:
    _console, net = line
    res = remote(net.port, "run", "status", new=None)
    assert res.returncode == 1
    assert "give --new-password" in res.stderr


def test_push_and_pull_survive_line_noise(tmp_path: Path) -> None:
    c = ConsoleProc(tmp_path)
    net = NoisyLine(c, flip=1 / 2500, drop=1 / 5000)
    try:
        tables = tmp_path / "push"
        shutil.copytree(FACTORY, tables)
        with (tables / "subscriber").open("a") as f:
            f.write("5:200:pbx.local:pushed-secret::\n")
        with (tables / "pbx_extension").open("a") as f:
            f.write("5:200::Pushed over noise:20:1\n")
        res = remote(net.port, "push", str(tables))
        assert res.returncode == 0, res.stderr[-3000:]
        assert re.search(r"push: \w+ \d+/\d+ bytes \(100%\)", res.stderr), res.stderr[-2000:]
        assert "committed gen-" in res.stdout
        got = Generations(c.root).tables()
        assert got["subscriber"].rows == read_dir(tables)["subscriber"].rows
        assert any(r[1] == "200" for r in got["subscriber"].rows)
        # Pull it back: byte for byte what the box has.
        out = tmp_path / "pulled"
        res = remote(net.port, "pull", str(out), password="remote-pw", new=None)
        assert res.returncode == 0, res.stderr[-3000:]
        gen = Generations(c.root).current()
        assert gen is not None
        for p in (gen / "tables").iterdir():
            assert (out / p.name).read_bytes() == p.read_bytes(), p.name
        assert net.damaged > 0  # the noise really hit the line
    finally:
        net.close()
        c.close()


def test_a_bad_push_is_refused_before_sending(line: tuple[ConsoleProc, NoisyLine]) -> None:
    console, net = line
    bad = console.tmp / "bad"
    shutil.copytree(FACTORY, bad)
    (bad / "pbx_did").write_text(
        "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null)\n"
        "1:*:provider:extension:999\n"
    )
    res = remote(net.port, "push", str(bad))
    assert res.returncode == 1 and "999" in res.stderr, res.stderr
    assert Generations(console.root).current() is None  # nothing was committed


def test_pull_recordings_fetches_what_is_not_here_yet(tmp_path: Path) -> None:
    box = tmp_path / "box-recordings"
    box.mkdir()
    first = wav_bytes(bytes(range(256)) * 40, "ulaw")  # 5120 samples: 3 chunks
    (box / "20261208-100000-abc-1.wav").write_bytes(first)
    (box / "20261208-100500-def-1.wav.part").write_bytes(b"still being written")
    c = ConsoleProc(tmp_path, "--recordings", str(box))
    net = NoisyLine(c, flip=1 / 5000)
    try:
        out = tmp_path / "laptop"
        res = remote(net.port, "pull-recordings", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        assert "pulled 1 recordings (5178 bytes)" in res.stdout, res.stdout
        assert sorted(p.name for p in out.iterdir()) == ["20261208-100000-abc-1.wav"]
        assert (out / "20261208-100000-abc-1.wav").read_bytes() == first
        # A second one on the box: only it travels.
        second = wav_bytes(bytes(3000), "ulaw")
        (box / "20261208-101000-ghi-2.wav").write_bytes(second)
        res = remote(net.port, "pull-recordings", str(out), password="remote-pw", new=None)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "pulled 1 recordings" in res.stdout and "1 there already" in res.stdout
        assert (out / "20261208-101000-ghi-2.wav").read_bytes() == second
        # Names are files of the folder, never paths.
        res = remote(
            net.port, "run", "rec-chunk ../../etc/passwd 0 10", password="remote-pw", new=None
        )
        assert res.returncode == 1 and "not a recording's name" in res.stderr, res.stderr
    finally:
        net.close()
        c.close()
    assert "Traceback" not in c.stderr.read_text(errors="replace")
