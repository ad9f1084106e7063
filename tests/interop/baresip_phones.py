"""baresip phones of a `pbx run` for the feature audio tests
(tests/interop/test_features_audio_baresip.py), and how to tell what a phone heard.

A `Phone` is tests/media/baresip.py's agent (aufile plays its own sine as the
microphone, sndfile records what it hears) registered to the PBX as an extension,
with the choices a feature test needs: ring instead of answering by itself
(`answer="manual"`), dial without registering (`register=False`: another binding
of the extension stays the only one the PBX rings), and a SIP trace in its log
(`trace=True`: the INVITE it received, headers and all).

What a phone heard is searched window by window (100 ms): `seconds_heard` counts
the windows where every wanted frequency is loud and stands out from every other
frequency named, so a mix (a barge, a page) is heard as well as one talker, and
digital silence, comfort noise or line noise never counts as a tone.
"""

from __future__ import annotations

import math
import socket
import subprocess
import time
from pathlib import Path

from pbx_core.media.dtmf import goertzel_power
from pbx_core.pbx.control import query
from tests.conftest import PbxProcess
from tests.media.baresip import BARESIP, Baresip, free_port, wav_samples

RATE = 8000
WINDOW = 800  # 100 ms
MIN_AMPLITUDE = 200.0  # peak, 16-bit PCM (about -44 dBFS): quieter is no tone
MIN_RATIO = 20.0  # a wanted frequency's power over each unwanted one's (13 dB)
# Frequencies no phone sends and no PBX tone, beep or hold-music note holds: a tone
# must stand out from these too (the noise floor where it is heard).
REFERENCE = (1150.0, 1550.0, 2050.0)


class Phone(Baresip):
    """An extension's baresip phone on the PBX `pbx` (its password is the
    configs' change-me-EXT), sending a sine of `hz` Hz."""

    def __init__(
        self,
        workdir: Path,
        user: str,
        hz: float,
        pbx: PbxProcess,
        *,
        answer: str = "auto",
        register: bool = True,
        trace: bool = False,
    ) -> None:
        super().__init__(
            workdir,
            user,
            tone_hz=hz,
            registrar=f"{pbx.host}:{pbx.port}",
            password=f"change-me-{user}",
        )
        self.pbx = pbx
        self.answer = answer
        self.register = register
        self.trace = trace

    def _write_config(self) -> None:
        super()._write_config()
        accounts = self.dir / "accounts"
        line = accounts.read_text().replace("answermode=auto", f"answermode={self.answer}")
        if not self.register:
            line = line.rstrip("\n") + ";regint=0\n"
        accounts.write_text(line)

    def start(self, timeout: float = 10.0) -> None:
        """Start baresip; on ports taken since free_port chose them (other tests run
        beside these), again on fresh ones."""
        for attempt in range(3):
            try:
                self._start(timeout)
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.stop()
                self.sip_port, self.ctrl_port = free_port(), free_port(pair=False)
                lo = free_port()
                self.rtp_ports = (lo, lo + 1)
            else:
                return

    def _start(self, timeout: float) -> None:
        if not self.trace:
            super().start(timeout)
            return
        # As Baresip.start, with -s: baresip writes every SIP message to its log.
        assert BARESIP is not None, "baresip is not installed (apt install baresip-core)"
        self._write_config()
        log = (self.dir / "baresip.log").open("wb")
        self.proc = subprocess.Popen(
            [BARESIP, "-s", "-f", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        self._connect(timeout)

    def _connect(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"baresip exited:\n{self.log()}") from None
                time.sleep(0.05)
            else:
                return
        self.stop()
        raise RuntimeError(f"baresip ctrl_tcp did not open:\n{self.log()}")

    def call(self, number: str) -> None:
        """Dial `number` at the PBX."""
        answer = self.command("dial", f"sip:{number}@{self.pbx.host}:{self.pbx.port}")
        assert answer.get("ok"), answer

    def heard(self) -> list[int]:
        """What this phone heard in its last call (8 kHz samples)."""
        return wav_samples(self.recording("dec"))

    def received_invites(self) -> list[str]:
        """The INVITEs its SIP trace shows it received (needs trace=True)."""
        # Each message: "#", "UDP <from> -> <to>", then the message itself.
        blocks = self.log().split("#\nUDP ")
        to_me = f" -> 127.0.0.1:{self.sip_port}\n"
        return [b for b in blocks if to_me in b.split("\n", 1)[0] + "\n" and "\nINVITE sip:" in b]


def control(pbx: PbxProcess) -> Path:
    return pbx.stderr_path.parent / "run" / "control.sock"


def bindings(pbx: PbxProcess, user: str) -> int:
    regs = query(control(pbx), {"cmd": "status"}).get("registrations", [])
    return sum(1 for r in regs if str(r.get("aor", "")).startswith(f"{user}@"))


def wait_bindings(pbx: PbxProcess, user: str, want_some: bool, timeout: float = 10.0) -> None:
    """Wait until `user` has a binding at the PBX (or none, `want_some=False`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (bindings(pbx, user) > 0) == want_some:
            return
        time.sleep(0.1)
    state = "registered" if want_some else "unregistered"
    raise AssertionError(f"{user} was not {state} in time")


# ---------------------------------------------------------------- what was heard


def _amplitude(power: float, n: int) -> float:
    """|X(f)|^2 of a sine of peak A over n samples is (A n / 2)^2."""
    return 2.0 * math.sqrt(max(power, 0.0)) / n


def heard_windows(
    samples: list[int],
    want: list[float],
    unwanted: list[float],
    window: int = WINDOW,
    step: int | None = None,
) -> list[float]:
    """The start times (s) of the windows where every `want` frequency is at least
    MIN_AMPLITUDE loud and MIN_RATIO times the power of each `unwanted` one and of
    each REFERENCE frequency."""
    step = step or window
    others = [*unwanted, *REFERENCE]
    times = []
    for start in range(0, len(samples) - window + 1, step):
        chunk = samples[start : start + window]
        floor = max(goertzel_power(chunk, f) for f in others)
        if all(
            _amplitude(p, window) >= MIN_AMPLITUDE and p >= MIN_RATIO * floor
            for p in (goertzel_power(chunk, f) for f in want)
        ):
            times.append(start / RATE)
    return times


def seconds_heard(samples: list[int], want: list[float], unwanted: list[float]) -> float:
    """How long (s, in 100 ms windows) every `want` frequency was heard together."""
    return len(heard_windows(samples, want, unwanted)) * WINDOW / RATE
