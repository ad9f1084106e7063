"""The dial-by-name directory (features/directory) on the office harness: *411, the
first three letters on the keypad, the matches said one by one (a recorded name when
the extension has one), 1 rings the match through the usual routing, 2 the next;
last or first names (`directory_name`), several matches, no match, extensions
without a display name never listed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.api import Answer, Context, Decision, Dial, Feature, Session
from pbx_core.features.directory import MAX_MATCHES, keys_of, matches, name_of
from pbx_core.features.registry import FEATURES
from pbx_core.media.wav import wav_bytes
from tests.conftest import FACTORY
from tests.fuzzing import fuzz_settings
from tests.harness.office import PROVIDER_TRUNK, Office, offices

EXTENSIONS = [
    "id(int,auto) username(string) domain(string,null) display_name(string,null) "
    "ring_timeout(int) call_waiting(int)",
    "1:100::Anna Smith:20:1",
    "2:101::Bob Smithers:20:1",
    "3:102::Carl Jones:20:1",
    "4:103:::20:1",  # no display name: never in the directory
]
ROWS = [
    ("100", {"display_name": "Anna Smith"}),
    ("101", {"display_name": "Bob Smithers"}),
    ("102", {"display_name": "Carl Jones"}),
    ("103", {"display_name": None}),
    ("104", {"display_name": "   "}),
    ("105", None),
]
ASKED: list[bool] = []


@dataclass(frozen=True)
class Probe(Feature):
    """*58EXT: whether EXT has a recorded name (`name:EXT`)."""

    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        async def app(session: Session) -> None:
            ASKED.append(session.has_recording(f"name:{dial.arg}"))
            session.hangup()

        return Answer(app, "probe")


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    ASKED.clear()
    probe = Probe(name="probe", codes={"*58": "recorded name?"})
    tables = {"pbx_extension": EXTENSIONS}
    yield from offices(tmp_path, tables=tables, features=(*FEATURES, probe))


def test_the_keypad_and_the_names() -> None:
    assert keys_of("Smith") == "76484"
    assert keys_of("O'Brien-Zoë") == "627436963"
    assert name_of("Anna Smith", "last") == "Smith"
    assert name_of("Anna Smith", "first") == "Anna"
    assert name_of("  ", "last") == "" and name_of(None, "first") == ""


def test_matching_last_and_first_names() -> None:
    assert matches("764", ROWS, "last") == ["100", "101"]  # Smith, Smithers: by name
    assert matches("566", ROWS, "last") == ["102"]  # Jones
    assert matches("227", ROWS, "first") == ["102"]  # Carl
    assert matches("227", ROWS, "last") == []
    assert matches("999", ROWS, "last") == []
    assert matches("", ROWS, "last") == [] and matches("7*", ROWS, "last") == []
    many = [(str(200 + i), {"display_name": f"X Smith{i}"}) for i in range(20)]
    assert len(matches("764", many, "last")) == 8  # at most MAX_MATCHES said


def test_the_second_match_is_rung_on_two_then_one(office: Office) -> None:
    a, b = office.phone("100", mode="ring"), office.phone("101", mode="ring")
    c = office.phone("103")
    call = c.call("*411")
    assert call.status == 200
    office.advance(1)
    call.keys("764")  # S-M-I: Smith (100), then Smithers (101)
    office.advance(1)
    call.keys("2")  # not Anna Smith: the next
    office.advance(1)
    assert a.ringing() == [] and b.ringing() == []
    call.keys("1")
    office.advance(0.5)
    assert a.ringing() == [] and len(b.ringing()) == 1  # the usual routing rings 101
    b.pick_up()
    office.advance(1)
    pbx_call = call.pbx_call
    assert pbx_call is not None and office.engine.features.running_apps == 0  # bridged
    call.hang_up()
    office.advance(1)
    assert len(b.byes) == 1 and office.left_behind() == []


def test_first_names_with_the_setting(office: Office) -> None:
    settings = [*(FACTORY / "pbx_settings").read_text().splitlines(), "directory_name:first"]
    office.reload("pbx_settings", settings)
    d = office.phone("102", mode="ring")
    c = office.phone("103")
    call = c.call("*411")
    office.advance(1)
    call.keys("227")  # C-A-R: Carl Jones
    office.advance(1)
    call.keys("1")
    office.advance(0.5)
    assert len(d.ringing()) == 1
    call.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_no_match_asks_again_then_silence_ends_the_call(office: Office) -> None:
    c = office.phone("103")
    call = c.call("*411")
    office.advance(1)
    call.keys("999")  # W-W-W: nobody
    office.advance(2)
    assert call.pbx_call is not None  # asked again
    office.advance(30)  # nothing pressed
    assert call.pbx_call is None and office.left_behind() == []


def test_pound_or_another_key_ends_it(office: Office) -> None:
    b = office.phone("101", mode="ring")
    c = office.phone("103")
    call = c.call("*411")
    office.advance(1)
    call.keys("566")  # Jones
    office.advance(1)
    call.keys("#")
    office.advance(1)
    assert call.pbx_call is None and b.ringing() == []
    assert c.call("*4111").status == 404
    assert office.left_behind() == []


def test_a_recorded_name_is_what_is_said(office: Office) -> None:
    c = office.phone("103")
    assert c.call("*58100").status == 200
    office.advance(1)
    greeting = office.tmp / "state" / "recordings" / "voicemail" / "greet-100-name.wav"
    greeting.parent.mkdir(parents=True)
    greeting.write_bytes(wav_bytes(bytes(1600), "ulaw"))
    assert c.call("*58100").status == 200
    office.advance(1)
    assert c.call("*58../100").status == 200
    office.advance(1)
    assert ASKED == [False, True, False]
    assert office.left_behind() == []


def test_a_did_can_lead_to_the_directory(tmp_path: Path) -> None:
    dids = [
        "id(int,auto) number(string) trunk(string,null) dest_type(string) dest(string,null) "
        "description(string,null)",
        "1:5550411:provider:directory:last:",
        "2:5550412:provider:directory:middle:",
    ]
    tables = {"pbx_extension": EXTENSIONS, "pbx_trunk": PROVIDER_TRUNK, "pbx_did": dids}
    for office in offices(tmp_path, tables=tables):
        b = office.phone("101", mode="ring")
        provider = office.provider()
        provider.number = "5557777"
        call = provider.call("5550411", auth=False)
        assert call.status == 200
        office.advance(1)
        call.keys("7642")  # Smith, then the next: Smithers
        office.advance(1)
        call.keys("1")
        office.advance(0.5)
        assert len(b.ringing()) == 1  # an outside caller reaches our own extensions
        call.hang_up()
        office.advance(1)
        assert provider.call("5550412", auth=False).status == 404  # not a target it knows
        assert office.left_behind() == []


@pytest.mark.fuzz
@fuzz_settings(300)
@given(
    st.text(max_size=6),
    st.lists(
        st.tuples(st.from_regex(r"[0-9]{3}", fullmatch=True), st.text(max_size=20)),
        unique_by=lambda person: person[0],
    ),
    st.sampled_from(["last", "first"]),
)
def test_any_entry_and_names_give_at_most_eight_true_matches(
    entered: str, people: list[tuple[str, str]], which: str
) -> None:
    rows = [(number, {"display_name": name}) for number, name in people]
    found = matches(entered, rows, which)
    assert len(found) <= MAX_MATCHES
    names = dict(people)
    for number in found:
        assert keys_of(name_of(names[number], which)).startswith(entered) and entered
