"""Listen, whisper, barge (features/barge + pbx/call_barge.py) on the office harness:
never without a pbx_barge row; a listener hears the call through a MixBridge while
nobody hears it; the call goes back to its relay when the third phone leaves; the
end of the call releases the third phone; the CDR names who joined."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.media.codecs import CODECS
from pbx_core.pbx.cdr import Cdr
from tests.harness.office import Office, offices

BARGE = ["extension(string) modes(string) targets(string)", "102:listen,barge:101"]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_barge": BARGE})


def _tone() -> bytes:
    pcm = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160)
    )
    return CODECS["PCMU"].encode(pcm)


def test_only_with_the_permission(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    c, d = office.phone("102"), office.phone("103")
    assert c.call("*222101").status == 480  # 101 is in no call
    call = a.call("101")
    assert d.call("*222101").status == 403  # 103 has no row
    assert c.call("*223101").status == 403  # 102 may not whisper
    assert c.call("*222100").status == 403  # nor join 100's calls
    assert c.call("*222999").status == 404
    assert office.engine.calls.by_key[call.key].mix is None
    call.hang_up()
    assert len(b.byes) == 1 and office.left_behind() == []


def test_a_listener_hears_the_call_and_leaves_it_as_it_was(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    target = office.engine.calls.by_key[call.key]
    spy = c.call("*222101")
    assert spy.status == 200
    assert target.mix is not None and target.media is not None
    assert target.media.caller.mode == "mix" and target.media.callee.mode == "mix"
    assert call.rtp is not None and spy.rtp is not None
    spy.rtp.received()
    for _ in range(25):  # half a second of the caller speaking
        call.rtp.audio(call.pbx_port, _tone())
        office.advance(0.02)
        office.settle_io(2)
    heard = spy.rtp.received()
    assert len(heard) >= 10  # the listener gets the mix
    assert any(p[12:] != b"\xff" * len(p[12:]) for p in heard)  # with the caller in it
    spy.hang_up()
    assert target.mix is None  # the call is back on its relay
    assert (target.media.caller.mode, target.media.callee.mode) == ("relay", "relay")
    assert target.state.value == "answered" and a.byes == [] and b.byes == []
    call.hang_up()
    assert office.left_behind() == []


def test_the_end_of_the_call_releases_the_third_phone(office: Office) -> None:
    a, c = office.phone("100"), office.phone("102")
    office.phone("101")
    call = a.call("101")
    target = office.engine.calls.by_key[call.key]
    barge = c.call("*224101")
    assert barge.status == 200
    assert target.mix is not None
    call.hang_up()
    assert len(c.byes) == 1  # the barging phone's call ends with it
    assert Cdr.from_call(target).barged == ("102@pbx.local (barge)",)  # the CDR says so
    assert office.left_behind() == []
