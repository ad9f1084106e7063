"""SUBSCRIBE-based message waiting (RFC 6665 + RFC 3842) on the harness
(tests/harness/office.py): the digest, the event package, Expires bounds, the
immediate NOTIFY and one per change, refresh, unsubscribe, fetch, expiry, NOTIFY
failures, the limits, a reload that takes the box away, who may watch which box,
and that a subscribed contact gets no unsolicited NOTIFY."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pbx_core.pbx import subscriptions as subs_module
from pbx_core.pbx.mwi import summary
from pbx_core.sip.digest_client import DigestClient
from pbx_core.sip.message import Request, Response
from tests.features.voicemail.test_voicemail import HEADER, SETTINGS, _ext, _leave
from tests.harness.office import DOMAIN, Office, Phone, message, offices

MAILBOX_HEADER = (
    "number(string) owners(string) pin(string,null) max_messages(int,null) description(string,null)"
)
TABLES = {
    "pbx_settings": SETTINGS,
    "pbx_extension": [
        HEADER,
        _ext(1, "100", True, ring_timeout=10),
        _ext(2, "101", True, "4711", ring_timeout=10),
        _ext(3, "102", False),
    ],
    "pbx_mailbox": [MAILBOX_HEADER, "650:100,101:2468::sales"],
}
_ids = itertools.count(1)


@pytest.fixture
def office(tmp_path: Path) -> Iterator[Office]:
    yield from offices(tmp_path, tables=TABLES)


class Watcher:
    """A phone's subscriber side: SUBSCRIBE (answering the 407 once), and the
    NOTIFYs the PBX sends it, answered with `status` (None: never answered)."""

    def __init__(self, office: Office, phone: Phone) -> None:
        self.office = office
        self.phone = phone
        self.status: int | None = 200
        self.notifies: list[Request] = []
        self.held: list[Any] = []  # callbacks of NOTIFYs not answered yet (status None)
        self.call_id = ""
        self.tag = ""
        self.to_tag: str | None = None
        self.cseq = 0
        real = office.stack.on_request

        def to_phone(req: Request, dest: object, cb: Any) -> None:
            if req.method == "NOTIFY" and dest == phone.address and req.to.tag == self.tag:
                self.notifies.append(req)
                if self.status is None:
                    self.held.append(cb)
                else:
                    cb(req.reply(self.status))
                return
            assert real is not None
            real(req, dest, cb)

        office.stack.on_request = to_phone

    def subscribe(
        self,
        resource: str | None = None,
        *,
        event: str | None = "message-summary",
        expires: int | str | None = None,
        auth: bool = True,
        extra: str = "",
        user: str | None = None,
    ) -> Response:
        """An out-of-dialog SUBSCRIBE (a new dialog); the final response."""
        n = next(_ids)
        user = user or self.phone.number
        resource = resource or self.phone.number
        self.call_id, self.tag, self.to_tag = f"sub{n}@test", f"w{n}", None
        client = DigestClient(user, f"change-me-{user}")
        resp: Response | None = None
        for attempt in (1, 2) if auth else (1,):
            headers = extra
            if attempt == 2:
                uri = f"sip:{resource}@{DOMAIN}"
                headers += f"\nProxy-Authorization: {client.authorization('SUBSCRIBE', uri, 'c')}"
            resp = self._send(resource, event, expires, headers, None, user)
            if attempt == 1 and auth and resp.status == 407:
                assert client.on_challenge(resp.headers.getall("proxy-authenticate"))
            else:
                break
        assert resp is not None
        if resp.status == 200:
            self.to_tag = resp.to.tag
        return resp

    def refresh(self, expires: int | None, *, to_tag: str | None = None) -> Response:
        return self._send(
            self.phone.number, "message-summary", expires, "", to_tag or self.to_tag, None
        )

    def _send(
        self,
        resource: str,
        event: str | None,
        expires: int | str | None,
        extra: str,
        to_tag: str | None,
        user: str | None,
    ) -> Response:
        self.cseq += 1
        port = self.phone.port
        lines = [
            f"SUBSCRIBE sip:{resource}@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKsub{self.tag}x{self.cseq}",
            f"From: <sip:{user or self.phone.number}@{DOMAIN}>;tag={self.tag}",
            f"To: <sip:{resource}@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} SUBSCRIBE",
            "Max-Forwards: 70",
            f"Contact: <sip:{self.phone.number}@127.0.0.1:{port}>",
        ]
        if event is not None:
            lines.append(f"Event: {event}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        req = message("\n".join(lines) + extra)
        key = ("SUBSCRIBE", self.call_id, self.cseq)
        self.office.run(self.office.engine.on_request, req, self.phone.address, key, None)
        self.office.advance(0.01)
        (resp,) = self.office.stack.finals[key]
        return resp

    def last(self) -> tuple[str, str]:
        """(Subscription-State, body) of the latest NOTIFY."""
        req = self.notifies[-1]
        return req.headers.get("subscription-state") or "", req.body.decode()


def _unsolicited(office: Office, phone: Phone) -> list[str]:
    """The out-of-dialog message-summary NOTIFYs sent to `phone`."""
    return [
        r.body.decode()
        for r, dest, _cb in office.stack.requests
        if r.method == "NOTIFY" and dest == phone.address and r.to.tag is None
    ]


def _no(box: str) -> str:
    return summary(0, 0, f"sip:{box}@{DOMAIN}").decode()


def test_subscribe_gets_200_then_the_state_and_a_notify_on_every_change(office: Office) -> None:
    phone = office.phone("101")
    w = Watcher(office, phone)
    before = len(_unsolicited(office, phone))
    resp = w.subscribe(expires=600)
    assert resp.status == 200
    assert resp.headers.get("expires") == "600"
    assert resp.headers.get("contact") and "message-summary" in (
        resp.headers.get("allow-events") or ""
    )
    state, body = w.last()
    assert state == "active;expires=600" and body == _no("101")  # 101: own box + 650 together
    first = w.notifies[0]
    assert first.call_id == w.call_id and first.to.tag == w.tag
    assert first.from_.tag == resp.to.tag
    assert first.headers.get("event") == "message-summary"
    assert first.headers.get("content-type") == "application/simple-message-summary"
    _leave(office, office.phone("102").call("*96101"))
    state, body = w.last()
    assert state.startswith("active;expires=") and "Messages-Waiting: yes" in body
    assert "Voice-Message: 1/0 (0/0)" in body
    assert w.notifies[-1].cseq.seq > first.cseq.seq
    # The subscribed contact got no unsolicited NOTIFY for the change.
    assert len(_unsolicited(office, phone)) == before
    # Another phone of 101 that does not subscribe still does.
    other = office.phone("101")
    _leave(office, office.phone("102").call("*96101"))
    assert "Voice-Message: 2/0 (0/0)" in _unsolicited(office, other)[-1]
    assert "Voice-Message: 2/0 (0/0)" in w.last()[1]
    assert len(_unsolicited(office, phone)) == before
    assert office.engine.status()["subscriptions"] == {"message-summary": 1}


@pytest.mark.parametrize(
    ("kw", "status", "header", "value"),
    [
        ({"event": None}, 489, "allow-events", "message-summary"),
        ({"event": "x-unknown"}, 489, "allow-events", "message-summary"),
        ({"event": "message-summary\nEvent: dialog"}, 489, "allow-events", "message-summary"),
        ({"expires": 30}, 423, "min-expires", "60"),
        ({"expires": 1}, 423, "min-expires", "60"),
        ({"expires": "soon"}, 400, None, None),
        ({"expires": 2**32}, 400, None, None),
        ({"resource": "100"}, 403, "warning", "not yours"),  # another's box
        ({"resource": "102"}, 404, None, None),  # an extension with no box
        ({"resource": "999"}, 404, None, None),
        ({"resource": "101", "user": "102"}, 403, "warning", "not yours"),
        ({"extra": "\nAccept: application/pidf+xml"}, 406, "accept", "simple-message-summary"),
    ],
)
def test_bad_subscribes_are_refused_and_nothing_is_kept(
    office: Office, kw: dict[str, Any], status: int, header: str | None, value: str | None
) -> None:
    w = Watcher(office, office.phone("101"))
    resp = w.subscribe(**kw)
    assert resp.status == status
    if header is not None:
        assert value in (resp.headers.get(header) or "")
    assert w.notifies == [] and office.engine.subscriptions.subs == {}


def test_no_credentials_get_407_and_a_wrong_from_403(office: Office) -> None:
    w = Watcher(office, office.phone("101"))
    assert w.subscribe(auth=False).status == 407
    # 102's credentials, From 101: the digest says who it is, From must agree.
    n = next(_ids)
    client = DigestClient("102", "change-me-102")
    w.call_id, w.tag = f"sub{n}@test", f"w{n}"
    challenge = w._send("101", "message-summary", None, "", None, "101")
    assert challenge.status == 407
    assert client.on_challenge(challenge.headers.getall("proxy-authenticate"))
    creds = client.authorization("SUBSCRIBE", f"sip:101@{DOMAIN}", "c")
    resp = w._send("101", "message-summary", None, f"\nProxy-Authorization: {creds}", None, "101")
    assert resp.status == 403 and "From is not you" in (resp.headers.get("warning") or "")
    assert w.notifies == [] and office.engine.subscriptions.subs == {}


def test_huge_expires_is_lowered_and_none_takes_the_default(office: Office) -> None:
    w = Watcher(office, office.phone("101"))
    resp = w.subscribe(expires=99_999_999)
    assert resp.status == 200 and resp.headers.get("expires") == str(subs_module.MAX_EXPIRES)
    assert w.last()[0] == f"active;expires={subs_module.MAX_EXPIRES}"
    w2 = Watcher(office, office.phone("101"))
    assert w2.subscribe().headers.get("expires") == "3600"  # RFC 3842's default


def test_expires_zero_is_a_fetch(office: Office) -> None:
    _leave(office, office.phone("102").call("*96101"))
    w = Watcher(office, office.phone("101"))
    resp = w.subscribe(expires=0)
    assert resp.status == 200 and resp.headers.get("expires") == "0"
    ((state, body),) = [w.last()]
    assert state == "terminated;reason=timeout" and "Voice-Message: 1/0" in body
    assert len(w.notifies) == 1 and office.engine.subscriptions.subs == {}


def test_refresh_unsubscribe_and_unknown_dialogs(office: Office) -> None:
    w = Watcher(office, office.phone("101"))
    assert w.subscribe(expires=300).status == 200
    office.advance(200)
    resp = w.refresh(900)
    assert resp.status == 200 and resp.headers.get("expires") == "900"
    assert resp.to.tag == w.to_tag
    assert w.last()[0] == "active;expires=900"
    office.advance(400)  # past the first expiry: the refresh holds it
    assert len(office.engine.subscriptions.subs) == 1
    assert w.refresh(30).status == 423
    assert w.refresh(None, to_tag="nosuchtag").status == 481
    resp = w.refresh(0)
    assert resp.status == 200
    assert w.last()[0] == "terminated;reason=timeout" and "Messages-Waiting: no" in w.last()[1]
    assert office.engine.subscriptions.subs == {}
    assert w.refresh(600).status == 481  # gone


def test_a_subscription_expires_with_a_last_notify(office: Office) -> None:
    w = Watcher(office, office.phone("101"))
    assert w.subscribe(expires=120).status == 200
    office.advance(121)
    assert w.last()[0] == "terminated;reason=timeout"
    assert office.engine.subscriptions.subs == {}
    count = len(w.notifies)
    _leave(office, office.phone("102").call("*96101"))
    assert len(w.notifies) == count  # nothing more on that dialog
    assert "Voice-Message: 1/0" in _unsolicited(office, w.phone)[-1]  # unsolicited again


@pytest.mark.parametrize("status", [481, 408, None])
def test_a_failed_notify_ends_the_subscription(office: Office, status: int | None) -> None:
    w = Watcher(office, office.phone("101"))
    assert w.subscribe().status == 200
    w.status = 481 if status == 481 else 408
    if status is None:  # Timer F: the transaction reports no response
        w.status = None
    _leave(office, office.phone("102").call("*96101"))
    if status is None:
        for cb in w.held:
            cb(None)
    assert office.engine.subscriptions.subs == {}


def test_one_notify_in_flight_the_latest_state_follows(office: Office) -> None:
    w = Watcher(office, office.phone("101"))
    w.status = None  # the phone holds its answers
    assert w.subscribe().status == 200
    caller = office.phone("102")
    _leave(office, caller.call("*96101"))
    _leave(office, caller.call("*96100"))  # 100's box: not 101's lamp, no NOTIFY needed
    _leave(office, caller.call("*96101"))
    assert len(w.notifies) == 1  # the first state only: the rest waits
    w.status = 200
    w.held.pop(0)(w.notifies[0].reply(200))
    assert len(w.notifies) == 2 and "Voice-Message: 2/0" in w.last()[1]


def test_limits_per_user_and_in_all_and_a_resubscribe_replaces(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(office.engine.subscriptions, "max_per_user", 2)
    phone = office.phone("101")
    w = Watcher(office, phone)
    for _ in range(4):  # the same contact again: each replaces the one before
        assert w.subscribe().status == 200
    assert len(office.engine.subscriptions.subs) == 1
    assert w.subscribe("650").status == 200
    other = Watcher(office, office.phone("101"))
    resp = other.subscribe()
    assert resp.status == 403 and "at most 2" in (resp.headers.get("warning") or "")
    monkeypatch.setattr(office.engine.subscriptions, "max_total", 2)
    resp = Watcher(office, office.phone("100")).subscribe()
    assert resp.status == 503 and resp.headers.get("retry-after") == "60"
    assert len(office.engine.subscriptions.subs) == 2


def test_a_reload_that_takes_the_box_away_ends_with_noresource(office: Office) -> None:
    w = Watcher(office, office.phone("101"))
    assert w.subscribe("650").status == 200
    office.reload("pbx_mailbox", [MAILBOX_HEADER, "650:100:2468::sales"])  # 101 no owner
    assert w.last()[0] == "terminated;reason=noresource"
    assert office.engine.subscriptions.subs == {}


def test_shared_box_lamps_on_every_owner_and_its_own_subscription(office: Office) -> None:
    p100, p101, p102 = office.phone("100"), office.phone("101"), office.phone("102")
    w = Watcher(office, p101)
    assert w.subscribe("650").status == 200
    assert w.last()[1] == _no("650")
    assert Watcher(office, p102).subscribe("650").status == 403  # not an owner
    _leave(office, p102.call("650"))  # the box's own number
    assert "Message-Account: sip:650@pbx.local" in w.last()[1]
    assert "Voice-Message: 1/0" in w.last()[1]
    # Each owner's unsolicited lamp: its boxes together (100: own 0 + 650's 1).
    assert "Voice-Message: 1/0 (0/0)" in _unsolicited(office, p100)[-1]
    assert "Message-Account: sip:100@pbx.local" in _unsolicited(office, p100)[-1]
    assert "Voice-Message: 1/0 (0/0)" in _unsolicited(office, p101)[-1]
    assert _unsolicited(office, p102) == []


def test_a_subscribe_without_credentials_is_challenged_statelessly(office: Office) -> None:
    """As an INVITE's: no transaction for a scanner's SUBSCRIBE (engine._stateless)."""
    req = message(
        f"""SUBSCRIBE sip:101@{DOMAIN} SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKstateless
From: <sip:101@{DOMAIN}>;tag=s
To: <sip:101@{DOMAIN}>
Call-ID: stateless@test
CSeq: 1 SUBSCRIBE
Max-Forwards: 70
Event: message-summary"""
    )
    source = ("UDP", "127.0.0.1", 5999)
    before = len(office.stack.sent)
    assert office.engine._stateless(req, source)
    (resp,) = office.stack.sent[before:]
    assert isinstance(resp, Response) and resp.status == 407
    assert resp.headers.get("proxy-authenticate")
    assert office.engine.subscriptions.subs == {}
