"""Call forward (features/forward + pbx/routing.py): all *72/*73, busy *90/*91, no
answer *52/*53, the target after the code or prompted for; loops and more than
MAX_FORWARDS stopped; an outside target needs the forwarding extension's call class,
checked when set and again when used; a forwarded call keeps the original caller in
From and carries Diversion (RFC 5806)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.pbx.routing import MAX_FORWARDS
from tests.features.dnd.test_dnd import dial_code
from tests.harness.office import (
    PROVIDER_TRUNK,
    Incoming,
    Office,
    extension_row,
    extensions,
    offices,
    subscribers,
)


def forwarded(inc: Incoming, by: str, reason: str, counter: int = 1) -> None:
    """`inc` is the original caller 100's call, diverted once by `by`."""
    assert "<sip:100@" in inc.invite.headers.get("from")
    diversions = inc.header("diversion")
    assert diversions[-1].startswith(f"<sip:{by}@")
    assert f"reason={reason}" in diversions[-1]
    assert f"counter={counter}" in diversions[-1]


def toggles(office: Office, ext: str) -> dict[str, object]:
    return office.engine.features.toggles(ext)


def test_forward_all_goes_to_the_target_without_ringing_the_extension(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*72102")
    assert toggles(office, "101")["forward.forward_all"] == "102"
    call = a.call("101")
    assert call.status == 200
    assert b.incoming == []
    (inc,) = c.incoming
    forwarded(inc, "101", "unconditional")
    call.hang_up()
    dial_code(b, "*73")
    call = a.call("101")
    assert call.status == 200 and len(b.incoming) == 1 and len(c.incoming) == 1
    call.hang_up()
    assert office.left_behind() == []


def test_forward_on_busy(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101", mode="busy"), office.phone("102")
    dial_code(b, "*90102")
    call = a.call("101")
    assert call.status == 200
    assert [i.state for i in b.incoming] == ["busy"]
    forwarded(c.incoming[0], "101", "user-busy")
    call.hang_up()
    dial_code(b, "*91")
    assert a.call("101").status == 486
    assert len(c.incoming) == 1
    assert office.left_behind() == []


def test_forward_on_no_answer_after_the_ring_time(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101", mode="ring"), office.phone("102")
    dial_code(b, "*52102")
    call = a.call("101")
    office.advance(19.9)
    assert call.status is None and not c.incoming  # 101 rings its 20 s
    office.advance(0.2)
    assert [i.state for i in b.incoming] == ["cancelled"]
    forwarded(c.incoming[0], "101", "no-answer")
    assert call.status == 200
    call.hang_up()
    dial_code(b, "*53")
    call = a.call("101")
    office.advance(20.1)
    assert call.status == 480
    assert len(c.incoming) == 1
    assert office.left_behind() == []


def test_dnd_triggers_forward_on_busy(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*90102")
    dial_code(b, "*78")
    call = a.call("101")
    assert call.status == 200 and not b.incoming
    forwarded(c.incoming[0], "101", "user-busy")
    call.hang_up()


def test_the_target_can_be_prompted_for_with_key_presses(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    code = b.call("*72")
    assert code.status == 200
    office.advance(3)  # the prompt (a tone when the build has no prompts)
    code.keys("102#")
    office.advance(5)
    assert code.call_id in [x.call_id for x in b.byes]
    assert toggles(office, "101")["forward.forward_all"] == "102"
    call = a.call("101")
    assert call.status == 200 and not b.incoming and c.incoming
    call.hang_up()
    assert office.left_behind() == []


def test_a_prompt_left_unanswered_sets_nothing(office: Office) -> None:
    b = office.phone("101")
    code = b.call("*90")
    assert code.status == 200
    office.advance(30)  # first-digit timeout, "not available", hang-up
    assert code.call_id in [x.call_id for x in b.byes]
    assert toggles(office, "101")["forward.forward_busy"] is None
    assert office.left_behind() == []


def test_a_forward_to_yourself_is_refused(office: Office) -> None:
    b = office.phone("101")
    assert b.call("*72101").status == 403
    assert toggles(office, "101")["forward.forward_all"] is None


def test_a_forward_loop_is_stopped(office: Office) -> None:
    a = office.phone("100")
    b, c = office.phone("101", mode="ring"), office.phone("102", mode="ring")
    dial_code(b, "*52102")
    dial_code(c, "*52101")
    call = a.call("101")
    office.advance(20.1)  # 101 rang out: forwarded to 102
    assert len(b.incoming) == 1 and len(c.incoming) == 1
    office.advance(20.1)  # 102 rang out: its forward back to 101 is a loop
    assert call.status == 480
    assert len(b.incoming) == 1 and len(c.incoming) == 1
    assert office.left_behind() == []


def test_a_forward_all_loop_is_stopped_at_once(office: Office) -> None:
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    dial_code(b, "*72102")
    dial_code(c, "*72101")
    call = a.call("101")
    assert call.status == 480
    assert not b.incoming and not c.incoming
    assert office.left_behind() == []


CHAIN = [str(n) for n in range(100, 110)]


@pytest.fixture
def chain_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"subscriber": subscribers(*CHAIN)})


@pytest.mark.parametrize("forwards", [5, 6])
def test_at_most_max_forwards(chain_office: Office, forwards: int) -> None:
    # 101 -> 102 -> ... : `forwards` forwards, the last extension answers; five go
    # through (Asterisk's default), a sixth is stopped.
    assert MAX_FORWARDS == 5
    office = chain_office
    chain = CHAIN[1 : forwards + 2]
    rows = [
        extension_row(i, n, forward_all=chain[i] if i < len(chain) else "")
        for i, n in enumerate(chain, 1)
    ]
    office.reload("pbx_extension", extensions(*rows))
    a = office.phone("100")
    phones = [office.phone(n) for n in chain]
    call = a.call(chain[0])
    if forwards <= 5:
        assert call.status == 200
        (inc,) = phones[-1].incoming
        assert len(inc.header("diversion")) == forwards
        forwarded(inc, chain[-2], "unconditional", forwards)
        call.hang_up()
    else:
        assert call.status == 480
    assert all(not p.incoming for p in phones[:-1])
    assert office.left_behind() == []


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


def test_an_outside_forward_needs_the_class_when_set(trunk_office: Office) -> None:
    office = trunk_office
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    b = office.phone("101")
    assert b.call("*720123456").status == 403
    assert toggles(office, "101")["forward.forward_all"] is None
    assert b.call("*900123456").status == 403
    code = b.call("*52")  # prompted: refused too
    code.keys("0123456#")
    office.advance(10)
    assert toggles(office, "101")["forward.forward_noanswer"] is None
    assert office.stack.sent_requests("INVITE") == []


def test_an_outside_forward_keeps_the_caller_and_says_who_diverted(trunk_office: Office) -> None:
    office = trunk_office
    provider = office.provider()
    a, b = office.phone("100"), office.phone("101")
    dial_code(b, "*720123456")
    call = a.call("101")
    assert call.status == 200
    assert not b.incoming
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "123456"  # the route strips the 0
    forwarded(inc, "101", "unconditional")
    call.hang_up()
    assert office.left_behind() == []


def test_an_outside_forward_is_refused_at_use_when_the_class_was_lowered(
    trunk_office: Office,
) -> None:
    office = trunk_office
    provider = office.provider()
    a, b = office.phone("100"), office.phone("101")
    dial_code(b, "*720123456")
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    call = a.call("101")
    assert call.status == 403
    assert provider.incoming == [] and not b.incoming
    assert office.left_behind() == []


DID_HEADER = (
    "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
    "description(string,null)"
)


def test_an_inbound_call_forwarded_out_presents_the_outside_caller(
    trunk_office: Office,
) -> None:
    # The provider calls DID 5550100 -> extension 101, which forwards to a mobile: the
    # provider sees the original caller (0301234) and 101 as the diverting party.
    office = trunk_office
    office.reload("pbx_did", [DID_HEADER, "1:5550100:provider:extension:101:"])
    provider = office.provider()
    provider.number = "0301234"
    b = office.phone("101")
    dial_code(b, "*720171234")
    call = provider.call("5550100", auth=False)
    assert call.status == 200
    assert not b.incoming
    (out,) = provider.incoming
    assert out.invite.uri.user == "171234"
    assert "<sip:0301234@" in out.invite.headers.get("from")
    diversion = out.header("diversion")
    assert len(diversion) == 1 and diversion[0].startswith("<sip:101@")
    call.hang_up()
    assert office.left_behind() == []


def test_hanging_up_while_prompted_sets_nothing_and_ends_the_application(
    office: Office,
) -> None:
    b = office.phone("101")
    code = b.call("*52")
    assert code.status == 200
    office.advance(2)
    code.keys("102")  # a target it may set, were the call still up
    code.hang_up()  # before the terminator or the inter-digit timeout
    office.advance(10)
    assert toggles(office, "101")["forward.forward_noanswer"] is None
    assert office.left_behind() == []


def test_forward_on_no_answer_uses_the_extensions_ring_time(office: Office) -> None:
    office.reload("pbx_extension", extensions(extension_row(1, "101", ring_timeout=7)))
    a, b, c = office.phone("100"), office.phone("101", mode="ring"), office.phone("102")
    dial_code(b, "*52102")
    call = a.call("101")
    office.advance(6.9)
    assert not c.incoming
    office.advance(0.2)
    assert call.status == 200 and len(c.incoming) == 1
    call.hang_up()
