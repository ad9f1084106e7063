"""Hotline and warm line (features/hotline + the `outgoing` hook in pbx/routing.py):
an extension of pbx_hotline calls the row's number whatever it dials (delay 0), the
emergency numbers excepted; a warm line answers a lifted phone (`s`, nothing, the
trigger) with dial tone and calls the number after `delay` seconds without a key, or
what was keyed; the number is placed with the extension's own call class."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.features.hotline import HOTLINE
from tests.harness.office import (
    DOMAIN,
    PROVIDER_TRUNK,
    Office,
    extension_row,
    extensions,
    message,
    offices,
    sdp,
)

HEADER = " ".join(
    f"{c.name}({'int' if c.type.name == 'INT' else 'string'}"
    f"{',auto' if c.auto else ''}{',null' if c.null else ''})"
    for c in HOTLINE.specs
)


def hotlines(*rows: str) -> list[str]:
    """pbx_hotline rows `extension:number:delay:trigger`."""
    return [HEADER, *(f"{i}:{row}" for i, row in enumerate(rows, 1))]


def configure(office: Office, *rows: str) -> None:
    """Give the running office a pbx_hotline table (the factory has none)."""
    office.write_table("pbx_hotline", [HEADER])
    office.reload("pbx_hotline", hotlines(*rows))


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


def test_header_is_the_tables() -> None:
    assert HEADER == "id(int,auto) extension(string) number(string) delay(int) trigger(string,null)"


def test_a_hotline_calls_its_number_whatever_is_dialled(trunk_office: Office) -> None:
    office = trunk_office
    configure(office, "103:101:0:")
    lobby, b, c = office.phone("103"), office.phone("101"), office.phone("102")
    for dialled in ("102", "s", "*43", "*78", "0123456"):
        call = lobby.call(dialled)
        assert call.status == 200, dialled
        assert b.incoming[-1].invite.uri.user == "101"
        assert "<sip:103@" in b.incoming[-1].invite.headers.get("from")
        call.hang_up()
    assert len(b.incoming) == 5 and not c.incoming
    assert office.engine.features.toggles("103")["dnd.dnd"] is not True  # *78 never ran
    other = c.call("101")  # another extension dials as it likes
    assert other.status == 200 and len(b.incoming) == 6
    other.hang_up()
    sent = office.stack.sent_requests("INVITE")
    assert len(sent) == 6 and all(r.uri.user == "101" for r in sent)  # none to the trunk
    assert office.left_behind() == []


def test_emergency_numbers_stay_first(trunk_office: Office) -> None:
    office = trunk_office
    configure(office, "103:101:0:")
    provider = office.provider()
    lobby, b = office.phone("103"), office.phone("101")
    call = lobby.call("112")
    assert call.status == 200
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "112"
    assert not b.incoming
    call.hang_up()
    assert office.left_behind() == []


def test_a_hotline_to_an_outside_number_needs_the_class(trunk_office: Office) -> None:
    office = trunk_office
    configure(office, "103:0123456:0:")
    provider = office.provider()
    lobby = office.phone("103")
    call = lobby.call("s")  # 103 is national (the harness's default): out it goes
    assert call.status == 200
    assert provider.incoming[0].invite.uri.user == "123456"
    call.hang_up()
    office.reload("pbx_extension", extensions(extension_row(1, "103", call_class="internal")))
    assert lobby.call("s").status == 403
    assert lobby.call("0999").status == 403
    assert len(provider.incoming) == 1
    assert office.left_behind() == []


def test_a_warm_line_dials_the_number_after_the_delay(office: Office) -> None:
    configure(office, "103:101:5:")
    lobby, b = office.phone("103"), office.phone("101", mode="ring")
    call = lobby.call("s")
    assert call.status == 200
    office.advance(4.5)
    assert not b.incoming  # still dial tone
    office.advance(1)
    (inc,) = b.incoming
    assert "<sip:103@" in inc.invite.headers.get("from")
    b.pick_up()
    office.advance(1)
    assert office.engine.features.running_apps == 0  # bridged: the app is done
    call.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_keys_on_a_warm_line_are_dialled_instead(office: Office) -> None:
    configure(office, "103:101:5:")
    lobby, b, c = office.phone("103"), office.phone("101"), office.phone("102")
    call = lobby.call("s")
    assert call.status == 200
    office.advance(2)
    call.keys("10")
    office.advance(1)
    call.keys("2#")
    office.advance(1)
    assert not b.incoming
    (inc,) = c.incoming
    assert inc.invite.uri.user == "102"
    call.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_keys_end_after_a_pause(office: Office) -> None:
    configure(office, "103:101:3:")
    lobby, b, c = office.phone("103"), office.phone("101"), office.phone("102")
    call = lobby.call("s")
    office.advance(1)
    call.keys("102")
    office.advance(3)
    assert not c.incoming  # the inter-digit pause has not passed
    office.advance(2)
    assert len(c.incoming) == 1 and not b.incoming
    call.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_a_warm_line_dials_what_the_phone_dials_itself(office: Office) -> None:
    configure(office, "103:101:5:")
    lobby, b, c = office.phone("103"), office.phone("101"), office.phone("102")
    call = lobby.call("102")
    assert call.status == 200 and len(c.incoming) == 1 and not b.incoming
    call.hang_up()
    assert office.left_behind() == []


def test_a_warm_lines_trigger(office: Office) -> None:
    configure(office, "103:101:2:lobby")
    lobby, b = office.phone("103"), office.phone("101")
    call = lobby.call("lobby")
    assert call.status == 200 and not b.incoming
    office.advance(2.5)
    assert len(b.incoming) == 1
    call.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_a_warm_line_nobody_answers_hangs_up(office: Office) -> None:
    configure(office, "103:101:1:")
    lobby, b = office.phone("103"), office.phone("101", mode="busy")
    call = lobby.call("s")
    office.advance(2)
    assert [i.state for i in b.incoming] == ["busy"]
    office.advance(1)
    assert call.call_id in [x.call_id for x in lobby.byes]
    assert office.left_behind() == []


def test_hanging_up_on_the_dial_tone_ends_it(office: Office) -> None:
    configure(office, "103:101:5:")
    lobby, b = office.phone("103"), office.phone("101")
    call = lobby.call("s")
    office.advance(1)
    call.hang_up()
    office.advance(10)
    assert not b.incoming
    assert office.left_behind() == []


def test_an_empty_dial_lifts_a_warm_line_and_is_484_elsewhere(office: Office) -> None:
    configure(office, "103:101:1:")
    lobby, b, c = office.phone("103"), office.phone("101"), office.phone("102")
    for phone, status in ((c, 484), (lobby, 200)):
        key = ("INVITE", f"empty{phone.number}", 1)
        req = message(
            f"""INVITE sip:{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:{phone.port};branch=z9hG4bKempty{phone.number}
From: <sip:{phone.number}@{DOMAIN}>;tag=e{phone.number}
To: <sip:{DOMAIN}>
Call-ID: empty{phone.number}
CSeq: 1 INVITE
Max-Forwards: 70
Contact: <sip:{phone.number}@127.0.0.1:{phone.port}>""",
            sdp(40000 + phone.port % 1000),
            "application/sdp",
        )
        office.engine.router.from_extension(
            req, phone.address, key, office.engine.snap.user(phone.number, DOMAIN), ""
        )  # as the engine does after digest (the harness's phones send a number)
        office.settle_io()
        assert office.stack.final(key) == status
    office.advance(1.5)
    (inc,) = b.incoming  # the warm line's delay passed: 101 rings for the lobby
    assert "<sip:103@" in inc.invite.headers.get("from")


def test_the_table_is_checked(office: Office) -> None:
    from pbx_core.store.build import check_dir

    office.write_table("pbx_hotline", hotlines("103:10x1:0:", "104:101:31:", "105:101:1:a b"))
    errors = [str(e) for e in check_dir(office.config).errors]
    assert len(errors) == 3, errors
    assert any("0-9 * # +" in e for e in errors), errors
    assert any("31" in e for e in errors), errors
    assert any("letters, digits" in e for e in errors), errors
