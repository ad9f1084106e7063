"""Ring groups (features/ringgroup + the Plan of pbx/routing.py): ringall, hunt (in
order, each member for the group's ring time, on the fake clock), memoryhunt,
random (a permutation), firstavailable (skips the unregistered and those in a call);
members with do-not-disturb skipped; the failover destination after the last step.

The other strategies are set in the group table and reloaded (`with_strategy`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.features.dnd.test_dnd import dial_code
from tests.harness.office import Office, Phone, groups, offices

GROUP_ROWS = (
    "600:ringall:101,102,103:15:hangup:",
    "601:hunt:101,102,103:10:hangup:",
    "602:ringall:101,102:15:extension:100",
    "603:hunt:101,102:10:extension:103",
    "604:hunt:101,102,103:25:hangup:",
)
GROUPS = groups(*GROUP_ROWS)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_ring_group": GROUPS})


def ring_phones(office: Office, *numbers: str) -> list[Phone]:
    return [office.phone(n, mode="ring") for n in numbers]


def ringing(*phones: Phone) -> list[str]:
    return [p.number for p in phones if p.ringing()]


def with_strategy(office: Office, strategy: str) -> None:
    """Every group of GROUPS with `strategy` instead, committed as a reload would."""
    rows = [":".join([r.split(":")[0], strategy, *r.split(":")[2:]]) for r in GROUP_ROWS]
    office.reload("pbx_ring_group", groups(*rows))


def test_ringall_rings_every_member_and_the_first_to_answer_wins(office: Office) -> None:
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    call = a.call("600")
    assert ringing(b, c, d) == ["101", "102", "103"]
    office.advance(5)
    c.pick_up()
    assert call.status == 200
    assert [p.incoming[0].state for p in (b, c, d)] == ["cancelled", "answered", "cancelled"]
    call.hang_up()
    assert office.left_behind() == []


def test_ringall_rings_out_to_the_failover_destination(office: Office) -> None:
    a = office.phone("100")
    b, c = ring_phones(office, "101", "102")
    call = office.phone("103").call("602")
    office.advance(14.9)
    assert call.status is None and not a.incoming
    office.advance(0.2)
    assert ringing(b, c) == [] and len(a.incoming) == 1
    assert call.status == 200  # 100 answers the failover
    call.hang_up()
    assert office.left_behind() == []


def test_hunt_rings_members_in_order_each_for_the_ring_time(office: Office) -> None:
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    start = office.loop.time()
    call = a.call("601")
    assert ringing(b, c, d) == ["101"]
    office.advance(9.9)
    assert ringing(b, c, d) == ["101"]
    office.advance(0.2)
    assert ringing(b, c, d) == ["102"]
    office.advance(10)
    assert ringing(b, c, d) == ["103"]
    assert [p.incoming[0].at - start for p in (b, c, d)] == [0.0, 10.0, 20.0]
    d.pick_up()
    assert call.status == 200
    call.hang_up()
    assert office.left_behind() == []


def test_hunt_moves_on_at_once_from_a_busy_member(office: Office) -> None:
    a = office.phone("100")
    b = office.phone("101", mode="busy")
    c, d = ring_phones(office, "102", "103")
    call = a.call("601")
    assert [i.state for i in b.incoming] == ["busy"]
    assert ringing(c, d) == ["102"]
    call.cancel()
    assert call.status == 487 and ringing(c, d) == []
    assert office.left_behind() == []


def test_hunt_ends_in_its_failover_after_the_last_step(office: Office) -> None:
    a, d = office.phone("100"), office.phone("103", mode="ring")
    b, c = ring_phones(office, "101", "102")
    call = a.call("603")
    office.advance(10.1)
    assert ringing(b, c, d) == ["102"]
    office.advance(10)
    assert ringing(b, c, d) == ["103"]  # the failover: extension 103
    d.pick_up()
    assert call.status == 200
    call.hang_up()


def test_hunt_with_nobody_answering_and_no_failover_is_480(office: Office) -> None:
    a = office.phone("100")
    phones = ring_phones(office, "101", "102", "103")
    call = a.call("601")
    office.advance(29.9)
    assert call.status is None
    office.advance(0.2)
    assert call.status == 480
    assert [len(p.incoming) for p in phones] == [1, 1, 1]
    assert office.left_behind() == []


def test_dnd_members_are_skipped(office: Office) -> None:
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    c.mode = "answer"
    dial_code(c, "*78")
    c.mode = "ring"
    call = a.call("600")
    assert ringing(b, c, d) == ["101", "103"]
    call.cancel()
    call = a.call("601")
    office.advance(10.1)  # 101 rang out; 102 is skipped without ringing its 10 s
    assert ringing(b, c, d) == ["103"]
    call.cancel()
    assert c.incoming == []
    assert office.left_behind() == []


def test_a_members_own_forward_does_not_apply_in_a_group(office: Office) -> None:
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    b.mode = "answer"
    dial_code(b, "*72103")
    b.mode = "ring"
    call = a.call("600")
    assert ringing(b, c, d) == ["101", "102", "103"]
    assert len(d.incoming) == 1  # 103 rings once, as a member
    call.cancel()


def test_memoryhunt_rings_the_first_then_the_first_two_then_three(office: Office) -> None:
    with_strategy(office, "memoryhunt")
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    call = a.call("601")
    assert ringing(b, c, d) == ["101"]
    office.advance(10.1)
    assert ringing(b, c, d) == ["101", "102"]
    office.advance(10)
    assert ringing(b, c, d) == ["101", "102", "103"]
    office.advance(10)
    assert call.status == 480
    assert [len(p.incoming) for p in (b, c, d)] == [3, 2, 1]
    assert office.left_behind() == []


def test_random_rings_each_member_once_in_some_order(office: Office) -> None:
    with_strategy(office, "random")
    a = office.phone("100")
    phones = ring_phones(office, "101", "102", "103")
    orders = set()
    for _ in range(12):
        seen = len(phones[0].incoming), len(phones[1].incoming), len(phones[2].incoming)
        call = a.call("601")
        order = []
        for _step in range(3):
            (now,) = ringing(*phones)
            order.append(now)
            office.advance(10.05)
        assert call.status == 480
        assert sorted(order) == ["101", "102", "103"]  # a permutation
        assert [len(p.incoming) - s for p, s in zip(phones, seen, strict=True)] == [1, 1, 1]
        orders.add(tuple(order))
    assert len(orders) > 1  # 12 draws of 6 orders all alike: 1 in 6**11
    assert office.left_behind() == []


def test_firstavailable_skips_the_unregistered_and_those_in_a_call(office: Office) -> None:
    with_strategy(office, "firstavailable")
    a = office.phone("100")
    c, d = ring_phones(office, "102", "103")  # 101 never registers
    b2 = office.phone("101", register=False)
    c.mode = "answer"
    talking = office.phone("100").call("102")  # 102 is in a call
    assert talking.status == 200
    c.mode = "ring"
    call = a.call("601")
    assert ringing(b2, c, d) == ["103"]
    assert len(c.incoming) == 1
    call.cancel()
    d.mode = "answer"
    other = office.phone("100").call("103")
    assert other.status == 200
    call = a.call("601")  # nobody available: busy
    assert call.status == 486
    talking.hang_up()
    other.hang_up()
    assert office.left_behind() == []


def test_a_member_that_never_answers_at_all_is_hunted_past(office: Office) -> None:
    # 101's registration is stale: not even a 100 comes back. Its step ends after the
    # ring time like any other; the transaction's own timeout later changes nothing.
    a = office.phone("100")
    b = office.phone("101", mode="dead")
    c, d = ring_phones(office, "102", "103")
    call = a.call("603")  # hunt 101, 102 for 10 s each, then extension 103 (20 s)
    assert [i.state for i in b.incoming] == ["dead"]
    office.advance(10.1)
    assert ringing(c, d) == ["102"]
    office.advance(10)
    assert ringing(c, d) == ["103"]
    office.advance(15)  # 101's Timer B (at 32 s) fires while 103 rings
    assert b.incoming[0].final == 408
    assert ringing(c, d) == ["103"] and call.status is None
    d.pick_up()
    assert call.status == 200
    call.hang_up()
    office.advance(40)
    assert office.left_behind() == []


def test_an_extension_that_never_answers_at_all_rings_out(office: Office) -> None:
    a = office.phone("100")
    office.phone("101", mode="dead")
    call = a.call("101")
    office.advance(20.1)
    assert call.status == 480
    office.advance(40)
    assert office.left_behind() == []


CYCLE = groups(
    "600:ringall:101,102,103:15:hangup:",  # the factory's IVR names it
    "610:hunt:101:10:group:611",
    "611:hunt:102:10:group:612",
    "612:hunt:103:10:group:610",
    "620:ringall:101:10:group:620",
)


@pytest.fixture
def cycle_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_ring_group": CYCLE})


def test_groups_failing_over_in_a_cycle_ring_each_group_once(cycle_office: Office) -> None:
    # 610 -> 611 -> 612 -> 610: the tables allow it; a call goes round once and ends.
    office = cycle_office
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    call = a.call("610")
    assert ringing(b, c, d) == ["101"]
    office.advance(10.05)
    assert ringing(b, c, d) == ["102"]
    office.advance(10)
    assert ringing(b, c, d) == ["103"]
    office.advance(10)
    assert call.status == 480
    assert [len(p.incoming) for p in (b, c, d)] == [1, 1, 1]
    assert office.left_behind() == []


def test_a_cycle_of_groups_with_nobody_registered_ends_at_once(cycle_office: Office) -> None:
    # Without a bound this recursed until Python's limit (a 500 and a warning).
    office = cycle_office
    a = office.phone("100")
    assert a.call("610").status == 480
    assert a.call("620").status == 480  # a group failing over to itself
    assert office.left_behind() == []


def test_a_hunt_rings_past_the_rtp_timeout(office: Office) -> None:
    # 3 x 25 s of ringing, past rtp_timeout (60 s) with a caller that sends nothing
    # before the answer: the call used to be dropped at 60 s without a final
    # response. The RTP timeout counts from the answer.
    a = office.phone("100")
    b, c, d = ring_phones(office, "101", "102", "103")
    call = a.call("604")
    office.advance(65)
    assert ringing(b, c, d) == ["103"] and call.status is None
    d.pick_up()
    assert call.status == 200
    office.advance(59)
    assert a.byes == [] and call.state == "answered"
    office.advance(2)  # no RTP from either phone since the answer
    assert [x.call_id for x in a.byes] == [call.call_id]
    assert office.left_behind() == []
