"""Busy lamp fields and presence (pbx/presence.py on subscriptions.py) on the office
harness: the `dialog` package's states as a call to a watched extension rings, is
answered and ends (with the caller's identity and the ids a lamp key's INVITE with
Replaces uses: such an INVITE built from the NOTIFY picks the call up), the caller's
own lamp, many watchers, `presence` (open/closed, on the phone, busy with DND), who
may watch what, a bad Accept, the caps as settings and `pbx status`."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.pbx import presence
from pbx_core.sip.message import Response
from tests.features.voicemail.test_mwi_subscribe import Watcher
from tests.harness.office import DOMAIN, Office, Phone, offices

NS = "{urn:ietf:params:xml:ns:dialog-info}"
SETTINGS = [
    "name(string) value(string,null)",
    "domain:pbx.local",
    "sub_max_per_extension:3",
    "sub_max_total:5",
]


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path)


class Lamp(Watcher):
    """A lamp key: a Watcher of another event and resource."""

    def __init__(self, office: Office, phone: Phone, event: str = "dialog") -> None:
        super().__init__(office, phone)
        self.event = event
        self.resource = phone.number

    def watch(self, resource: str, **kw: object) -> Response:
        self.resource = resource
        kw.setdefault("event", self.event)
        return self.subscribe(resource, **kw)  # type: ignore[arg-type]

    def refresh(self, expires: int | None, *, to_tag: str | None = None) -> Response:
        return self._send(self.resource, self.event, expires, "", to_tag or self.to_tag, None)

    def states(self) -> list[str]:
        """Each NOTIFY's dialog states, e.g. `early`, `confirmed+early`, `terminated`."""
        out = []
        for req in self.notifies:
            root = ET.fromstring(req.body)  # noqa: S314  # our own body
            out.append("+".join(d.findtext(f"{NS}state") or "" for d in root.iter(f"{NS}dialog")))
        return out

    def versions(self) -> list[int]:
        return [int(ET.fromstring(r.body).get("version", "-1")) for r in self.notifies]  # noqa: S314

    def dialog(self) -> ET.Element:
        (found,) = ET.fromstring(self.notifies[-1].body).iter(f"{NS}dialog")  # noqa: S314
        return found


def settle(office: Office) -> None:
    office.advance(presence.COALESCE * 3)


