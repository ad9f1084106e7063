"""The dial plan's order (pbx/routing.py): emergency routes, feature codes, extensions
and aliases, numbered destinations, outbound routes. An emergency route beats a
feature code; a catch-all outbound pattern never swallows a feature code or an
extension; emergency is allowed to every call class."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.office import PROVIDER_TRUNK, Office, extension_row, extensions, offices

DIALPLAN_HEADER = (
    "id(int,auto) priority(int) pattern(string) action(string) trunk(string,null) "
    "strip(int) prepend(string,null) description(string,null) call_class(string)"
)


def dialplan(*rows: str) -> list[str]:
    """Rows `priority:pattern:call_class`, all to the provider, nothing stripped."""
    out = [DIALPLAN_HEADER]
    for i, row in enumerate(rows, 1):
        prio, pattern, cls = row.split(":")
        out.append(f"{i}:{prio}:{pattern}:trunk:provider:0:::{cls}")
    return out


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables={"pbx_trunk": PROVIDER_TRUNK})


def test_an_emergency_route_beats_a_feature_code(office: Office) -> None:
    office.reload("pbx_dialplan", dialplan("0:*43:emergency", "0:112:emergency"))
    provider = office.provider()
    a = office.phone("100")
    call = a.call("*43")
    assert call.status == 200
    assert office.engine.features.running_apps == 0  # not the echo test
    (inc,) = provider.incoming
    assert inc.invite.uri.user == "*43"
    call.hang_up()
    assert office.left_behind() == []


def test_emergency_is_allowed_to_an_internal_extension(office: Office) -> None:
    office.reload("pbx_dialplan", dialplan("0:112:emergency", "0:0.:national"))
    office.reload("pbx_extension", extensions(extension_row(1, "100", call_class="internal")))
    provider = office.provider()
    a = office.phone("100")
    assert a.call("0123").status == 403
    call = a.call("112")
    assert call.status == 200 and len(provider.incoming) == 1
    call.hang_up()


@pytest.mark.parametrize(
    ("pattern", "outside_number"), [(".", "0123"), ("X.", "0123"), ("!", "0123"), ("*.", "*999")]
)
def test_a_catch_all_route_swallows_no_feature_code_and_no_extension(
    office: Office, pattern: str, outside_number: str
) -> None:
    office.reload("pbx_dialplan", dialplan(f"0:{pattern}:local"))
    provider = office.provider()
    a, b = office.phone("100"), office.phone("101")
    echo = a.call("*43")
    assert echo.status == 200 and office.engine.features.running_apps == 1
    echo.hang_up()
    # a number starting with a code that its feature declines (*431: nothing follows
    # *43) is not the route's either
    assert a.call("*431").status == 404
    call = a.call("101")
    assert call.status == 200 and len(b.incoming) == 1
    call.hang_up()
    call = b.call("reception")  # an alias of 100 (dbaliases)
    assert call.status == 200 and len(a.incoming) == 1
    call.hang_up()
    assert provider.incoming == []
    outside = a.call(outside_number)  # what the route is for still goes out
    assert outside.status == 200, outside.final.headers.get("warning")
    assert len(provider.incoming) == 1
    outside.hang_up()
    assert office.left_behind() == []


def test_an_alias_rings_its_extension_before_any_route(office: Office) -> None:
    office.reload("pbx_dialplan", dialplan("0:.:local"))
    provider = office.provider()
    a, b = office.phone("100"), office.phone("101")
    call = b.call("reception")  # dbaliases: reception -> 100
    assert call.status == 200 and len(a.incoming) == 1 and provider.incoming == []
    call.hang_up()


def test_a_ring_group_number_comes_before_routes(office: Office) -> None:
    office.reload("pbx_dialplan", dialplan("0:.:local"))
    provider = office.provider()
    a, b = office.phone("100"), office.phone("101")
    call = a.call("600")  # the factory's group: 100, 101, 102
    assert call.status == 200 and len(b.incoming) == 1 and provider.incoming == []
    call.hang_up()
