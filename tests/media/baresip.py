"""A driver for baresip as a test peer (Debian ``baresip-core``).

    agent = Baresip(tmp_path / "alice", "alice", tone_hz=440)
    agent.start()
    agent.dial(other.aor)
    agent.wait_event("CALL_ESTABLISHED")
    ...
    agent.hangup(); agent.stop()
    dec = agent.recording("dec")           # what alice heard (WAV, 8 kHz mono)
    assert dominant_frequency(dec, [440, 1000]) == 1000

Each agent runs headless (no sound card): its microphone is ``aufile`` playing a sine
WAV written here, the ``sndfile`` filter records what it sends (``-enc.wav``) and
receives (``-dec.wav``) under its directory, and it is driven over ``ctrl_tcp``
(netstring JSON commands, events pushed on the same connection).
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.wav import parse_wav, wav_bytes

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")


def available() -> bool:
    return BARESIP is not None and (MODULES / "ctrl_tcp.so").exists()


def free_port(pair: bool = True) -> int:
    """A free port (both UDP and TCP, and port + 1 too when ``pair``)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 65000:
            continue
        try:
            held = []
            for p in (port, port + 1) if pair else (port,):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    t = socket.socket(socket.AF_INET, kind)
                    held.append(t)
                    t.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def sine_wav(path: Path, hz: float, seconds: float, amplitude: int = 8000) -> Path:
    n = int(seconds * 8000)
    pcm = struct.pack(
        f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
    )
    path.write_bytes(wav_bytes(pcm))
    return path