def test_a_call_lights_the_lamp_early_confirmed_then_terminated(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    lamp = Lamp(office, office.phone("102"))
    resp = lamp.watch("101", expires=600)
    assert resp.status == 200 and "dialog" in (resp.headers.get("allow-events") or "")
    first = lamp.notifies[0]
    assert first.headers.get("content-type") == "application/dialog-info+xml"
    assert first.headers.get("event") == "dialog"
    root = ET.fromstring(first.body)  # noqa: S314
    assert root.get("state") == "full" and root.get("entity") == f"sip:101@{DOMAIN}"
    assert lamp.states() == ["terminated"]
    call = a.call("101")
    settle(office)
    assert lamp.states() == ["terminated", "early"]
    d = lamp.dialog()
    assert d.get("direction") == "recipient"
    remote = d.find(f"{NS}remote/{NS}identity")
    assert remote is not None and remote.text == f"sip:100@{DOMAIN}"
    # The ids of the PBX's dialog with 101's phone, as that phone sees it.
    (inc,) = b.incoming
    assert d.get("call-id") == inc.call_id
    assert d.get("local-tag") == inc.tag and d.get("remote-tag") == inc.invite.from_.tag
    b.pick_up()
    settle(office)
    assert lamp.states()[-1] == "confirmed"
    call.hang_up()
    settle(office)
    assert lamp.states() == ["terminated", "early", "confirmed", "terminated"]
    assert lamp.versions() == [0, 1, 2, 3]  # RFC 4235 §4.1: one more per NOTIFY
    assert office.left_behind() == []


def test_a_lamp_key_picks_the_ringing_call_up_with_replaces(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    c = office.phone("102")
    lamp = Lamp(office, c)
    assert lamp.watch("101").status == 200
    call = a.call("101")
    settle(office)
    d = lamp.dialog()
    # What a Yealink/Snom key sends: to-tag = the remote tag (ours), from-tag = local.
    replaces = f"{d.get('call-id')};to-tag={d.get('remote-tag')};from-tag={d.get('local-tag')}"
    picked = c.call("101", extra=f"\nReplaces: {replaces};early-only")
    assert picked.status == 200 and call.status == 200
    assert b.incoming[0].state == "cancelled"
    settle(office)
    assert lamp.states() == ["terminated", "early", "terminated"]  # 101 is out of it
    assert lamp.versions() == [0, 1, 2]
    call.hang_up()
    assert office.left_behind() == []


def test_the_callers_lamp_shows_its_outgoing_call(office: Office) -> None:
    a, _b = office.phone("100"), office.phone("101", mode="ring")
    lamp = Lamp(office, office.phone("102"))
    assert lamp.watch("100").status == 200
    call = a.call("101")
    settle(office)
    d = lamp.dialog()
    assert lamp.states()[-1] == "early" and d.get("direction") == "initiator"
    assert d.get("call-id") == call.call_id and d.get("local-tag") == call.from_tag
    call.cancel()
    settle(office)
    assert lamp.states()[-1] == "terminated"
    assert office.left_behind() == []


def test_many_slow_watchers_get_the_latest_state_when_they_answer(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    lamps = []
    for _ in range(40):
        lamp = Lamp(office, office.phone("102"))
        assert lamp.watch("101").status == 200
        lamp.status = None  # nobody answers yet: later states wait behind the first
        lamps.append(lamp)
    call = a.call("101")
    settle(office)
    b.pick_up()
    settle(office)
    call.hang_up()
    settle(office)
    for lamp in lamps:
        # One NOTIFY in flight each (early, unanswered): `confirmed` and then
        # `terminated` waited behind it, only the latest is sent when it is answered.
        assert lamp.states() == ["terminated", "early"]
        lamp.status = 200
        office.run(lamp.held.pop(0), lamp.notifies[1].reply(200))
    settle(office)
    for lamp in lamps:
        assert lamp.states() == ["terminated", "early", "terminated"]
        assert lamp.versions() == [0, 1, 2]
    assert office.left_behind() == []


def test_a_burst_of_changes_is_one_notify(office: Office) -> None:
    a, b = office.phone("100"), office.phone("101", mode="ring")
    lamp = Lamp(office, office.phone("102"))
    assert lamp.watch("101").status == 200
    call = a.call("101")  # INVITE, 100 Trying, 180, all before the round
    b.pick_up()  # and the answer too
    settle(office)
    assert lamp.states() == ["terminated", "confirmed"]
    call.hang_up()
    settle(office)


def _pidf(lamp: Lamp) -> str:
    req = lamp.notifies[-1]
    assert req.headers.get("content-type") == "application/pidf+xml"
    body = req.body.decode()
    ET.fromstring(body)  # noqa: S314  # well formed
    basic = re.search(r"<basic>(\w+)</basic>", body)
    assert basic is not None
    activity = re.search(r"<rpid:activities><rpid:([\w-]+)/>", body)
    return basic.group(1) + ("/" + activity.group(1) if activity else "")


def test_presence_open_closed_on_the_phone_and_dnd(office: Office) -> None:
    a = office.phone("100")
    b = office.phone("101", register=False)
    lamp = Lamp(office, office.phone("102"), event="presence")
    assert lamp.watch("101").status == 200
    assert lamp.notifies[-1].headers.get("event") == "presence"
    assert _pidf(lamp) == "closed"
    assert b.register() == 200
    settle(office)
    assert _pidf(lamp) == "open"
    b.mode = "ring"
    call = a.call("101")
    settle(office)
    assert _pidf(lamp) == "open/on-the-phone"
    call.cancel()
    settle(office)
    assert _pidf(lamp) == "open"
    assert b.call("*78").status == 200  # do not disturb on, from the phone
    settle(office)
    assert _pidf(lamp) == "open/on-the-phone"  # hearing the confirmation
    office.advance(30)
    assert _pidf(lamp) == "open/busy"
    host = office.engine.features
    dnd = next(f for f in host.features if f.name == "dnd")
    office.run(host.set_toggle, dnd, "101", "dnd", False)  # the console's way
    settle(office)
    assert _pidf(lamp) == "open"
    assert b.register(expires=0) == 200
    settle(office)
    assert _pidf(lamp) == "closed"
    assert office.engine.status()["subscriptions"] == {"presence": 1}
    assert office.left_behind() == []


@pytest.mark.parametrize(
    ("event", "resource", "extra", "status"),
    [
        ("dialog", "999", "", 404),  # no such extension, no feature's lamp
        ("presence", "71", "", 404),  # a park slot has a lamp, not a presence
        ("x-nothing", "101", "", 489),
        ("dialog", "101", "\nAccept: application/pidf+xml", 406),
        ("presence", "101", "\nAccept: application/dialog-info+xml", 406),
    ],
)
def test_what_may_not_be_watched(
    office: Office, event: str, resource: str, extra: str, status: int
) -> None:
    lamp = Lamp(office, office.phone("102"), event=event)
    resp = lamp.watch(resource, extra=extra)
    assert resp.status == status
    if status == 489:
        allowed = {e.strip() for e in (resp.headers.get("allow-events") or "").split(",")}
        assert allowed == {"dialog", "message-summary", "presence"}
    assert lamp.notifies == []
    assert office.engine.status()["subscriptions"] == {}


def test_refresh_and_unsubscribe(office: Office) -> None:
    lamp = Lamp(office, office.phone("102"))
    assert lamp.watch("101", expires=600).status == 200
    resp = lamp.refresh(300)
    assert resp.status == 200 and resp.headers.get("expires") == "300"
    assert lamp.versions() == [0, 1]  # the refresh's NOTIFY
    assert lamp.refresh(0).status == 200
    assert lamp.notifies[-1].headers.get("subscription-state") == "terminated;reason=timeout"
    assert lamp.states()[-1] == "terminated"
    assert office.engine.status()["subscriptions"] == {}
    assert office.engine.subscriptions.watchers == {}  # the index lets go too


def test_an_expired_subscription_leaves_no_watcher_and_gets_no_more_notify(
    office: Office,
) -> None:
    a, _b = office.phone("100"), office.phone("101", mode="ring")
    lamp = Lamp(office, office.phone("102"))
    assert lamp.watch("101", expires=60).status == 200
    office.advance(61)
    assert lamp.notifies[-1].headers.get("subscription-state") == "terminated;reason=timeout"
    assert office.engine.subscriptions.watchers == {}
    sent = len(lamp.notifies)
    call = a.call("101")
    settle(office)
    assert len(lamp.notifies) == sent
    call.cancel()
    assert office.left_behind() == []


def test_the_caps_are_settings_and_status_counts_per_package(office: Office) -> None:
    office.reload("pbx_settings", SETTINGS)
    c = office.phone("102")
    for resource in ("100", "101", "103"):
        assert Lamp(office, c).watch(resource).status == 200
    assert Lamp(office, c, event="presence").watch("100").status == 403  # 3 per extension
    assert Lamp(office, office.phone("103"), event="presence").watch("101").status == 200
    assert Lamp(office, office.phone("100")).watch("101").status == 200
    full = Lamp(office, office.phone("101")).watch("100")
    assert full.status == 503 and full.headers.get("retry-after")  # 5 in all
    assert office.engine.status()["subscriptions"] == {"dialog": 4, "presence": 1}


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("A<b>&\"c'", "100"),
        ("]]><x/>", "0301234567"),
        ("\u00e9l\u00e8ve", "anonymous"),
        ("Tab\there\nline", "101"),  # kept: XML escapes them in an attribute
        ("bell\x07esc\x1b", "102"),  # no XML 1.0 document may hold these: dropped
    ],
)
def test_a_callers_name_and_number_never_break_the_xml(name: str, number: str) -> None:
    line = presence.Line("x1", "early", "recipient", 'c"id', "l&t", "r<t", number, name)
    body = presence._dialog_info("sip:101@pbx.local", "pbx.local", [line]).replace(
        b"{version}", b"0"
    )
    root = ET.fromstring(body)  # noqa: S314  # our own body
    (d,) = root.iter(f"{NS}dialog")
    assert (d.get("call-id"), d.get("local-tag"), d.get("remote-tag")) == ('c"id', "l&t", "r<t")
    identity = d.find(f"{NS}remote/{NS}identity")
    shown = "".join(c for c in name if c >= " " or c in "\t\n\r")
    assert identity is not None and identity.get("display") == shown
    assert identity.text == f"sip:{number}@pbx.local"


def test_a_key_on_star76_shows_the_extensions_dnd(office: Office) -> None:
    b = office.phone("101")
    lamp = Lamp(office, office.phone("102"))
    assert lamp.watch("*76101").status == 200
    assert lamp.states() == ["terminated"]
    assert b.call("*78").status == 200  # on
    settle(office)
    assert lamp.states() == ["terminated", "confirmed"]
    host = office.engine.features
    dnd = next(f for f in host.features if f.name == "dnd")
    office.run(host.set_toggle, dnd, "101", "dnd", False)  # off, from the console
    settle(office)
    assert lamp.states() == ["terminated", "confirmed", "terminated"]
    assert Lamp(office, office.phone("102")).watch("*76999").status == 404
    office.advance(30)
    assert office.left_behind() == []
