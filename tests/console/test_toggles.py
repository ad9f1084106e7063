"""Feature toggles on the console (issue 12: "every toggle set from a phone survives a
restart of the daemon, and shows and changes on the console"): a real `pbx run`, the
console on a pty talking to its control socket, and the control socket itself as the
phone's side of the truth (the `toggles` command is what a phone's code changes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.console import toggles
from pbx_core.features.registry import FEATURES
from pbx_core.pbx.control import query
from pbx_core.pbx.features import Facts, FeatureHost
from pbx_core.store.state import StateStore
from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.console.conftest import ConsoleProc
from tests.fuzzing import fuzz_settings


def _daemon(sock: Path, ext: str = "101", **set_: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"cmd": "toggles", "extension": ext}
    if set_:
        request.update(set_)
    answer = query(sock, request)
    assert answer["ok"], answer
    got: dict[str, Any] = answer["toggles"]
    return got


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[PbxProcess, Path, ConsoleProc]]:
    pbx_dir = tmp_path / "pbx"
    pbx_dir.mkdir()
    pbx = start_pbx(pbx_dir)
    sock = pbx_dir / "run" / "control.sock"
    con_dir = tmp_path / "console"
    con_dir.mkdir()
    console = ConsoleProc(con_dir, control=sock)
    try:
        console.login()
        yield pbx, sock, console
    finally:
        console.close()
        stop_pbx(pbx)
    assert "Traceback" not in console.stderr.read_text(errors="replace")
    assert "Traceback" not in pbx.log(), pbx.log()


def test_console_sets_dnd_and_the_daemon_has_it(
    running: tuple[PbxProcess, Path, ConsoleProc],
) -> None:
    _pbx, sock, console = running
    assert _daemon(sock)["dnd.dnd"] is False  # the factory's dnd column: 0
    shown = console.command("show toggles 101")
    assert "toggles[101].dnd.dnd=off" in shown
    assert "toggles[101].forward.forward_all=\n" in shown  # never set: empty
    out = console.command("set toggles[101].dnd.dnd=on")
    assert "toggles[101].dnd.dnd=on" in out and "error" not in out
    assert _daemon(sock)["dnd.dnd"] is True
    assert _daemon(sock, "102")["dnd.dnd"] is False  # another extension untouched
    assert "no staged changes" in console.command("changes")  # runtime state, not config
    out = console.command("set toggles[101].dnd.dnd=off")
    assert _daemon(sock)["dnd.dnd"] is False


def test_set_on_the_daemon_shows_on_the_console(
    running: tuple[PbxProcess, Path, ConsoleProc],
) -> None:
    _pbx, sock, console = running
    _daemon(sock, set="dnd.dnd", value=True)
    _daemon(sock, set="forward.forward_busy", value="102")
    _daemon(sock, set="callwaiting.call_waiting", value=False)
    assert console.command("get toggles[101].dnd.dnd").strip() == "on"
    assert console.command("get toggles[101].forward.forward_busy").strip() == "102"
    shown = console.command("show toggles 101")
    assert "toggles[101].callwaiting.call_waiting=off" in shown
    assert "toggles[101].forward.forward_busy=102" in shown
    # a forward is switched off with off (kept off across restarts)
    console.command("set toggles[101].forward.forward_busy=off")
    assert _daemon(sock)["forward.forward_busy"] is False
    # empty: back to the extension's column in the tables (the control socket's
    # null, which tests use to reset a phone); the factory's call_waiting is on
    console.command("set toggles[101].callwaiting.call_waiting=")
    assert _daemon(sock)["callwaiting.call_waiting"] is True


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("set toggles[101].dnd.dnd=maybe", "on or off"),
        ("set toggles[101].dnd.dnd=3", "on or off"),
        ("set toggles[101].forward.forward_all=101", "yourself"),
        ("set toggles[101].forward.forward_all=on", "a number"),
        ("set toggles[101].forward.forward_all=12ab", "not a number"),
        ("set toggles[101].dnd.nothing=on", "keeps no toggle"),
        ("set toggles[101].nosuchfeature.x=on", "no feature"),
        ("set toggles[101].voicemail.x=on", "keeps no toggle"),
        ("set toggles[999].dnd.dnd=on", "no extension"),
        ("set toggles[101]dnd=on", "bad toggle path"),
        ("get toggles[101].dnd.nothing", "no toggle"),
        ("show toggles", "usage"),
    ],
)
def test_bad_values_are_refused_and_change_nothing(
    running: tuple[PbxProcess, Path, ConsoleProc], command: str, says: str
) -> None:
    _pbx, sock, console = running
    before = _daemon(sock)
    out = console.command(command)
    assert "error" in out and says in out, out
    assert _daemon(sock) == before


def test_a_toggle_set_on_the_console_survives_a_restart(tmp_path: Path) -> None:
    pbx_dir = tmp_path / "pbx"
    pbx_dir.mkdir()
    sock = pbx_dir / "run" / "control.sock"
    con_dir = tmp_path / "console"
    con_dir.mkdir()
    pbx = start_pbx(pbx_dir)
    console = ConsoleProc(con_dir, control=sock)
    try:
        console.login()
        console.command("set toggles[103].dnd.dnd=on")
        console.command("set toggles[103].forward.forward_noanswer=100")
        stop_pbx(pbx)  # SIGTERM: the writer thread finishes before the daemon exits
        out = console.command("show toggles 103")
        assert "error" in out and "not answering" in out  # no daemon: said, not guessed
        pbx = start_pbx(pbx_dir)  # the same state LMDB (PBX_DATA_DIR)
        assert _daemon(sock, "103")["dnd.dnd"] is True
        shown = console.command("show toggles 103")
        assert "toggles[103].dnd.dnd=on" in shown
        assert "toggles[103].forward.forward_noanswer=100" in shown
    finally:
        console.close()
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log(), pbx.log()


def test_value_words() -> None:
    assert toggles.parse_value(" On ") is True
    assert toggles.parse_value("no") is False
    assert toggles.parse_value("") is None
    assert toggles.parse_value("0") == "0"  # a number stays a number (operator 0)
    assert toggles.parse_path("toggles[101].dnd.dnd") == ("101", "dnd.dnd")
    with pytest.raises(toggles.ToggleError):
        toggles.parse_value("9" * 65)


def _host() -> FeatureHost:
    """The real features on a host without a daemon (no state LMDB)."""
    return FeatureHost(
        FEATURES,
        Facts(
            now=lambda: 0.0,
            setting=lambda _n: None,
            extension=lambda n: {"dnd": False, "call_waiting": True} if n == "101" else None,
            group=lambda _n: None,
            registered=lambda _n: True,
            in_call=lambda _n: False,
            may_dial=lambda number, _by: number.isdigit() and len(number) == 3,
            domain=lambda: "pbx.local",
        ),
    )


NAMES = st.sampled_from(
    [f"{f.name}.{t}" for f in FEATURES for t in f.toggles] + ["echo.x", "dnd", "", "..", "x.y"]
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=80),
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.mark.fuzz
@fuzz_settings(300)
@given(NAMES, VALUES, st.text(max_size=80))
def test_any_toggle_request_is_kept_or_refused_with_a_reason(
    name: str, value: Any, text: str
) -> None:
    """Whatever the control socket is sent (JSON gives any of these), the host either
    keeps a value the feature accepts or refuses with ValueError/KeyError/TypeError
    (the control socket's clear error), changing nothing; the console's own parsing
    of typed text never raises anything but ToggleError."""
    host = _host()
    before = host.toggles("101")
    initial = dict(before)
    try:
        host.set_by_name("101", name, value)
    except (ValueError, KeyError, TypeError) as e:
        assert str(e)
        assert host.toggles("101") == before
    else:
        after = host.toggles("101")[name]
        if value is None:  # back to the table's value (the initial column's)
            assert after == initial[name]
        else:
            assert after == value
        on_off = ("dnd.dnd", "callwaiting.call_waiting", "blocking.block_anonymous")
        on_off += ("intercom.intercom", "followme.followme")
        if name in on_off:
            assert after is None or isinstance(after, bool)
        else:
            assert after in (None, False) or (isinstance(after, str) and after.isdigit())
    finally:
        host.close()
    try:
        toggles.parse_value(text)
        toggles.parse_path(text)
    except toggles.ToggleError as e:
        assert str(e)


def test_a_forward_switched_off_stays_off_after_a_restart(tmp_path: Path) -> None:
    """The extension's `forward_all` column is only the initial value: once *73 (or the
    console) switched the forward off, a restart must not bring the column's back."""

    def host(state: StateStore) -> FeatureHost:
        row = {"dnd": False, "call_waiting": True, "forward_all": "105"}
        return FeatureHost(
            FEATURES,
            Facts(
                now=lambda: 0.0,
                setting=lambda _n: None,
                extension=lambda n: row if n == "101" else None,
                group=lambda _n: None,
                registered=lambda _n: True,
                in_call=lambda _n: False,
                may_dial=lambda _number, _by: True,
                domain=lambda: "pbx.local",
            ),
            state,
        )

    state = StateStore(tmp_path / "state.mdb")
    first = host(state)
    assert first.toggles("101")["forward.forward_all"] == "105"  # the column
    first.set_by_name("101", "forward.forward_all", False)  # *73, or off on the console
    first.set_by_name("101", "dnd.dnd", True)
    first.close()  # the writer thread drains, as at SIGTERM
    second = host(state)
    try:
        got = second.toggles("101")
        assert got["forward.forward_all"] is False
        assert got["dnd.dnd"] is True
        second.set_by_name("101", "forward.forward_all", "102")
    finally:
        second.close()
    third = host(state)
    try:
        assert third.toggles("101")["forward.forward_all"] == "102"
    finally:
        third.close()
        state.close()


def test_two_features_may_not_keep_a_toggle_of_the_same_name() -> None:
    """The state LMDB keys a toggle by extension and toggle name: a second feature
    keeping `dnd` would read and overwrite the first's, so the host refuses it."""
    from pbx_core.features.api import Feature
    from pbx_core.pbx.features import FeatureError

    twin = Feature(name="twin", toggles={"dnd": None})
    host = _host()
    try:
        with pytest.raises(FeatureError, match="toggle dnd claimed twice"):
            FeatureHost((*FEATURES, twin), host.facts)
    finally:
        host.close()
