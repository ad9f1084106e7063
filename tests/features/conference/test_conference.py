"""Conference rooms (features/conference + pbx/rooms.py) on the office harness: the
PIN and the admin PIN, full and locked rooms, N-1 mixing measured with distinct
tones (µ-law and A-law members in one room), mute, the admin's keys, leaving and
the room's end with its last member."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.conference import FEATURE
from pbx_core.media.codecs import CODECS
from pbx_core.media.dtmf import goertzel_power
from pbx_core.media.mixer import samples
from tests.harness.office import (
    PROVIDER,
    PROVIDER_TRUNK,
    Office,
    Outgoing,
    Phone,
    RtpSocket,
    offices,
)

HEADER = (
    "number(string) pin(string,null) admin_pin(string,null) max_members(int) "
    "announce_join(int) music_when_alone(int) pin_attempts(int) enabled(int)"
)
TABLES = {
    "pbx_conference": [
        HEADER,
        "800:::10:0:0:3:1",  # open room, no tone, no music: clean measurements
        "801:1234:9999:3:1:1:2:1",  # PIN, admin PIN, three members at most
        "802:::10:1:1:3:0",  # disabled
    ],
    "pbx_trunk": PROVIDER_TRUNK,
    "pbx_did": [
        "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
        "description(string,null)",
        "1:5550100:provider:conference:800:",
    ],
}
HZ = {"100": 440.0, "101": 770.0, "102": 1210.0}


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables=TABLES)


def tone(hz: float, codec: str = "PCMU", k: int = 0) -> bytes:
    pcm = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * (n + 160 * k) / 8000)))
        for n in range(160)
    )
    return CODECS[codec].encode(pcm)


def join(office: Office, number: str, room: str, keys: str = "") -> Outgoing:
    call = office.phone(number).call(room)
    assert call.status == 200, call.status
    office.advance(1)  # the PIN prompt (a beep without prompts), or the join
    if keys:
        call.keys(keys)
        office.advance(1)
    return call


def members(room: str) -> int:
    state = FEATURE.rooms.get(room)
    return len(state.members) if state is not None else 0


def talk(office: Office, calls: dict[str, Outgoing], seconds: float, pcma: str = "") -> dict:
    """Every call sends its own tone for `seconds`; what each one heard, decoded."""
    for c in calls.values():
        assert c.rtp is not None
        c.rtp.received()
    for k in range(int(seconds / 0.02)):
        for n, c in calls.items():
            assert c.rtp is not None
            codec = "PCMA" if n == pcma else "PCMU"
            c.rtp.send(c.pbx_port, 8 if codec == "PCMA" else 0, tone(HZ[n], codec, k))
            c.rtp.ts += 160
        office.advance(0.02)
        office.settle_io(2)
    heard = {}
    for n, c in calls.items():
        assert c.rtp is not None
        codec = "PCMA" if n == pcma else "PCMU"
        pcm = b"".join(
            CODECS[codec].decode(p[12:]) for p in c.rtp.received() if p[1] & 0x7F in (0, 8)
        )
        heard[n] = samples(pcm)
    return heard


def power(heard: object, hz: float) -> float:
    return goertzel_power(heard, hz)  # type: ignore[arg-type]


def test_each_member_hears_the_others_and_not_itself_alaw_and_ulaw(office: Office) -> None:
    calls = {n: join(office, n, "800") for n in ("100", "101")}
    # 102 offers A-law only.
    rtp = RtpSocket()
    office.sockets.append(rtp)
    body = (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp.port} RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    c = office.phone("102").call("800", body)
    assert c.status == 200 and " 8 " in c.final.body.decode().split("m=audio")[1] + " "
    c.rtp = rtp
    calls["102"] = c
    office.advance(0.5)
    assert members("800") == 3
    heard = talk(office, calls, 1.0, pcma="102")
    for n, pcm in heard.items():
        assert len(pcm) > 4000, n
        p = {m: power(pcm[-4000:], hz) for m, hz in HZ.items()}
        others = [p[m] for m in HZ if m != n]
        assert min(others) > 50 * p[n], (n, p)  # N-1: the two others, not itself
    for c in calls.values():
        c.hang_up()
    assert members("800") == 0 and office.engine.features.rooms.bridge("conference", "800") is None
    assert office.left_behind() == []


def test_pin_admin_pin_full_and_wrong_pin(office: Office) -> None:
    a = join(office, "100", "801", "1234#")
    assert members("801") == 1
    wrong = join(office, "103", "801", "1111#")
    office.advance(1)
    wrong.keys("2222#")  # the second (last) try
    office.advance(3)
    assert members("801") == 1 and len(wrong.phone.byes) == 1  # goodbye
    admin = join(office, "101", "801", "9999#")
    state = FEATURE.rooms["801"]
    assert [m.admin for m in state.members] == [False, True]
    c = join(office, "102", "801", "1234#")
    assert members("801") == 3
    full = join(office, "103", "801", "1234#")
    office.advance(3)
    assert members("801") == 3 and len(full.phone.byes) == 1  # "full", then BYE
    for call in (a, admin, c):
        call.hang_up()
    assert "801" not in FEATURE.rooms
    assert office.left_behind() == []


def test_unknown_or_disabled_room(office: Office) -> None:
    a = office.phone("100")
    assert a.call("802").status == 404
    assert a.call("899").status == 404  # no room, no extension: not found


def test_mute_self_and_the_admins_keys(office: Office) -> None:
    admin = join(office, "101", "801", "9999#")
    a = join(office, "100", "801", "1234#")
    bridge = office.engine.features.rooms.bridge("conference", "801")
    assert bridge is not None
    assert a.pbx_call is not None
    legs = bridge.legs
    a.keys("*1")
    office.advance(2)
    assert bridge._member(legs[1]).muted  # 100 muted itself
    a.keys("1")
    office.advance(2)
    assert not bridge._member(legs[1]).muted
    a.keys("2")  # not the admin: refused
    office.advance(3)
    assert not FEATURE.rooms["801"].locked
    admin.keys("4")  # mute all but the admin
    office.advance(3)
    assert bridge._member(legs[1]).muted and not bridge._member(legs[0]).muted
    admin.keys("4")
    office.advance(3)
    assert not bridge._member(legs[1]).muted
    admin.keys("2")  # lock
    office.advance(3)
    assert FEATURE.rooms["801"].locked
    late = join(office, "102", "801", "1234#")
    office.advance(3)
    assert members("801") == 2 and late.phone.byes  # "locked", then BYE
    admin.keys("*3")  # drop the last joiner (100)
    office.advance(3)
    assert members("801") == 1 and a.phone.byes
    admin.hang_up()
    assert "801" not in FEATURE.rooms  # the room (and its lock) ended with its last member
    again = join(office, "102", "801", "1234#")
    assert members("801") == 1
    again.hang_up()
    assert office.left_behind() == []


def test_a_muted_member_is_not_heard(office: Office) -> None:
    calls = {n: join(office, n, "800") for n in ("100", "101")}
    office.advance(0.5)
    calls["100"].keys("1")
    office.advance(2)
    heard = talk(office, calls, 1.0)
    assert power(heard["101"][-4000:], HZ["100"]) < 1e6 < power(heard["100"][-4000:], HZ["101"])
    for c in calls.values():
        c.hang_up()


def test_leaving_keeps_the_others_talking(office: Office) -> None:
    calls = {n: join(office, n, "800") for n in ("100", "101", "102")}
    office.advance(0.5)
    calls.pop("102").hang_up()
    assert members("800") == 2
    heard = talk(office, calls, 1.0)
    assert power(heard["100"][-4000:], HZ["101"]) > 50 * power(heard["100"][-4000:], HZ["102"])
    for c in calls.values():
        c.hang_up()
    assert members("800") == 0 and office.left_behind() == []


def _adhoc(office: Office) -> tuple[Outgoing, object]:
    a = office.phone("100")
    office.phone("101")
    third = office.phone("102")
    call = a.call("101")
    assert call.status == 200
    call.keys("*3")
    office.advance(0.5)
    call.keys("102#")
    office.advance(1)
    (inc,) = [i for i in third.incoming if i.state == "answered"]
    assert inc.header("From") and "100" in inc.header("From")[0]  # shows who conferences it
    office.advance(1)
    return call, inc


def test_adhoc_three_party_and_the_third_leaving(office: Office) -> None:
    call, inc = _adhoc(office)
    (state,) = FEATURE.adhoc.values()
    assert state.joined
    rooms = office.engine.features.rooms
    (room,) = FEATURE.adhoc
    bridge = rooms.bridge("conference", room)
    assert bridge is not None and len(bridge) == 3  # 100, 101 and 102 in one mix
    pbx_call = call.pbx_call
    assert pbx_call is not None and pbx_call.media is not None
    assert pbx_call.media.caller.mode == pbx_call.media.callee.mode == "mix"
    inc.bye()  # type: ignore[attr-defined]
    office.advance(1)
    assert FEATURE.adhoc == {} and len(rooms) == 0
    assert (pbx_call.media.caller.mode, pbx_call.media.callee.mode) == ("relay", "relay")
    assert pbx_call.state.value == "answered"  # 100 and 101 talk on
    call.hang_up()
    assert office.left_behind() == []


def test_adhoc_ends_with_the_call(office: Office) -> None:
    call, inc = _adhoc(office)
    assert len(office.engine.features.rooms) == 1
    call.hang_up()  # 100 hangs up: 101's leg and the third are released
    office.advance(2)
    assert inc.state == "ended"  # type: ignore[attr-defined]
    assert FEATURE.adhoc == {} and len(office.engine.features.rooms) == 0
    assert office.left_behind() == []


def test_an_outside_caller_joins_by_a_did(office: Office) -> None:
    outside = Phone(office, "0301234", PROVIDER[1] + 1, "", host=PROVIDER[0])
    office.phones[outside.address] = outside
    office.provider()
    inside = join(office, "100", "800")
    call = outside.call("5550100", auth=False)
    assert call.status == 200
    office.advance(1)
    assert members("800") == 2  # the DID's destination `conference`, target 800
    heard = talk(office, {"100": inside, "101": call}, 1.0)  # 101's tone from outside
    assert power(heard["100"][-4000:], HZ["101"]) > 50 * power(heard["100"][-4000:], HZ["100"])
    call.hang_up()
    inside.hang_up()
    assert members("800") == 0 and office.left_behind() == []
