"""System recordings from a laptop: `pbx remote sysrec-push/-pull/-list/-delete`
against `pbx console` over the TCP bridge to its pty (tests/console/test_remote.py's
NoisyLine, with some noise). A good file is stored as µ-law; a wrong rate, stereo,
a truncated file or no WAV at all is refused with the reason before anything is
sent; the box refuses the same again when sent by hand, and leaves nothing on /data;
no traceback anywhere."""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from pathlib import Path

from pbx_core import sysrec
from pbx_core.media.codecs import g711
from pbx_core.media.wav import wav_bytes
from tests.console.conftest import ConsoleProc
from tests.console.test_remote import NoisyLine, remote

PCM = b"".join(
    struct.pack("<h", int(9000 * math.sin(2 * math.pi * 300 * n / 8000))) for n in range(4000)
)


def _wav(rate: int = 8000, channels: int = 1, body: bytes = PCM) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, 2 * channels, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body))
    return b"RIFF" + struct.pack("<I", 4 + len(chunks) + len(body)) + b"WAVE" + chunks + body


def test_push_list_pull_delete_and_refusals(tmp_path: Path) -> None:
    box = tmp_path / "box" / "recordings"
    calls = box / "calls"
    calls.mkdir(parents=True)
    system = box / "system"
    c = ConsoleProc(tmp_path, "--recordings", str(calls))
    net = NoisyLine(c, flip=1 / 20000)
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    try:
        good = laptop / "welcome.wav"
        good.write_bytes(wav_bytes(PCM, "pcm"))  # 16-bit PCM: converted to µ-law
        res = remote(net.port, "sysrec-push", str(good), "welcome")
        assert res.returncode == 0, res.stderr[-3000:]
        assert "saved system recording welcome (0.5 s)" in res.stdout, res.stdout
        stored = (system / "welcome.wav").read_bytes()
        assert stored == sysrec.header(4000) + g711.ulaw_encode(PCM)

        again = {"password": "remote-pw", "new": None}
        bad = {
            "rate.wav": (_wav(rate=16000), "16000 Hz, not 8000 Hz"),
            "stereo.wav": (_wav(channels=2), "2 channels, not 1"),
            "cut.wav": (_wav()[:-1000], "truncated"),
            "notes.wav": (b"just some text, not audio\n", "not a WAV file"),
        }
        for name, (data, why) in bad.items():
            (laptop / name).write_bytes(data)
            res = remote(net.port, "sysrec-push", str(laptop / name), "menu", **again)
            assert res.returncode == 1 and why in res.stderr, (name, res.stderr[-2000:])
            assert "Traceback" not in res.stderr
        res = remote(net.port, "sysrec-push", str(laptop / "missing.wav"), "menu", **again)
        assert res.returncode == 1 and "missing.wav" in res.stderr, res.stderr[-2000:]
        res = remote(net.port, "sysrec-push", str(good), "../escape", **again)
        assert res.returncode == 1 and "not a recording name" in res.stderr

        # The box checks for itself: a stereo file sent by hand is refused at the end.
        stereo = _wav(channels=2)[:1500]
        stereo = stereo[:40] + struct.pack("<I", len(stereo) - 44) + stereo[44:]
        sha = hashlib.sha256(stereo).hexdigest()
        res = remote(
            net.port,
            "run",
            f"sysrec-begin menu {len(stereo)} {sha}",
            f"sysrec-data 0 {base64.b64encode(stereo).decode()}",
            "sysrec-finish",
            **again,
        )
        assert res.returncode == 1 and "2 channels, not 1" in res.stderr, res.stderr[-2000:]
        res = remote(net.port, "run", "sysrec-begin menu 99999999 " + "0" * 64, **again)
        assert res.returncode == 1 and "a recording is 1 to" in res.stderr
        assert sorted(p.name for p in system.iterdir()) == ["welcome.wav"]

        res = remote(net.port, "sysrec-list", **again)
        assert res.returncode == 0 and "welcome" in res.stdout and "0.5 s" in res.stdout
        res = remote(net.port, "sysrec-pull", "welcome", str(laptop / "back.wav"), **again)
        assert res.returncode == 0, res.stderr[-2000:]
        assert (laptop / "back.wav").read_bytes() == stored
        res = remote(net.port, "sysrec-pull", "welcome", str(laptop / "no" / "x.wav"), **again)
        assert res.returncode == 1 and "no/x.wav" in res.stderr, res.stderr[-2000:]
        assert "Traceback" not in res.stderr
        res = remote(net.port, "sysrec-pull", "nothing", str(laptop / "x.wav"), **again)
        assert res.returncode == 1 and "no system recording 'nothing'" in res.stderr
        assert not (laptop / "x.wav").exists()

        res = remote(net.port, "sysrec-delete", "welcome", **again)
        assert res.returncode == 0 and "deleted system recording welcome" in res.stdout
        assert list(system.iterdir()) == []
        res = remote(net.port, "sysrec-delete", "welcome", **again)
        assert res.returncode == 1 and "no system recording" in res.stderr
        res = remote(net.port, "sysrec-list", **again)
        assert res.returncode == 0 and "no system recordings" in res.stdout
        res = remote(net.port, "sysrec-delete", **again)
        assert res.returncode == 2 and "usage" in res.stderr
    finally:
        net.close()
        c.close()
    assert "Traceback" not in c.stderr.read_text(errors="replace")