def wav_samples(path: Path) -> list[int]:
    pcm = parse_wav(path.read_bytes(), str(path)).pcm
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def tone_powers(samples: list[int], freqs: list[float]) -> dict[float, float]:
    """Goertzel power of each frequency over the middle half of the samples."""
    mid = samples[len(samples) // 4 : 3 * len(samples) // 4]
    return {f: goertzel_power(mid, f) for f in freqs}


# A tone must be at least this loud (peak amplitude, 16-bit PCM; about -44 dBFS) and
# carry this share of the signal's power to count as heard: digital silence, comfort
# noise or line noise is "no tone", never whichever frequency happened to come first.
MIN_AMPLITUDE = 200.0
MIN_SHARE = 0.25


def dominant_tone(
    samples: list[int],
    freqs: list[float],
    min_ratio: float = 20.0,
    min_amplitude: float = MIN_AMPLITUDE,
    min_share: float = MIN_SHARE,
) -> float | None:
    """The one frequency of ``freqs`` that stands out in the middle half of
    ``samples`` (8 kHz PCM), or None: none loud enough (``min_amplitude``), none
    holding ``min_share`` of the signal's power, or no single one ``min_ratio``
    times the power of each other one."""
    mid = samples[len(samples) // 4 : 3 * len(samples) // 4]
    if len(mid) < 800:
        return None
    powers = {f: goertzel_power(mid, f) for f in freqs}
    best = max(powers, key=powers.__getitem__)
    n = len(mid)
    # |X(f)|^2 of a sine of amplitude A over n samples is (A n / 2)^2; its power A^2 / 2.
    amplitude = 2.0 * math.sqrt(max(powers[best], 0.0)) / n
    mean_square = sum(x * x for x in mid) / n
    if amplitude < min_amplitude or amplitude * amplitude / 2 < min_share * mean_square:
        return None
    if all(powers[best] >= min_ratio * p for f, p in powers.items() if f != best):
        return best
    return None


def dominant_frequency(path: Path, freqs: list[float], min_ratio: float = 20.0) -> float | None:
    """`dominant_tone` of a recording (WAV, 8 kHz mono): the frequency heard, or None."""
    samples = wav_samples(path)
    if len(samples) < 1600:
        return None
    return dominant_tone(samples, freqs, min_ratio)


class Baresip:
    def __init__(
        self,
        workdir: Path,
        user: str,
        tone_hz: float | None = 440.0,
        seconds: float = 60.0,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        extra_account: str = "",
        registrar: str | None = None,
        password: str | None = None,
    ) -> None:
        self.dir = workdir
        self.user = user
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = sip_port or free_port()
        self.ctrl_port = free_port(pair=False)
        lo = rtp_ports[0] if rtp_ports else free_port()
        self.rtp_ports = rtp_ports or (lo, lo + 1)
        self.tone_hz = tone_hz
        self.source = sine_wav(
            self.dir / "source.wav", tone_hz or 0.0, seconds, 8000 if tone_hz else 0
        )
        self.snd = self.dir / "snd"
        self.snd.mkdir(exist_ok=True)
        self.extra_account = extra_account
        self.registrar = registrar
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._token = 0

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def _write_config(self) -> None:
        lo, hi = self.rtp_ports
        (self.dir / "config").write_text(
            "\n".join(
                [
                    "poll_method epoll",
                    f"sip_listen 127.0.0.1:{self.sip_port}",
                    "net_interface 127.0.0.1",
                    f"audio_source aufile,{self.source}",
                    "audio_alert aufile,/dev/null",
                    f"rtp_ports {lo}-{hi + 8}",
                    "rtcp_mux no",
                    "jitter_buffer_delay 1-10",
                    f"module_path {MODULES}",
                    "module g711.so",
                    "module aufile.so",
                    "module sndfile.so",
                    "module_app account.so",
                    "module_app menu.so",
                    "module_app ctrl_tcp.so",
                    f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
                    f"snd_path {self.snd}",
                    "",
                ]
            )
        )
        params = ";regint=0" if self.registrar is None else ""
        if self.password:
            params += f";auth_pass={self.password}"
        if self.registrar:
            aor = f"<sip:{self.user}@{self.registrar}>"
        else:
            aor = f"<sip:{self.user}@127.0.0.1:{self.sip_port}>"
        (self.dir / "accounts").write_text(
            f"{aor};answermode=auto;audio_codecs=PCMU/8000/1,PCMA/8000/1{params}"
            f"{self.extra_account}\n"
        )
        (self.dir / "contacts").write_text("")

    def start(self, timeout: float = 10.0) -> None:
        if BARESIP is None:
            raise RuntimeError("baresip is not installed (apt install baresip-core)")
        self._write_config()
        log = (self.dir / "baresip.log").open("wb")
        self.proc = subprocess.Popen(
            [BARESIP, "-f", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"baresip exited:\n{self.log()}") from None
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"baresip ctrl_tcp did not open:\n{self.log()}")

    def log(self) -> str:
        path = self.dir / "baresip.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # netstring JSON over ctrl_tcp --------------------------------------------

    def _read_messages(self, timeout: float) -> list[dict[str, Any]]:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not data:
            raise RuntimeError(f"baresip closed its control connection:\n{self.log()}")
        self._buf += data
        out = []
        while b":" in self._buf:
            length, _, rest = self._buf.partition(b":")
            if not length.isdigit() or len(rest) < int(length) + 1:
                break
            n = int(length)
            out.append(json.loads(rest[:n]))
            self._buf = rest[n + 1 :]
        return out

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        assert self.sock is not None
        self._token += 1
        token = f"t{self._token}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = None
            # Keep every event of the batch: the whole call set-up may arrive in
            # the same read as the answer to `dial`.
            for msg in self._read_messages(0.2):
                if msg.get("response") and msg.get("token") == token:
                    answer = msg
                elif msg.get("event"):
                    self.events.append(msg)
            if answer is not None:
                return answer
        raise TimeoutError(f"no answer to {command} from baresip")

    def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The first not yet consumed event of type ``kind`` (e.g. CALL_ESTABLISHED)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("type") == kind:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                seen = [e.get("type") for e in self.events]
                raise TimeoutError(f"{self.user}: no {kind} event (saw {seen})\n{self.log()}")
            for msg in self._read_messages(0.2):
                if msg.get("event"):
                    self.events.append(msg)

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def hangup(self) -> None:
        self.command("hangup")

    def send_dtmf(self, digits: str) -> None:
        self.command("sndcode", digits)

    # ---------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> None:
        """Quit cleanly (SIGTERM: sndfile then writes its WAV headers)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def recording(self, which: str = "dec") -> Path:
        """The newest ``-dec.wav`` (what this agent heard) or ``-enc.wav`` (sent)."""
        files = sorted(self.snd.glob(f"dump-*-{which}.wav"), key=lambda p: p.stat().st_mtime)
        if not files:
            raise FileNotFoundError(f"{self.user}: no {which} recording in {self.snd}")
        return files[-1]
