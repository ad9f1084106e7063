"""What the feature interop tests share (tests/interop/test_features_*.py): a `pbx run`
on configs/features, SIPp phones, a SIPp "provider" on the trunk, an ear that hears
what the PBX plays to a phone, and the daemon's feature toggles over its control socket.

configs/features is configs/calls with 5 s ring timeouts (the schema's least), call
classes (100-102 national, 103 internal), the trunk on IP authentication (the provider
sees only calls) and two ring groups: 600 ringall 101,102 failing over to extension
103, and 601 hunt 101,102.
"""

from __future__ import annotations

import shutil
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbx_core.media.codecs.g711 import ulaw_decode
from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.engine import MediaSettings
from pbx_core.media.tones import tone
from pbx_core.pbx.control import query
from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import Phones, Run, Server, check, free_port

CONFIG = Path(__file__).resolve().parent / "configs" / "features"
PROVIDER_IP = "127.0.0.2"
EXTENSIONS = ("100", "101", "102", "103")
TOGGLES = (
    "dnd.dnd",
    "callwaiting.call_waiting",
    "forward.forward_all",
    "forward.forward_busy",
    "forward.forward_noanswer",
)
RING_TIMEOUT = 5.0  # configs/features: every extension's and group's ring_timeout


def write_config(dest: Path, provider_port: int) -> Path:
    """configs/features with the trunk pointed at the provider's port."""
    shutil.copytree(CONFIG, dest)
    trunk = dest / "pbx_trunk"
    trunk.write_text(
        trunk.read_text().replace(f"{PROVIDER_IP}:5090:", f"{PROVIDER_IP}:{provider_port}:")
    )
    assert f":{provider_port}:" in trunk.read_text()
    return dest


class Ear:
    """A UDP socket a phone's SDP names as its media address: what the PBX sent there."""

    def __init__(self, ip: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.payloads: list[bytes] = []

    def drain(self) -> list[bytes]:
        """The PCMU payloads of the RTP packets received so far (RFC 3550 §5.1)."""
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.payloads
            if len(data) > 12 and data[0] >> 6 == 2 and data[1] & 0x7F == 0:
                cc = data[0] & 0x0F
                self.payloads.append(data[12 + 4 * cc :])

    def samples(self) -> list[int]:
        pcm = ulaw_decode(b"".join(self.drain()))
        return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))

    def heard_confirmation(self) -> bool:
        """The PBX's confirmation tone (no prompt files in the tests' assets: a
        missing prompt is a beep) stands out from a frequency it does not contain."""
        samples = self.samples()
        if len(samples) < 800:  # less than 0.1 s of audio
            return False
        freqs = tone("confirmation", MediaSettings().country).freqs
        wanted = max(goertzel_power(samples, f) for f in freqs)
        return wanted > 20 * goertzel_power(samples, 1000.0)

    def close(self) -> None:
        self.sock.close()


@dataclass
class Env:
    pbx: PbxProcess
    tmp: Path
    provider_port: int

    @property
    def addr(self) -> tuple[str, int]:
        return (self.pbx.host, self.pbx.port)

    @property
    def phones(self) -> Phones:
        return Phones(self.addr)

    @property
    def control(self) -> Path:
        return self.tmp / "run" / "control.sock"

    @property
    def state(self) -> Path:
        return self.tmp / "state.mdb"

    def toggles(self, extension: str) -> dict[str, Any]:
        answer = query(self.control, {"cmd": "toggles", "extension": extension})
        toggles = answer.get("toggles")
        assert isinstance(toggles, dict), answer
        return toggles

    def set_toggle(self, extension: str, name: str, value: Any) -> dict[str, Any]:
        """Set a toggle as the console does; the extension's toggles after it."""
        answer = query(
            self.control, {"cmd": "toggles", "extension": extension, "set": name, "value": value}
        )
        toggles = answer.get("toggles")
        assert isinstance(toggles, dict) and name in toggles, answer
        return toggles

    def reset(self) -> None:
        """Every extension's toggles back to the tables' values (configs/features sets
        none: all off), so one test's settings are not the next's."""
        for ext in EXTENSIONS:
            for name in TOGGLES:
                value = self.set_toggle(ext, name, None)[name]
                assert not value or name == "callwaiting.call_waiting", (ext, name, value)

    def provider(self, tmp: Path) -> Server:
        return Server(
            "provider.xml", tmp, "provider", local_ip=PROVIDER_IP, port=self.provider_port
        )

    def dial_code(self, tmp: Path, user: str, code: str) -> Run:
        """`user` dials the feature code `code`: the PBX must answer, play its
        confirmation to the phone and hang up (BYE)."""
        ear = Ear()
        try:
            res = self.phones.call(
                tmp,
                "feat_code.xml",
                code,
                user=user,
                name=f"code-{user}",
                keys={"rtp_port": str(ear.port)},
            )
            check(res)
            assert res.responses(200, "2 INVITE"), res.report()
            assert len(res.requests("BYE")) == 1, res.report()  # the PBX hung up
            assert ear.heard_confirmation(), (len(ear.payloads), res.report())
        finally:
            ear.close()
        return res


def start(tmp: Path, provider_port: int | None = None) -> Env:
    """A PBX on configs/features with its state LMDB in tmp (the same `tmp` again
    restarts it on the same state)."""
    port = provider_port or free_port(PROVIDER_IP)
    config = tmp / "config"
    if not config.exists():
        write_config(config, port)
    pbx = start_pbx(tmp, config=config, extra=["--state", str(tmp / "state.mdb")])
    return Env(pbx, tmp, port)


def stop(env: Env) -> None:
    """SIGTERM; a clean shutdown leaves no traceback behind."""
    stop_pbx(env.pbx)
    assert "Traceback" not in env.pbx.log(), env.pbx.log()
