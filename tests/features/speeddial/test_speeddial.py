"""Speed dial (features/speeddial + Redirect in pbx/routing.py): *0NN dials entry NN
from the extension's own list (set from the phone with *75NN + number, kept in the
feature's state across restarts), else pbx_speed_dial (the extension's row, then
everyone's); the number is routed as the extension would dial it, its call class
included (never a way around the toll-fraud guard); chains of speed dials are
bounded (482)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features import speeddial
from pbx_core.pbx.routing import MAX_REDIRECTS
from pbx_core.store.build import check_dir
from tests.features.dnd.test_dnd import dial_code
from tests.fuzzing import fuzz_settings
from tests.harness.office import (
    FACTORY,
    PROVIDER_TRUNK,
    Office,
    extension_row,
    extensions,
    offices,
)

HEADER = (FACTORY / "pbx_speed_dial").read_text().splitlines()[0]


def speed_dials(*rows: str) -> list[str]:
    """pbx_speed_dial rows `username:code:number` (username empty: everyone's)."""
    out = [HEADER]
    for i, row in enumerate(rows, 1):
        user, code, number = row.split(":")
        out.append(f"{i}:{user}::{code}:{number}:")
    return out


def personal(office: Office, ext: str) -> object:
    """What the phone set for `ext` (the feature's state)."""
    return office.engine.features.context(speeddial.FEATURE).state_get(ext)


@pytest.fixture
def trunk_office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


def test_a_system_entry_rings_its_number(office: Office) -> None:
    office.reload("pbx_speed_dial", speed_dials(":1:102"))
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("*01")
    assert call.status == 200
    (inc,) = c.incoming
    assert inc.invite.uri.user == "102"
    assert "<sip:100@" in inc.invite.headers.get("from")  # as if 100 dialled 102
    assert not b.incoming
    call.hang_up()
    assert office.left_behind() == []


def test_the_extensions_own_row_comes_before_everyones(office: Office) -> None:
    office.reload("pbx_speed_dial", speed_dials(":1:102", "100:1:101"))
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    call = a.call("*01")
    assert call.status == 200 and len(b.incoming) == 1 and not c.incoming
    call.hang_up()
    call = c.call("*01")  # 102 has no row of its own: everyone's (itself: busy-free)
    assert call.status == 200 and len(c.incoming) == 1
    call.hang_up()
    assert office.left_behind() == []


def test_unknown_or_malformed_entries(office: Office) -> None:
    a = office.phone("100")
    assert a.call("*01").status == 404
    assert a.call("*0").status == 484
    assert a.call("*01234").status == 484
    assert a.call("*0x").status == 484
    assert office.stack.sent_requests("INVITE") == []


def test_set_from_the_phone_dial_it_and_it_survives_a_restart(office: Office) -> None:
    office.reload("pbx_speed_dial", speed_dials(":05:101"))
    a = office.phone("100")
    dial_code(a, "*7505102")
    assert personal(office, "100") == {"05": "102"}
    office.restart()
    a, b, c = office.phone("100"), office.phone("101"), office.phone("102")
    assert personal(office, "100") == {"05": "102"}
    call = a.call("*005")  # its own entry before everyone's 05
    assert call.status == 200 and len(c.incoming) == 1 and not b.incoming
    call.hang_up()
    call = b.call("*005")  # another extension: everyone's
    assert call.status == 200 and len(b.incoming) == 1
    call.hang_up()
    dial_code(a, "*7505*")  # cleared: everyone's again
    assert personal(office, "100") is None
    call = a.call("*005")
    assert call.status == 200 and len(b.incoming) == 2
    call.hang_up()
    assert office.left_behind() == []


def test_prompted_entry(office: Office) -> None:
    a, c = office.phone("100"), office.phone("102")
    code = a.call("*75")
    assert code.status == 200
    office.advance(2)  # "enter the location" (a beep without prompts)
    code.keys("07")
    office.advance(2)  # "enter the number"
    code.keys("102#")
    office.advance(8)
    assert code.call_id in [x.call_id for x in a.byes]
    assert personal(office, "100") == {"07": "102"}
    code = a.call("*7508")  # location given: only the number asked
    assert code.status == 200
    office.advance(2)
    code.keys("101#")
    office.advance(8)
    assert personal(office, "100") == {"07": "102", "08": "101"}
    call = a.call("*007")
    assert call.status == 200 and len(c.incoming) == 1
    call.hang_up()
    assert office.left_behind() == []


def test_a_prompt_left_unanswered_sets_nothing(office: Office) -> None:
    a = office.phone("100")
    code = a.call("*7509")
    assert code.status == 200
    office.advance(30)
    assert code.call_id in [x.call_id for x in a.byes]
    assert personal(office, "100") is None
    assert office.left_behind() == []


def test_bad_entries_from_the_phone_are_refused(office: Office) -> None:
    a = office.phone("100")
    assert a.call("*751").status == 484  # a location is two digits
    assert a.call("*75ab102").status == 484
    assert a.call("*7501" + "1" * 25).status == 403  # longer than a number
    assert a.call("*7501a").status == 403
    assert personal(office, "100") is None


def test_an_internal_extension_cannot_reach_the_trunk_by_speed_dial(
    trunk_office: Office,
) -> None:
    office = trunk_office
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    # everyone's entry 9 is an international number: a toll-fraud path if the speed
    # dial were placed with any class but the dialler's
    office.reload("pbx_speed_dial", speed_dials(":9:000442079460000", "101:8:0123456"))
    provider = office.provider()
    b = office.phone("101")
    assert b.call("*09").status == 403
    assert b.call("*08").status == 403
    assert b.call("*75010123456").status == 403  # refused when set
    assert personal(office, "101") is None
    assert provider.incoming == []
    assert office.stack.sent_requests("INVITE") == []
    assert office.left_behind() == []


def test_an_entry_set_before_the_class_was_lowered_is_refused_at_use(
    trunk_office: Office,
) -> None:
    office = trunk_office
    provider = office.provider()
    b = office.phone("101")
    dial_code(b, "*75010123456")
    call = b.call("*001")  # national class: out through the trunk
    assert call.status == 200
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "123456"  # the route strips the 0
    call.hang_up()
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    assert b.call("*001").status == 403
    assert len(provider.incoming) == 1
    assert office.left_behind() == []


def test_an_emergency_speed_dial_goes_out_whatever_the_class(trunk_office: Office) -> None:
    office = trunk_office
    office.reload("pbx_extension", extensions(extension_row(1, "101", call_class="internal")))
    office.reload("pbx_speed_dial", speed_dials(":99:112"))
    provider = office.provider()
    b = office.phone("101")
    call = b.call("*099")
    assert call.status == 200
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "112"
    call.hang_up()
    assert office.left_behind() == []


def test_a_speed_dial_to_a_feature_code_works_and_a_loop_is_stopped(office: Office) -> None:
    rows = (":1:*01", ":2:*03", ":3:*02", ":4:*72102", ":5:*04")
    office.reload("pbx_speed_dial", speed_dials(*rows))
    a = office.phone("100")
    assert a.call("*01").status == 482  # names itself
    assert a.call("*02").status == 482  # 2 -> 3 -> 2 ...
    dial_code(a, "*05")  # 5 -> 4 -> *72102: forward all set, as if dialled
    assert office.engine.features.toggles("100")["forward.forward_all"] == "102"
    assert office.stack.sent_requests("INVITE") == []
    assert office.left_behind() == []


@pytest.mark.parametrize("chain", [MAX_REDIRECTS, MAX_REDIRECTS + 1])
def test_at_most_max_redirects(office: Office, chain: int) -> None:
    # *01 -> *02 -> ... -> *0<chain> -> 102: `chain` redirects; MAX_REDIRECTS go through
    rows = [f":{i}:*0{i + 1}" for i in range(1, chain)] + [f":{chain}:102"]
    office.reload("pbx_speed_dial", speed_dials(*rows))
    a, c = office.phone("100"), office.phone("102")
    call = a.call("*01")
    if chain <= MAX_REDIRECTS:
        assert call.status == 200 and len(c.incoming) == 1
        call.hang_up()
    else:
        assert call.status == 482 and not c.incoming
    assert office.left_behind() == []


def test_the_table_is_checked(tmp_path: Path) -> None:
    d = tmp_path / "etc"
    d.mkdir()
    for f in FACTORY.iterdir():
        (d / f.name).write_text(f.read_text())
    other_domain = "6:100:other.example:6:101:"
    (d / "pbx_speed_dial").write_text(
        "\n".join(speed_dials(":1:102", "999:2:101", ":1234:101", ":3:10x", ":4:" + "1" * 33))
        + f"\n{other_domain}\n"
    )
    errors = [str(e) for e in check_dir(d).errors]
    assert any("no subscriber 999@pbx.local" in e for e in errors), errors
    assert any("code is 1 to 3 digits" in e for e in errors), errors
    assert any("number must be digits" in e for e in errors), errors
    assert any("number is at most 32 characters" in e for e in errors), errors
    assert any("speed dials are for domain pbx.local" in e for e in errors), errors
    assert len(errors) == 5, errors


# ---------------------------------------------------------------- properties

ARGS = st.one_of(
    st.sampled_from(("1", "2", "3", "4", "5", "010123456", "01000442079460000", "05102")),
    st.text(alphabet="0123456789*#+ab", max_size=40),
)


@pytest.mark.fuzz
@fuzz_settings(10)
@given(dialled=st.lists(st.tuples(st.sampled_from(("*0", "*75")), ARGS), min_size=1, max_size=6))
def test_no_speed_dial_string_takes_an_internal_extension_out(
    dialled: list[tuple[str, str]],
) -> None:
    # whatever follows *0 or *75, from an internal extension whose lists (its own,
    # everyone's) hold outside numbers and codes: a final answer, never a 500, nothing
    # at the provider, and only valid entries kept
    rows = speed_dials(":1:0123456", ":2:*01", ":3:000442079460000", "101:4:0999", ":5:102")
    with tempfile.TemporaryDirectory() as tmp:
        office = Office(
            Path(tmp),
            tables={
                "pbx_trunk": PROVIDER_TRUNK,
                "pbx_speed_dial": rows,
                "pbx_extension": extensions(extension_row(1, "101", call_class="internal")),
            },
        )
        try:
            provider = office.provider()
            b = office.phone("101")
            office.phone("102")
            for code, arg in dialled:
                call = b.call(code + arg)
                for _ in range(40):
                    if call.status is not None and not office.engine.features.running_apps:
                        break
                    office.advance(2)
                assert call.status is not None and call.status != 500, (code, arg)
                hung_up = call.call_id in [x.call_id for x in b.byes]
                if call.state == "answered" and call.status == 200 and not hung_up:
                    call.hang_up()
            office.advance(10)
            assert provider.incoming == []
            kept = personal(office, "101")
            assert kept is None or all(
                len(k) == 2 and k.isdigit() and speeddial.valid_number(v)
                for k, v in dict(kept).items()  # type: ignore[call-overload]
            )
            assert office.left_behind() == []
        finally:
            office.close()
