"""The feature host's toggles over a restart (pbx/features.py): whatever a phone or the
console set last is what a new host on the same state LMDB reads, also when the
extension's column gives the toggle an initial value. Found by the interop restart
test: *73 stored None ("not saved"), so after a restart the column's initial forward
came back; and the console's None meant "off" until a restart, then the column's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx_core.features.api import Answer, CallInfo, Feature
from pbx_core.features.forward import FEATURE as FORWARD
from pbx_core.pbx.features import Facts, FeatureHost
from pbx_core.store.state import StateStore

FEATURE = Feature(name="f", toggles={"on": "on_column", "target": "target_column"})


def host(state: StateStore, row: dict[str, Any], feature: Feature = FEATURE) -> FeatureHost:
    facts = Facts(
        now=lambda: 0.0,
        setting=lambda _name: None,
        extension=lambda number: row if number == "101" else None,
        group=lambda _number: None,
        registered=lambda _number: False,
        in_call=lambda _number: False,
        may_dial=lambda _number, _by: True,
        domain=lambda: "pbx.local",
    )
    return FeatureHost((feature,), facts, state)


@pytest.mark.parametrize("code", ["*73", "*91", "*53"])
def test_a_phones_forward_off_outlasts_the_columns_initial_forward(
    tmp_path: Path, code: str
) -> None:
    row = {"forward_all": "102", "forward_busy": "102", "forward_noanswer": "102"}
    state = StateStore(tmp_path / "state.mdb")
    try:
        first = host(state, row, FORWARD)
        before = first.toggles("101")
        assert set(before.values()) == {"102"}, before  # the columns' initial forwards
        info = CallInfo("101@pbx.local", "101", "national", code, from_extension=True)
        assert isinstance(first.dial(info, "101@pbx.local", "101"), Answer)
        off = first.toggles("101")
        first.close()  # the daemon's stop: the writer finishes
        after = host(state, row, FORWARD).toggles("101")
        assert after == off, (off, after)
        assert sum(1 for v in after.values() if v == "102") == 2, after  # one is off
    finally:
        state.close()


values = st.one_of(st.none(), st.booleans(), st.text("0123456789", min_size=1, max_size=8))


@settings(max_examples=60, deadline=None)
@given(
    column=st.one_of(st.none(), st.booleans(), st.text("0123456789", min_size=1, max_size=8)),
    writes=st.lists(values, max_size=5),
)
def test_what_is_read_before_a_restart_is_read_after(
    tmp_path_factory: Any, column: Any, writes: list[Any]
) -> None:
    row = {"on_column": column, "target_column": column}
    state = StateStore(tmp_path_factory.mktemp("state") / "state.mdb")
    before = host(state, row)
    try:
        for value in writes:
            before.set_toggle(FEATURE, "101", "target", value)
        seen = before.toggle(FEATURE, "101", "target")
    finally:
        before.close()  # its writer is done with the state before it closes
    try:
        # None is "the column's" (StateStore.set_toggle: back to default), now too.
        assert seen == (column if not writes or writes[-1] is None else writes[-1])
        assert host(state, row).toggle(FEATURE, "101", "target") == seen
    finally:
        state.close()


def test_a_reload_that_changes_the_column_applies(tmp_path: Path) -> None:
    """The column is the toggle's value while no phone or console has set one: a
    new configuration that changes it applies at once (the host once kept the
    first value it read until a restart), and never over a value set since."""
    row: dict[str, Any] = {"on_column": False, "target_column": None}
    state = StateStore(tmp_path / "state.mdb")
    try:
        live = host(state, row)
        assert live.toggle(FEATURE, "101", "on") is False
        row["on_column"] = True  # `pbx db commit` and the daemon reloads
        assert live.toggle(FEATURE, "101", "on") is True
        live.set_toggle(FEATURE, "101", "on", False)  # the phone turns it off
        row["on_column"] = 1
        assert live.toggle(FEATURE, "101", "on") is False
        live.set_toggle(FEATURE, "101", "on", None)  # the console: the table's again
        assert live.toggle(FEATURE, "101", "on") == 1
        live.close()
    finally:
        state.close()
