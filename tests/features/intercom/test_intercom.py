"""Intercom (features/intercom) on the office harness: *80 + extension rings the
extension's phones with the auto-answer headers phones honour; *55 refuses intercom
(kept across a restart), *54 allows it again; unknown and own extensions refused;
DND still refuses."""

from __future__ import annotations

from tests.features.dnd.test_dnd import dial_code
from tests.harness.office import Office


def test_star80_asks_the_phone_to_answer_by_itself(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    call = a.call("*80101")
    assert call.status == 200
    (inc,) = b.incoming
    assert any("answer-after=0" in v for v in inc.header("call-info"))
    assert any("info=alert-autoanswer" in v for v in inc.header("alert-info"))
    assert "<sip:100@" in inc.invite.headers.get("from")
    call.hang_up()
    # An ordinary call carries none of it.
    plain = a.call("101")
    assert b.incoming[1].header("call-info") == [] and b.incoming[1].header("alert-info") == []
    plain.hang_up()
    assert office.left_behind() == []


def test_an_extension_may_refuse_intercom(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    dial_code(b, "*55")
    assert office.engine.features.toggles("101")["intercom.intercom"] is False
    assert a.call("*80101").status == 403
    assert b.incoming == []
    office.restart()
    a, b = office.phone("100"), office.phone("101")
    assert a.call("*80101").status == 403  # kept across a restart
    dial_code(b, "*54")
    call = a.call("*80101")
    assert call.status == 200
    call.hang_up()
    assert office.left_behind() == []


def test_unknown_own_and_dnd_extensions(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101")
    assert a.call("*80999").status == 404
    assert a.call("*80100").status == 403
    dial_code(b, "*78")  # do not disturb: intercom is refused as any call
    assert a.call("*80101").status == 486
    assert office.left_behind() == []


def test_one_way_intercom_passes_nothing_of_the_callee(office: Office) -> None:
    office.reload(
        "pbx_settings",
        ["name(string) value(string,null)", "domain:pbx.local", "intercom_mode:one-way"],
    )
    a, b = office.phone("100"), office.phone("101")
    call = a.call("*80101")
    assert call.status == 200
    media = office.engine.calls.by_key[call.key].media
    assert media is not None
    # What the caller sends reaches the callee; nothing the callee sends goes back.
    assert media.caller._forward_to is media.callee
    assert media.callee._forward_to is None
    call.hang_up()
    plain = a.call("*80101")  # the setting back to two-way: both directions again
    office.reload("pbx_settings", ["name(string) value(string,null)", "domain:pbx.local"])
    plain.hang_up()
    two_way = a.call("*80101")
    media = office.engine.calls.by_key[two_way.key].media
    assert media is not None and media.callee._forward_to is media.caller
    two_way.hang_up()
    assert len(b.incoming) == 3
    assert office.left_behind() == []
