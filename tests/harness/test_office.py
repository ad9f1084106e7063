"""The simulated phones against the engine: what the feature tests lean on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.office import Office, offices


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path)


def test_a_phone_registers_with_digest_and_a_wrong_password_does_not(office: Office) -> None:
    good = office.phone("101")
    assert office.engine.registrar.lookup("101@pbx.local", office.loop.time())
    bad = office.phone("102", register=False)
    bad.password = "wrong"
    assert bad.register() in (401, 403)  # the answer to the challenge is refused
    assert not office.engine.registrar.lookup("102@pbx.local", office.loop.time())
    assert good.register(expires=0) == 200
    assert not office.engine.registrar.lookup("101@pbx.local", office.loop.time())


def test_a_call_answered_acked_and_hung_up_by_the_callee(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    assert call.provisionals == [180] and call.status == 200
    (inc,) = b.incoming
    assert inc.acked  # the PBX ACKed the callee's 200
    assert call.pbx_call is not None and call.pbx_call.awaiting_ack == {}  # the caller ACKed
    inc.bye()
    assert [x.call_id for x in a.byes] == [call.call_id]
    assert call.state == "ended"
    assert office.left_behind() == []


def test_a_cancelled_call_cancels_the_ringing_phone(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    call = a.call("101")
    assert call.status is None and len(b.ringing()) == 1
    call.cancel()
    assert call.status == 487
    assert [i.state for i in b.incoming] == ["cancelled"]
    assert office.left_behind() == []


def test_an_unregistered_extension_is_480_and_nobody_rings(office: Office) -> None:
    a = office.phone("100")
    assert a.call("101").status == 480
    assert office.stack.sent_requests("INVITE") == []
