"""The call features with real phones (issues 14 and 15's "done means"): baresip
phones, each sending its own sine, registered to one `pbx run` on configs/features;
every test checks what the phones heard (tests/interop/baresip_phones.py), not only
the SIP states.

- park: 100 calls 101, 101 transfers it to 70 (REFER, or the in-call keys ##70#):
  100 hears the hold music until 102 dials 71, then 100 and 102 hear each other;
  nobody dials 71: after park_timeout 101's phone rings again and 100 and 101 talk;
- pickup: 100 calls 101, which rings; 102 (101's pickup group) dials *8, or 103
  (no group) dials **101: the picker and 100 hear each other; 103 picks up a ring
  group's call (600: 101 and 102 ring) with **102;
- intercom: 100 dials *80101: 101's INVITE carries the auto-answer headers, 101
  answers by itself (baresip 1.0 does not read them: it is set to answer), both hear
  each other;
- paging: 100 dials 650 (101, 102, 103): each member hears the page beep, then 100;
  100 hears none of them (a page is one-way); on 651 (duplex) 100 hears them;
- barge: 100 talks to 101, 102 (allowed) dials *224101: each of the three hears the
  other two; 102 hangs up and 100 and 101 still hear each other; 103 (no pbx_barge
  row) is refused 403; 102 listening (*222) is heard by nobody, whispering (*223) by
  101 only;
- voicemail: 100 calls 103, busy (its only binding answers 486) or not registered,
  and leaves a message (its tone); 103's binding gets `Messages-Waiting: yes` (at
  once, or when it registers), 103's phone dials *97, presses 1, hears the tone,
  presses 7: `Messages-Waiting: no`.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.baresip_phones import (
    Phone,
    heard_windows,
    seconds_heard,
    wait_bindings,
)
from tests.interop.features_env import PROVIDER_IP, write_config
from tests.interop.sipp_agents import free_port, register

pytestmark = [pytest.mark.interop, pytest.mark.tools("baresip", "sipp")]

# Each extension's phone sends its own frequency: none a PBX tone, beep or hold note,
# none a sum or difference of two others (a mix's intermodulation is not a talker).
HZ = {"100": 1020.0, "101": 1330.0, "102": 1770.0, "103": 2290.0}
ALL = list(HZ.values())
HEARD = 1.0  # seconds of a talker's tone that count as hearing them
BEEP_ON = (660.0, 880.0)  # the page's join beep (media/bridge.py)
MUSIC = (261.63, 293.66, 329.63, 349.23, 392.00, 523.25)  # the built-in hold tune's notes

MakePhone = Callable[..., Phone]


def _others(*want: str) -> list[float]:
    return [hz for ext, hz in HZ.items() if ext not in want]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PbxProcess]:
    tmp = tmp_path_factory.mktemp("audio")
    config = write_config(tmp / "config", free_port(PROVIDER_IP))
    ext = config / "pbx_extension"
    lines = ext.read_text().splitlines()
    lines[0] += " pickup_group(int,null) voicemail(int)"
    extra = {"100": ":0", "101": "1:0", "102": "1:0", "103": ":1"}
    lines[1:] = [f"{row}:{extra[row.split(':')[1]]}" for row in lines[1:] if row]
    ext.write_text("\n".join(lines) + "\n")
    (config / "pbx_barge").write_text(
        "extension(string) modes(string) targets(string)\n102:listen,whisper,barge:*\n"
    )
    (config / "pbx_page_group").write_text(
        "name(string) number(string,null) members(string) duplex(int)\n"
        "all:650:101,102,103:0\ntalk:651:101,102:1\n"
    )
    settings = config / "pbx_settings"
    settings.write_text(settings.read_text() + "park_timeout:10\n")  # the least
    p = start_pbx(tmp, config=config, extra=["--state", str(tmp / "state.mdb")])
    try:
        yield p
    finally:
        stop_pbx(p)
        assert "Traceback" not in p.log(), p.log()


@pytest.fixture
def phone(pbx: PbxProcess, tmp_path: Path) -> Iterator[MakePhone]:
    """Start an extension's phone (registered unless register=False); every phone
    is stopped after the test and its binding gone before the next test starts."""
    started: list[Phone] = []

    def make(user: str, answer: str = "auto", register: bool = True, trace: bool = False) -> Phone:
        workdir = tmp_path / f"{user}-{len(started)}"
        agent = Phone(workdir, user, HZ[user], pbx, answer=answer, register=register, trace=trace)
        started.append(agent)
        agent.start()
        if agent.register:
            wait_bindings(pbx, user, True)
        return agent

    try:
        yield make
    finally:
        for agent in started:
            agent.stop()
        for agent in started:
            if agent.register:
                wait_bindings(pbx, agent.user, False)


def _talk(*phones: Phone, seconds: float = 2.0) -> None:
    """Let the phones talk, then check each is still in its call."""
    time.sleep(seconds)
    for p in phones:
        assert p.proc is not None and p.proc.poll() is None, p.log()


def _hangup(caller: Phone, *others: Phone) -> None:
    caller.hangup()
    caller.wait_event("CALL_CLOSED", timeout=10)
    for p in others:
        p.wait_event("CALL_CLOSED", timeout=10)


def _heard(agent: Phone, *talkers: str) -> float:
    """How long `agent` heard every one of `talkers` at once."""
    return seconds_heard(agent.heard(), [HZ[t] for t in talkers], _others(*talkers))


@pytest.mark.parametrize("how", ["refer", "keys"])
def test_park_and_retrieve(phone: MakePhone, how: str) -> None:
    a, b, c = phone("100"), phone("101"), phone("102")
    a.call("101")
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    b.wait_event("CALL_ESTABLISHED", timeout=10)
    _talk(a, b, seconds=1.5)
    if how == "refer":
        answer = b.command("transfer", "sip:70@pbx.local")  # blind: REFER to 70
        assert answer.get("ok"), answer
    else:
        b.send_dtmf("##")  # in-call keys (RFC 4733): blind transfer ...
        time.sleep(0.8)
        b.send_dtmf("70#")  # ... to 70
    b.wait_event("CALL_CLOSED", timeout=10)  # the PBX released the parker
    time.sleep(1.5)  # parked on 71: music on hold
    c.call("71")
    c.wait_event("CALL_ESTABLISHED", timeout=10)
    _talk(a, c)
    _hangup(a, c)
    assert _heard(c, "100") >= HEARD, "102 did not hear the parked caller"
    samples = a.heard()
    talked = heard_windows(samples, [HZ["101"]], _others("101"))
    retrieved = heard_windows(samples, [HZ["102"]], _others("102"))
    assert len(talked) * 0.1 >= HEARD, "100 did not hear 101 before the park"
    assert len(retrieved) * 0.1 >= HEARD, "100 did not hear 102 after the retrieve"
    music = sorted({t for note in MUSIC for t in heard_windows(samples, [note], ALL)})
    parked = [t for t in music if talked[-1] < t < retrieved[0]]
    assert len(parked) >= 5, f"100 heard no music on hold while parked: {music}"


def test_a_parked_call_nobody_takes_rings_the_parker_back(phone: MakePhone) -> None:
    """park_timeout (10 s here): the parker's phone rings again, answers and hears
    the parked caller."""
    a, b = phone("100"), phone("101")
    a.call("101")
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    b.wait_event("CALL_ESTABLISHED", timeout=10)
    assert b.command("transfer", "sip:70@pbx.local").get("ok")
    b.wait_event("CALL_CLOSED", timeout=10)
    b.wait_event("CALL_ESTABLISHED", timeout=20)  # rung 10 s later, answered
    _talk(a, b)
    _hangup(a, b)
    assert _heard(b, "100") >= HEARD, "101 did not hear the caller it parked"
    samples = a.heard()
    back = heard_windows(samples, [HZ["101"]], _others("101"))
    music = sorted({t for note in MUSIC for t in heard_windows(samples, [note], ALL)})
    assert len(music) >= 50, "100 heard no hold music while parked"
    assert len([t for t in back if t > music[-1]]) * 0.1 >= HEARD, "100 did not hear 101 back"


@pytest.mark.parametrize(("picker", "code"), [("102", "*8"), ("103", "**101")])
def test_pickup(phone: MakePhone, picker: str, code: str) -> None:
    a = phone("100")
    b = phone("101", answer="manual")  # rings and rings (5 s ring timeout)
    c = phone(picker, register=False)
    a.call("101")
    b.wait_event("CALL_INCOMING", timeout=10)
    c.call(code)
    c.wait_event("CALL_ESTABLISHED", timeout=10)
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    b.wait_event("CALL_CLOSED", timeout=10)  # its ringing was cancelled
    _talk(a, c)
    _hangup(a, c)
    assert _heard(a, picker) >= HEARD, f"100 did not hear {picker}"
    assert _heard(c, "100") >= HEARD, f"{picker} did not hear 100"


def test_pickup_of_a_ring_group_call(phone: MakePhone) -> None:
    """100 calls the ring group 600 (101 and 102 ring); 103 dials **102: it talks to
    100 and both members stop ringing."""
    a = phone("100")
    members = [phone(ext, answer="manual") for ext in ("101", "102")]
    c = phone("103", register=False)
    a.call("600")
    for m in members:
        m.wait_event("CALL_INCOMING", timeout=10)
    c.call("**102")
    c.wait_event("CALL_ESTABLISHED", timeout=10)
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    for m in members:
        m.wait_event("CALL_CLOSED", timeout=10)
    _talk(a, c)
    _hangup(a, c)
    assert _heard(a, "103") >= HEARD, "100 did not hear 103"
    assert _heard(c, "100") >= HEARD, "103 did not hear 100"


def _auto_answer_headers(agent: Phone) -> None:
    invites = agent.received_invites()
    assert invites, agent.log()
    text = invites[0]
    assert re.search(r"Call-Info:.*answer-after=0", text), text
    assert re.search(r"Alert-Info:.*info=alert-autoanswer", text), text


def test_intercom_auto_answer(phone: MakePhone) -> None:
    a, b = phone("100"), phone("101", trace=True)
    a.call("*80101")
    b.wait_event("CALL_ESTABLISHED", timeout=10)
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    _talk(a, b)
    _hangup(a, b)
    _auto_answer_headers(b)
    assert _heard(b, "100") >= HEARD, "101 did not hear the intercom caller"
    assert _heard(a, "101") >= HEARD, "two-way intercom: 100 did not hear 101"


def test_page_group(phone: MakePhone) -> None:
    a = phone("100")
    members = [phone(ext, trace=True) for ext in ("101", "102", "103")]
    a.call("650")
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    for m in members:
        m.wait_event("CALL_ESTABLISHED", timeout=15)
    _talk(a, *members)
    _hangup(a, *members)
    for m in members:
        _auto_answer_headers(m)
        samples = m.heard()
        # The rising beep (660 then 880 Hz, 90 ms each) as the member joins: over
        # the caller's tone, at the start of what it hears, and short.
        beeps = [
            heard_windows(samples, [hz], _others("100"), window=400, step=80)  # 50 ms
            for hz in BEEP_ON
        ]
        assert beeps[0] and beeps[1], f"{m.user} heard no page beep"
        assert beeps[0][0] < beeps[1][0] < 0.5, f"{m.user}: beep {beeps}"
        assert beeps[0][-1] < 0.5 and beeps[1][-1] < 0.5, f"{m.user}: beep {beeps}"
        page = heard_windows(samples, [HZ["100"]], _others("100"))
        assert len(page) * 0.1 >= HEARD, f"{m.user} did not hear the page"
        assert page[-1] > beeps[1][-1] + HEARD, f"{m.user}: the page ended with the beep"
    # One-way: nobody hears the members (100 hears no member's tone at all).
    for ext in ("101", "102", "103"):
        assert _heard(a, ext) == 0.0, f"100 heard {ext} on a one-way page"


def test_duplex_page_group(phone: MakePhone) -> None:
    """A talk-back page (651: 101, 102, duplex): the members hear 100 and 100 hears
    them."""
    a = phone("100")
    members = [phone(ext) for ext in ("101", "102")]
    a.call("651")
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    for m in members:
        m.wait_event("CALL_ESTABLISHED", timeout=15)
    _talk(a, *members)
    _hangup(a, *members)
    for m in members:
        assert seconds_heard(m.heard(), [HZ["100"]], [HZ["103"]]) >= HEARD, m.user
    assert _heard(a, "101", "102") >= HEARD, "100 did not hear the members"


def test_barge_in_three_way(phone: MakePhone) -> None:
    a, b = phone("100"), phone("101")
    c = phone("102", register=False)
    d = phone("103", register=False)
    a.call("101")
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    b.wait_event("CALL_ESTABLISHED", timeout=10)
    d.call("*224101")  # no pbx_barge row: refused
    closed = d.wait_event("CALL_CLOSED", timeout=10)
    assert "403" in str(closed.get("param", "")), closed
    c.call("*224101")
    c.wait_event("CALL_ESTABLISHED", timeout=10)
    _talk(a, b, c, seconds=2.5)
    _hangup(c)  # the third phone leaves: 100 and 101 talk on
    _talk(a, b, seconds=1.5)
    _hangup(a, b)
    assert _heard(c, "100", "101") >= HEARD, "102 did not hear 100 and 101 together"
    for agent, other in ((a, "101"), (b, "100")):
        samples = agent.heard()
        three = heard_windows(samples, [HZ[other], HZ["102"]], _others(other, "102"))
        two = heard_windows(samples, [HZ[other]], _others(other))
        assert len(three) * 0.1 >= HEARD, f"{agent.user} did not hear {other} and 102 together"
        after = [t for t in two if t > three[-1]]
        assert len(after) * 0.1 >= HEARD, f"{agent.user} lost {other} when 102 left"


@pytest.mark.parametrize(("code", "heard_by"), [("*222", ()), ("*223", ("101",))])
def test_listen_and_whisper(phone: MakePhone, code: str, heard_by: tuple[str, ...]) -> None:
    """102 listens to (*222) or whispers into (*223) 101's call with 100: it hears
    both; only 101 hears a whisper, and nobody hears a listener."""
    a, b = phone("100"), phone("101")
    c = phone("102", register=False)
    a.call("101")
    a.wait_event("CALL_ESTABLISHED", timeout=10)
    b.wait_event("CALL_ESTABLISHED", timeout=10)
    c.call(f"{code}101")
    c.wait_event("CALL_ESTABLISHED", timeout=10)
    _talk(a, b, c, seconds=2.5)
    _hangup(a, b, c)
    assert _heard(c, "100", "101") >= HEARD, "102 did not hear 100 and 101 together"
    for agent, other in ((a, "101"), (b, "100")):
        assert _heard(agent, other) + _heard(agent, other, "102") >= 2 * HEARD, (
            f"{agent.user} did not hear {other} throughout"
        )
        c_heard = seconds_heard(agent.heard(), [HZ["102"]], _others("102", other))
        c_heard += _heard(agent, other, "102")
        if agent.user in heard_by:
            assert c_heard >= HEARD, f"{agent.user} did not hear the whisper"
        else:
            assert c_heard == 0.0, f"{agent.user} heard 102 ({code})"


class Lamp:
    """103's message-waiting lamp: a SIP UDP socket registered as 103 that answers,
    from a thread of its own, NOTIFY 200 (keeping the bodies) and INVITE 486 (busy:
    the caller goes to 103's mailbox at once)."""

    def __init__(self, pbx: PbxProcess, tmp: Path) -> None:
        self.pbx, self.tmp = pbx, tmp
        self.port = free_port()
        register((pbx.host, pbx.port), tmp, "103", self.port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.1)
        self.notifies: list[str] = []
        self.invites = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method == "NOTIFY":
                with self._lock:
                    if text not in self.notifies:  # not a retransmission
                        self.notifies.append(text)
                self._reply(text, addr, "200 OK")
            elif method == "INVITE":
                self.invites += 1
                self._reply(text, addr, "486 Busy Here", tag=";tag=lamp")

    def _reply(self, req: str, addr: tuple[str, int], status: str, tag: str = "") -> None:
        head = req.split("\r\n\r\n", 1)[0].split("\r\n")
        names = ("via", "from", "call-id", "cseq")
        keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in names]
        to = next(h for h in head if h.lower().startswith("to:"))
        if tag and ";tag=" not in to:
            to += tag
        lines = [f"SIP/2.0 {status}", *keep, to, "Content-Length: 0", "", ""]
        self.sock.sendto("\r\n".join(lines).encode(), addr)

    def wait_waiting(self, value: str, timeout: float = 10.0) -> str:
        """The first NOTIFY not yet taken whose body says Messages-Waiting: `value`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for i, text in enumerate(self.notifies):
                    if f"Messages-Waiting: {value}" in text:
                        del self.notifies[: i + 1]
                        return text
            time.sleep(0.05)
        raise AssertionError(f"no NOTIFY Messages-Waiting: {value} (got {self.notifies})")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        register((self.pbx.host, self.pbx.port), self.tmp, "103", self.port, expires=0)


@pytest.mark.parametrize("reached", ["busy", "unregistered"])
def test_voicemail_leave_mwi_listen_delete(
    pbx: PbxProcess, phone: MakePhone, tmp_path: Path, reached: str
) -> None:
    """Busy: the lamp is 103's binding, answers 486 and sees the lamp go on. Not
    registered: 103 has no binding when 100 calls; the lamp registers afterwards and
    gets the box's state at once (the `registered` hook)."""
    lamp = Lamp(pbx, tmp_path) if reached == "busy" else None
    try:
        if lamp is not None:
            lamp.wait_waiting("no")  # the registration: an empty box
        a = phone("100")
        a.call("103")
        a.wait_event("CALL_ESTABLISHED", timeout=10)  # voicemail answers
        if lamp is not None:
            assert lamp.invites, "the call did not ring 103's phone"
        time.sleep(0.5)
        a.send_dtmf("1")  # a key skips the greeting: the tone, then the recording
        time.sleep(3.5)  # 100's tone is recorded
        _hangup(a)  # kept at the hang-up
        if lamp is None:
            time.sleep(0.5)  # the message is kept after the BYE
            lamp = Lamp(pbx, tmp_path)
        lit = lamp.wait_waiting("yes")
        assert "Voice-Message: 1/0" in lit, lit
        b = phone("103", register=False)  # the lamp stays 103's only binding
        b.call("*97")
        b.wait_event("CALL_ESTABLISHED", timeout=10)
        b.send_dtmf("1")  # play
        time.sleep(4.0)
        b.send_dtmf("7")  # delete
        off = lamp.wait_waiting("no")
        assert "Voice-Message: 0/0" in off, off
        _hangup(b)
    finally:
        if lamp is not None:
            lamp.close()
    assert _heard(b, "100") >= HEARD, "103 did not hear the message (100's tone)"
