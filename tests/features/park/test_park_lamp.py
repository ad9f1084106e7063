"""The busy lamps of park slots 71-78 (the park feature's `lamp` hook, the core's
`dialog` package, pbx/presence.py): lit (`confirmed`) while a call is parked on the
slot, `terminated` when it is retrieved or the timeout rings it back; other slots
stay dark; a number that is no slot and no extension cannot be watched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.park import FEATURE as PARK
from tests.features.park.test_park import SETTINGS
from tests.harness.office import DOMAIN, Office, offices
from tests.pbx.test_call_ops import refer
from tests.pbx.test_presence_lamps import Lamp, settle


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_settings": SETTINGS})
    assert PARK.slots == {}


def test_the_slot_lamp_follows_a_park_and_a_retrieve(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    lamp71 = Lamp(office, office.phone("103"))
    lamp72 = Lamp(office, office.phone("103"))
    assert lamp71.watch("71").status == 200 and lamp72.watch("72").status == 200
    first = lamp71.notifies[0]
    assert first.headers.get("content-type") == "application/dialog-info+xml"
    assert f'entity="sip:71@{DOMAIN}"' in first.body.decode()
    assert lamp71.states() == ["terminated"]
    a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:70@{DOMAIN}>") == 202
    settle(office)
    assert lamp71.states() == ["terminated", "confirmed"]
    got = c.call("71")
    assert got.status == 200
    settle(office)
    assert lamp71.states() == ["terminated", "confirmed", "terminated"]
    assert lamp71.versions() == [0, 1, 2]
    assert lamp72.states() == ["terminated"]  # never lit
    got.hang_up()
    assert office.engine.status()["subscriptions"] == {"dialog": 2}
    assert office.left_behind() == []


def test_the_slot_lamp_goes_dark_when_the_timeout_rings_back(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    lamp = Lamp(office, office.phone("103"))
    assert lamp.watch("71").status == 200
    call = a.call("101")
    (inc_b,) = b.incoming
    assert refer(b, inc_b, f"<sip:70@{DOMAIN}>") == 202
    settle(office)
    assert lamp.states()[-1] == "confirmed"
    office.advance(11)  # park_timeout: rung back to 101, no longer retrievable
    assert lamp.states()[-1] == "terminated"
    call.hang_up()
    assert office.left_behind() == []


@pytest.mark.parametrize("resource", ["70", "79"])
def test_a_number_that_is_no_slot_has_no_lamp(office: Office, resource: str) -> None:
    assert Lamp(office, office.phone("103")).watch(resource).status == 404
