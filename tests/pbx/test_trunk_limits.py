"""A trunk's `max_channels` and a DID's `trunk` act (issue 12, configuration
honesty), through the whole transaction user (tests/pbx/pbx_harness.py) on the
factory tables with these two columns set.

- `pbx_trunk.max_channels` N > 0: a call beyond N calls over the trunk (in or out)
  gets 503; 0 = no limit.
- `pbx_did.trunk`: the row matches only calls from that trunk; a call from another
  trunk gets the `*` row (when that is for it or for any trunk), else 404.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pbx import pbx_harness
from tests.pbx.pbx_harness import GOOD_SDP, Pbx

TRUNK_HEADER = (
    "id(int,auto) name(string) enabled(int) host(string) port(int) transport(string) "
    "username(string,null) password(string,null) register(int) caller_id(string,null) "
    "max_channels(int)\n"
)
DID_HEADER = "number(string) trunk(string,null) dest_type(string) dest(string,null)\n"
_n = itertools.count(1)
MakePbx = Callable[..., Pbx]


def _tables(tmp: Path, max_channels: int, dids: str) -> Path:
    d = tmp / "tables"
    shutil.copytree(pbx_harness.FACTORY, d)
    (d / "pbx_trunk").write_text(
        TRUNK_HEADER
        + f"1:provider:0:sip.example.net:5060:udp:::1::{max_channels}\n"
        + "2:other:0:sip.example.org:5060:udp:::1::0\n"
    )
    (d / "pbx_did").write_text(DID_HEADER + dids)
    return d


@pytest.fixture
def make_pbx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePbx]:
    made: list[tuple[Pbx, asyncio.AbstractEventLoop]] = []

    def make(max_channels: int = 0, dids: str = "*::extension:101\n") -> Pbx:
        sub = tmp_path / f"p{len(made)}"
        sub.mkdir()
        monkeypatch.setattr(pbx_harness, "FACTORY", _tables(sub, max_channels, dids))
        loop = asyncio.new_event_loop()
        p = Pbx(sub, loop)
        made.append((p, loop))
        return p

    yield make
    for p, loop in made:
        p.close()
        loop.close()


def trunk_invite(pbx: Pbx, trunk: str, number: str) -> object:
    """An INVITE from the provider of `trunk` to `number` (as the engine hands it
    to routing once the source is known as the trunk's)."""
    n = next(_n)
    req = pbx.message(
        f"""INVITE sip:{number}@127.0.0.1 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:5090;branch=z9hG4bKtrunk{n}
From: <sip:4930999@sip.example.net>;tag=t{n}
To: <sip:{number}@127.0.0.1>
Call-ID: trunk{n}@test
CSeq: 1 INVITE
Max-Forwards: 70
Contact: <sip:4930999@127.0.0.2:5090>""",
        GOOD_SDP,
        "application/sdp",
    )
    key = ("server", f"trunk{n}", 1)
    pbx.engine.router.from_trunk(req, ("UDP", "127.0.0.2", 5090), key, trunk, number)  # type: ignore[arg-type]
    return key


def test_max_channels_refuses_the_call_beyond_it_with_503(make_pbx: MakePbx) -> None:
    pbx = make_pbx(max_channels=1)
    first = trunk_invite(pbx, "provider", "4930555")
    assert pbx.final(first) is None  # ringing 101
    assert len(pbx.forks()) == 1
    second = trunk_invite(pbx, "provider", "4930555")
    assert pbx.final(second) == 503
    assert "max_channels" in (pbx.finals[second][0].headers.get("warning") or "")
    assert len(pbx.forks()) == 1  # nothing rang for it
    # another trunk is not limited by this one's channels
    third = trunk_invite(pbx, "other", "4930555")
    assert pbx.final(third) is None


def test_max_channels_counts_outbound_calls_too(make_pbx: MakePbx) -> None:
    pbx = make_pbx(max_channels=1)
    first = trunk_invite(pbx, "provider", "4930555")
    assert pbx.final(first) is None
    out = pbx.invite("0301234567", GOOD_SDP, user="100")  # 0. -> provider
    assert pbx.final(out) == 503
    assert "max_channels" in (pbx.finals[out][0].headers.get("warning") or "")
    assert pbx.engine.router.trunk_full("provider")


def test_max_channels_zero_is_no_limit(make_pbx: MakePbx) -> None:
    pbx = make_pbx(max_channels=0)
    keys = [trunk_invite(pbx, "provider", "4930555") for _ in range(5)]
    assert [pbx.final(k) for k in keys] == [None] * 5
    assert not pbx.engine.router.trunk_full("provider")


def test_a_did_for_one_trunk_does_not_match_calls_from_another(make_pbx: MakePbx) -> None:
    pbx = make_pbx(dids="4930555:provider:extension:101\n*:other:hangup:\n")
    assert pbx.final(trunk_invite(pbx, "provider", "4930555")) is None  # rings 101
    assert pbx.final(trunk_invite(pbx, "other", "4930555")) == 603  # * row: hangup
    assert pbx.final(trunk_invite(pbx, "provider", "4930777")) == 404  # * is other's


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from([None, "provider", "other"]),
    st.sampled_from([None, "provider", "other"]),
    st.sampled_from(["provider", "other"]),
    st.booleans(),
)
def test_did_trunk_matching_property(
    tmp_path_factory: pytest.TempPathFactory,
    row_trunk: str | None,
    star_trunk: str | None,
    caller: str,
    listed: bool,
) -> None:
    """Whatever the rows name, the call goes to the listed row only if it is for the
    caller's trunk (or any), else to `*` only if that is, else 404."""
    tmp = tmp_path_factory.mktemp("did")
    dids = f"4930555:{row_trunk or ''}:extension:101\n*:{star_trunk or ''}:hangup:\n"
    d = _tables(tmp, 0, dids)
    saved = pbx_harness.FACTORY
    pbx_harness.FACTORY = d
    loop = asyncio.new_event_loop()
    try:
        pbx = Pbx(tmp, loop)
        try:
            number = "4930555" if listed else "4930777"
            got = pbx.final(trunk_invite(pbx, caller, number))
        finally:
            pbx.close()
    finally:
        pbx_harness.FACTORY = saved
        loop.close()
    if listed and row_trunk in (None, caller):
        assert got is None  # ringing 101
    elif star_trunk in (None, caller):
        assert got == 603  # the * row: hangup
    else:
        assert got == 404
