"""In-call blind transfer `##` (features/transfer + pbx/call_keys.py) on the office
harness: the extension presses ## and a number, the other party goes there and the
extension is released; nothing dialled brings it back; the extension's call class
applies (refused: the extension is rung back); a trunk caller's keys are ignored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.office import (
    PROVIDER_TRUNK,
    Office,
    extension_row,
    extensions,
    offices,
)


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


def test_hash_hash_sends_the_other_party_to_the_number(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("101")
    assert call.status == 200
    (inc_b,) = b.incoming
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("##")
    assert pbx_call.aside == "a"  # 100 stepped aside: 101 hears music on hold
    assert pbx_call.media is not None and pbx_call.media.callee.mode in ("source", "silent")
    office.advance(1)  # the prompt (a beep on a build without prompts)
    call.keys("102#")
    office.advance(1)
    (inc_c,) = c.incoming
    assert inc_c.state == "answered"
    assert "<sip:101@" in inc_c.invite.headers.get("from")  # the one transferred
    assert len(a.byes) == 1 and b.byes == []  # 100 released, 101 stays
    assert pbx_call.answered is not None and pbx_call.answered.target.label.startswith("102@")
    inc_b.bye()
    assert len(c.byes) == 1
    assert office.left_behind() == []


def test_nothing_dialled_brings_the_extension_back(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("##")
    assert pbx_call.aside == "a"
    office.advance(12)  # no key within the first 10 s
    assert pbx_call.aside is None
    assert pbx_call.media is not None
    assert (pbx_call.media.caller.mode, pbx_call.media.callee.mode) == ("relay", "relay")
    assert a.byes == [] and b.byes == []
    call.keys("#")  # a single # later is a digit for the far end, not a code
    assert pbx_call.aside is None
    call.hang_up()
    assert office.left_behind() == []


def test_the_transferring_extensions_class_applies(trunk_office: Office) -> None:
    office = trunk_office
    office.reload("pbx_extension", extensions(extension_row(1, "100", call_class="internal")))
    a, b = office.phone("100"), office.phone("101")
    provider = office.provider()
    call = a.call("101")
    call.keys("##")
    office.advance(1)
    call.keys("0123456#")
    office.advance(2)
    assert provider.incoming == []  # never reached the trunk
    # Refused: 100 is rung back (and its phone answers), 101 still in a call with it.
    assert len(a.incoming) == 1 and a.incoming[0].state == "answered"
    assert b.byes == []
    (inc_b,) = b.incoming
    inc_b.bye()
    assert office.left_behind() == []


def test_a_trunk_callers_keys_are_ignored(trunk_office: Office) -> None:
    office = trunk_office
    office.phone("100")
    provider = office.provider()
    call = provider.call("5550100", auth=False)  # the factory DID rings group 600
    assert call.status == 200
    pbx_call = office.engine.calls.by_key[call.key]
    call.keys("##")
    office.advance(1)
    assert pbx_call.aside is None
    call.hang_up()
    assert office.left_behind() == []
