"""Anchored media against SIPp phones that really send RTP (issue 6): the per-leg RTP
figures land in the CDR, a delayed offer (INVITE without SDP) is anchored too, and
the direct-media setting lets two LAN phones talk to each other without the PBX.

The PBX advertises its media on 127.0.0.9 (`--media-address`) while the phones sit
on 127.0.0.4 (caller) and 127.0.0.5 (callee), so every SDP says whose address it
carries. The phones send G.711 A-law from the pcap Debian's sip-tester ships.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FACTORY, PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import Message, Phones, Run, wait_cdr

PCAP = Path("/usr/share/sip-tester/g711a.pcap")
PBX_MEDIA = "127.0.0.9"
CALLER_IP, CALLEE_IP = "127.0.0.4", "127.0.0.5"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.tools("sipp", "sipp-pcap"),
]


@dataclass
class Env:
    """A PBX on the factory tables (with some settings changed), its media on
    PBX_MEDIA, and SIPp phones on CALLER_IP and CALLEE_IP."""

    pbx: PbxProcess
    tmp: Path
    phones: Phones

    @property
    def state(self) -> Path:
        return self.tmp / "state.mdb"

    def cdr(self, res: Run) -> dict[str, str]:
        """The CDR of the call `res` (a caller's run) made."""
        return wait_cdr(self.state, res.call_id)


def _config(dest: Path, settings: dict[str, str]) -> Path:
    shutil.copytree(FACTORY, dest)
    table = dest / "pbx_settings"
    lines = [
        line for line in table.read_text().splitlines() if line.split(":", 1)[0] not in settings
    ]
    lines += [f"{k}:{v}" for k, v in settings.items()]
    table.write_text("\n".join(lines) + "\n")
    return dest


@contextmanager
def media_pbx(
    tmp: Path, settings: dict[str, str] | None = None, keys: dict[str, str] | None = None
) -> Iterator[Env]:
    """A PBX with `settings` for as long as the block runs (its phones get `keys` in
    every scenario); it must shut down without a traceback."""
    config = _config(tmp / "config", settings or {})
    pbx = start_pbx(
        tmp, config=config, extra=["--state", str(tmp / "state.mdb"), "--media-address", PBX_MEDIA]
    )
    phones = Phones((pbx.host, pbx.port), CALLER_IP, CALLEE_IP, keys or {})
    try:
        yield Env(pbx, tmp, phones)
    finally:
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log(), pbx.log()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with media_pbx(tmp_path_factory.mktemp("media")) as e:
        yield e


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A PBX with direct_media on (lan_networks left at its default, which holds
    127.0.0.0/8 and so both phones)."""
    with media_pbx(tmp_path_factory.mktemp("direct"), {"direct_media": "yes"}) as e:
        yield e


def sdp_address(msg: Message) -> tuple[str, int]:
    """The connection address and audio port of a message's SDP."""
    conn = re.search(r"^c=IN IP4 (\S+)", msg.body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+) ", msg.body, re.MULTILINE)
    assert conn and port, msg.text
    return conn.group(1), int(port.group(1))


# ---------------------------------------------------------------- RTP figures in the CDR


def test_cdr_carries_each_legs_rtp_figures(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_media_talk.xml", "uas_media_talk.xml")
    # Anchored (direct_media is off by default): each phone sees the PBX's address.
    (invite,) = b.requests("INVITE")
    assert sdp_address(invite)[0] == PBX_MEDIA, invite.text
    ok = res.responses(200)[0]
    assert sdp_address(ok)[0] == PBX_MEDIA, ok.text
    row = env.cdr(res)
    assert row["disposition"] == "ANSWERED"
    # Two seconds of 50 packet/s audio from each phone went through the relay.
    for side in ("caller", "callee"):
        assert row[f"{side}_codec"] == "PCMA", row
        assert int(row[f"{side}_rtp_in"]) > 40, row
        assert int(row[f"{side}_rtp_out"]) > 40, row
        assert float(row[f"{side}_jitter_ms"]) >= 0.0
    # What the caller sent is what the PBX sent the callee (the caller also heard
    # the PBX's ringback before the answer, so not the other way round).
    assert abs(int(row["caller_rtp_in"]) - int(row["callee_rtp_out"])) <= 5, row
    assert int(row["caller_rtp_out"]) >= int(row["callee_rtp_in"]), row


# ---------------------------------------------------------------- delayed offer


def test_delayed_offer_is_anchored(env: Env, tmp_path: Path) -> None:
    """INVITE without SDP: B's offer reaches A rewritten to the PBX's address, A's
    answer (in its ACK) reaches B in the PBX's ACK, and RTP flows through the relay."""
    res, b = env.phones.talk(tmp_path, "uac_media_late.xml", "uas_media_late.xml")
    (invite,) = b.requests("INVITE")
    assert invite.body.strip() == "", invite.text  # the offer is still B's to make
    ok = res.responses(200)[0]
    assert sdp_address(ok)[0] == PBX_MEDIA, ok.text  # B's offer, anchored
    assert "o=callee" not in ok.body
    (ack,) = b.requests("ACK")
    assert sdp_address(ack)[0] == PBX_MEDIA, ack.text  # A's answer, anchored
    assert "o=caller" not in ack.body and "PCMA/8000" in ack.body
    row = env.cdr(res)
    assert row["disposition"] == "ANSWERED", row
    for side in ("caller", "callee"):
        assert row[f"{side}_codec"] == "PCMA", row
        assert int(row[f"{side}_rtp_in"]) > 40, row  # each phone's audio reached the PBX
        assert int(row[f"{side}_rtp_out"]) > 40, row  # and was relayed to the other


def test_delayed_offer_answered_without_offer_is_refused(env: Env, tmp_path: Path) -> None:
    """B's 200 to an INVITE without SDP has no offer: B gets its ACK and a BYE, A a 502."""
    res, b = env.phones.talk(tmp_path, "uac_late_reject.xml", "uas_late_no_offer.xml")
    assert res.statuses()[-1] == 502, res.report()
    assert len(b.requests("ACK")) == 1 and len(b.requests("BYE")) == 1, b.report()
    row = env.cdr(res)
    assert row["disposition"] == "FAILED" and "no offer" in row["cause"], row


def test_delayed_offer_ack_without_answer_ends_the_call(env: Env, tmp_path: Path) -> None:
    """A's ACK carries no answer to the offer it got: both sides get a BYE."""
    res, b = env.phones.talk(
        tmp_path, "uac_late_no_answer.xml", "uas_media_late.xml", callee_completes=False
    )
    assert len(res.requests("BYE")) == 1, res.report()
    assert len(b.requests("BYE")) == 1, b.report()
    row = env.cdr(res)
    assert "no usable answer in ACK" in row["cause"], row
    assert "ACK carries no answer" in env.pbx.log()


# ---------------------------------------------------------------- direct media


def _sdp_of(res: Run, direction: str, what: str) -> Message:
    """The first message with SDP sent or received whose first line has `what`."""
    return next(
        m for m in res.messages if m.direction == direction and what in m.first_line and m.body
    )


def test_direct_media_between_lan_phones(direct: Env, tmp_path: Path) -> None:
    """Both phones on the LAN: each sees the other's own SDP address and port, RTP
    goes phone to phone, and the CDR has no relay figures."""
    res, b = direct.phones.talk(tmp_path, "uac_media_talk.xml", "uas_media_talk.xml")
    a_offer = res.sent("INVITE")[-1]
    (b_invite,) = b.requests("INVITE")
    assert sdp_address(b_invite) == sdp_address(a_offer) == (CALLER_IP, sdp_address(a_offer)[1])
    b_answer = _sdp_of(b, "sent", "200 OK")
    a_answer = next(m for m in res.received() if m.status == 200 and m.body)
    assert sdp_address(a_answer) == sdp_address(b_answer)
    assert sdp_address(a_answer)[0] == CALLEE_IP
    row = direct.cdr(res)
    assert row["disposition"] == "ANSWERED"
    assert row["caller_codec"] == row["callee_codec"] == "" and row["caller_rtp_in"] == ""


def test_direct_media_hold_passes_end_to_end(direct: Env, tmp_path: Path) -> None:
    """With the media off the PBX, a hold re-INVITE goes to the other phone (no music
    on hold: the PBX is not in the media path)."""
    _res, b = direct.phones.talk(tmp_path, "uac_call_hold.xml", "uas_answer.xml")
    invites = b.requests("INVITE")
    assert len(invites) == 2, b.report()
    assert "a=sendonly" in invites[1].body or "a=inactive" in invites[1].body
    assert sdp_address(invites[1])[0] == CALLER_IP


def test_direct_media_callee_off_the_lan_is_anchored_after_all(direct: Env, tmp_path: Path) -> None:
    """The callee answers with an address off the LAN (192.0.2.1): A gets the PBX's
    answer and B a re-INVITE that moves its media to the PBX."""
    res, b = direct.phones.talk(
        tmp_path, "uac_call.xml", "uas_media_elsewhere.xml", callee_keys={"media_addr": "192.0.2.1"}
    )
    first, second = b.requests("INVITE")
    assert sdp_address(first)[0] == CALLER_IP  # direct media was tried
    assert sdp_address(second)[0] == PBX_MEDIA, second.text  # and then anchored
    a_answer = next(m for m in res.received() if m.status == 200 and m.body)
    assert sdp_address(a_answer)[0] == PBX_MEDIA, a_answer.text
    assert "callee's media is off the LAN" in direct.pbx.log()
    assert len(b.requests("BYE")) == 1
