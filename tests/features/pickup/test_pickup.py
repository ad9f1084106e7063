"""Call pickup (features/pickup + pbx/call_pickup.py) on the office harness: `*8`
within the pickup group, `**` + extension, INVITE with Replaces naming a ringing
call (a BLF key) or one's own answered leg (RFC 3891), and every refusal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.office import (
    DOMAIN,
    EXTENSION_HEADER,
    Incoming,
    Office,
    extension_row,
    offices,
)


def grouped(*rows: tuple[str, int | None]) -> list[str]:
    """The extension table with a pickup_group column: (number, group) per row."""
    lines = [EXTENSION_HEADER + " pickup_group(int,null)"]
    for n, (number, group) in enumerate(rows, 1):
        lines.append(extension_row(n, number) + ":" + ("" if group is None else str(group)))
    return lines


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    tables = {"pbx_extension": grouped(("100", None), ("101", 1), ("102", 1), ("103", 2))}
    yield from offices(tmp_path, tables=tables)


def test_star8_answers_a_call_ringing_in_the_group(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    c = office.phone("102")
    call = a.call("101")
    assert call.status is None
    (inc_b,) = b.incoming
    picked = c.call("*8")
    assert picked.status == 200 and call.status == 200
    assert inc_b.state == "cancelled"
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.answered is not None and pbx_call.answered.target.label == f"102@{DOMAIN}"
    assert pbx_call.media is not None
    assert pbx_call.media.caller.port == call.pbx_port  # the caller's leg as it rang
    assert pbx_call.media.callee.port == picked.pbx_port  # relayed to the picker's
    assert pbx_call.media.caller.partner is pbx_call.media.callee
    call.hang_up()
    assert len(c.byes) == 1
    assert office.left_behind() == []


def test_star8_outside_the_group_or_with_nothing_ringing_is_refused(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    d = office.phone("103")  # group 2
    assert d.call("*8").status == 480  # nothing rings in group 2
    call = a.call("101")
    assert d.call("*8").status == 480  # 101 is in group 1
    assert a.call("*8").status == 403  # 100 is in no group
    assert b.incoming[0].state == "ringing" and call.status is None
    call.cancel()
    assert office.left_behind() == []


def test_directed_pickup_of_an_extension(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    d = office.phone("103")
    call = a.call("101")
    assert d.call("**102").status == 480  # 102 is not ringing
    assert d.call("**999").status == 404
    picked = d.call("**101")  # any extension may pick up directly (FreePBX's **)
    assert picked.status == 200 and call.status == 200
    assert b.incoming[0].state == "cancelled"
    picked.hang_up()
    assert len(a.byes) == 1
    assert office.left_behind() == []


def _replaces(inc: Incoming, early_only: bool = False) -> str:
    """A Replaces header naming the PBX's dialog with the phone of `inc` as that
    phone sees it (BLF pickup learns it from the dialog event package)."""
    tail = ";early-only" if early_only else ""
    return f"\nReplaces: {inc.call_id};to-tag={inc.invite.from_.tag};from-tag={inc.tag}{tail}"


def test_invite_with_replaces_picks_up_a_ringing_call(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    d = office.phone("103")
    call = a.call("101")
    (inc_b,) = b.incoming
    picked = d.call("101", extra=_replaces(inc_b, early_only=True))
    assert picked.status == 200 and call.status == 200
    assert inc_b.state == "cancelled"
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.media is not None and pbx_call.media.callee.port == picked.pbx_port
    call.hang_up()
    assert len(d.byes) == 1
    assert office.left_behind() == []


def test_invite_with_replaces_moves_ones_own_answered_call(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("101")
    (inc_b,) = b.incoming
    # Another extension may not take 101's call; early-only refuses an answered one.
    assert office.phone("103").call("101", extra=_replaces(inc_b)).status == 403
    desk = office.phone("101")  # 101's second phone
    assert desk.call("101", extra=_replaces(inc_b, early_only=True)).status == 486
    moved = desk.call("101", extra=_replaces(inc_b))
    assert moved.status == 200
    assert len(b.byes) == 1 and a.byes == []  # the replaced phone is released
    pbx_call = office.engine.calls.by_key[call.key]
    assert pbx_call.media is not None
    assert (pbx_call.media.caller.port, pbx_call.media.callee.port) == (
        call.pbx_port,
        moved.pbx_port,
    )
    bogus = "\nReplaces: nosuch;to-tag=x;from-tag=y"
    assert office.phone("102").call("101", extra=bogus).status == 481
    call.hang_up()
    assert len(desk.byes) == 1
    assert office.left_behind() == []
