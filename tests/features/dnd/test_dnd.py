"""Do not disturb (features/dnd): *78 on, *79 off, *76 toggles; while on, a call to
the extension gets 486 and its phone does not ring; the toggle survives a restart."""

from __future__ import annotations

import time

import pytest

from pbx_core.store.state import StateStore
from tests.harness.office import Office, Phone


def dial_code(phone: Phone, code: str) -> None:
    """Dial a toggle code: answered, a confirmation, then the PBX hangs up."""
    office = phone.office
    call = phone.call(code)
    assert call.status == 200, call.status
    for _ in range(30):  # the confirmation (a tone per prompt without prompts), a pause
        office.advance(1)
        if call.call_id in [b.call_id for b in phone.byes]:
            break
    else:
        raise AssertionError("the PBX did not hang up")
    assert office.left_behind() == []


def test_dnd_on_makes_the_callee_busy_and_off_makes_it_ring(office: Office) -> None:
    caller, callee = office.phone("100"), office.phone("101")
    dial_code(callee, "*78")
    call = caller.call("101")
    assert call.status == 486
    assert callee.incoming == []  # its phone never rang
    dial_code(callee, "*79")
    call = caller.call("101")
    assert call.status == 200
    assert len(callee.incoming) == 1
    call.hang_up()
    assert office.left_behind() == []


def test_star76_toggles(office: Office) -> None:
    caller, callee = office.phone("100"), office.phone("101")
    dial_code(callee, "*76")
    assert caller.call("101").status == 486
    dial_code(callee, "*76")
    call = caller.call("101")
    assert call.status == 200
    call.hang_up()


def test_dnd_is_per_extension(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*78")
    call = a.call("102")
    assert call.status == 200
    call.hang_up()
    assert c.incoming and not b.incoming


def test_a_code_with_digits_after_it_sets_nothing(office: Office) -> None:
    caller, callee = office.phone("100"), office.phone("101")
    assert callee.call("*781").status == 404
    call = caller.call("101")
    assert call.status == 200
    call.hang_up()


def test_dnd_survives_a_restart_of_the_engine(office: Office) -> None:
    caller, callee = office.phone("100"), office.phone("101")
    dial_code(callee, "*78")
    office.restart()  # close() waits for the writer: the toggle is on disk
    assert caller.register() == 200 and callee.register() == 200
    assert office.engine.features.toggles("101")["dnd.dnd"] is True
    assert caller.call("101").status == 486
    dial_code(callee, "*79")
    office.restart()
    assert caller.register() == 200 and callee.register() == 200
    call = caller.call("101")
    assert call.status == 200
    call.hang_up()


def test_a_restart_waits_for_a_slow_write(office: Office, monkeypatch: pytest.MonkeyPatch) -> None:
    # The toggle is written by a thread off the loop; a flash write may be slow. The
    # engine's close waits for it, so a restart right after the code loses nothing.
    slow = StateStore.set_toggle

    def set_toggle(self: StateStore, aor: str, name: str, value: object) -> None:
        time.sleep(0.3)
        slow(self, aor, name, value)

    monkeypatch.setattr(StateStore, "set_toggle", set_toggle)
    callee = office.phone("101")
    call = callee.call("*78")
    assert call.status == 200
    office.restart()
    assert office.engine.features.toggles("101")["dnd.dnd"] is True
