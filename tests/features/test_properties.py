"""Properties over tables and dial strings (hypothesis), the class of the two routing
bugs the rule tests found:

- any ring-group graph the tables accept (failovers to groups, extensions or hangup,
  cycles included) with members in any state (ringing, busy, dead, answering,
  unregistered): every call gets one final answer in bounded time, never a 500, and
  leaves nothing behind;
- a dial string that starts with a feature code is the features' whatever follows
  it: a catch-all route never takes it out to the provider.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.features.forward import MAX_TARGET
from tests.features.test_dialplan import dialplan
from tests.fuzzing import fuzz_settings
from tests.harness.office import PROVIDER_TRUNK, Office, groups

GROUPS = ("610", "611", "612", "613")
MEMBERS = ("101", "102", "103")
MODES = ("ring", "busy", "dead", "answer", "unregistered")

group_row = st.tuples(
    st.sampled_from(("ringall", "hunt")),
    st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3, unique=True),
    st.integers(5, 12),
    st.one_of(
        st.just(("hangup", "")),
        st.tuples(st.just("group"), st.sampled_from(GROUPS)),
        st.tuples(st.just("extension"), st.sampled_from(MEMBERS)),
    ),
)


@pytest.mark.fuzz
@fuzz_settings(15)
@given(
    rows=st.lists(group_row, min_size=len(GROUPS), max_size=len(GROUPS)),
    modes=st.lists(st.sampled_from(MODES), min_size=3, max_size=3),
    dialled=st.sampled_from(GROUPS),
)
def test_any_group_graph_ends_every_call(
    rows: list[tuple[str, list[str], int, tuple[str, str]]], modes: list[str], dialled: str
) -> None:
    table = ["600:ringall:101:15:hangup:"]  # the factory's IVR names 600
    for number, (strategy, members, timeout, (ftype, fdest)) in zip(GROUPS, rows, strict=True):
        table.append(f"{number}:{strategy}:{','.join(members)}:{timeout}:{ftype}:{fdest}")
    with tempfile.TemporaryDirectory() as tmp:
        office = Office(Path(tmp), tables={"pbx_ring_group": groups(*table)})
        try:
            a = office.phone("100")
            for number, mode in zip(MEMBERS, modes, strict=True):
                registered = mode != "unregistered"
                office.phone(number, register=registered, mode=mode if registered else "ring")
            call = a.call(dialled)
            # 4 groups x 3 steps x 12 s, then an extension's 20 s: 164 s at most
            for _ in range(40):
                if call.status is not None:
                    break
                office.advance(5)
            assert call.status is not None, "still ringing after every step could have run"
            assert call.status != 500
            if call.status == 200:
                call.hang_up()
            office.advance(40)  # dead phones' transactions time out
            assert office.left_behind() == []
        finally:
            office.close()


def test_a_feature_code_with_anything_after_it_never_goes_out(tmp_path: Path) -> None:
    office = Office(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})
    try:
        office.reload("pbx_dialplan", dialplan("0:!:local"))
        provider = office.provider()
        phone = office.phone("101")
        codes = office.engine.features.codes
        assert len(codes) >= 10  # echo, dnd, call waiting, forward

        @fuzz_settings(40)
        @given(code=st.sampled_from(codes), rest=st.text("0123456789*#", max_size=MAX_TARGET))
        def dial(code: str, rest: str) -> None:
            call = phone.call(code + rest)
            assert call.status is not None
            if call.status == 200:
                office.advance(70)  # confirmations, prompts, the echo's RTP timeout
            assert provider.incoming == [], code + rest
            assert office.left_behind() == []

        dial()
        assert len(phone.outgoing) >= 10  # the examples ran
    finally:
        office.close()
