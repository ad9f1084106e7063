"""Call queues (features/queue) on the office harness: a caller into a queue waits
with music on hold and is offered to its agents by the strategy; the one who answers
talks to it. Each strategy distributes 30 calls over three agents by its rule; wrap-up,
busy agents, agents who do not answer, abandoned callers, max_wait, the exit digit,
*45 login/logout and the figures in `pbx status`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pbx_core.features.queue.strategy import Figures, choose
from pbx_core.pbx import features as host
from pbx_core.pbx.calls import Call
from pbx_core.pbx.cdr import Cdr
from tests.features.dnd.test_dnd import dial_code
from tests.harness.office import Office, Outgoing, Phone, offices

PLAYED: list[str] = []
QUEUE_HEADER = (
    "number(string) strategy(string) ring_time(int) wrapup(int) max_callers(int) "
    "max_wait(int) failover_type(string,null) failover(string,null) join_empty(string) "
    "announce_every(int) exit_digit(string,null) exit_dest_type(string,null) "
    "exit_dest(string,null) empty_dest_type(string,null) empty_dest(string,null)"
)
MEMBER_HEADER = "queue(string) extension(string) penalty(int) login(int)"


def queue_row(number: str, strategy: str = "ringall", **kw: Any) -> str:
    v: dict[str, Any] = {
        "ring_time": 10,
        "wrapup": 0,
        "max_callers": 5,
        "max_wait": 0,
        "failover_type": "",
        "failover": "",
        "join_empty": "join",
        "announce_every": 0,
        "exit_digit": "",
        "exit_dest_type": "",
        "exit_dest": "",
        "empty_dest_type": "",
        "empty_dest": "",
    }
    v.update(kw)
    return ":".join([number, strategy, *(str(x) for x in v.values())])


MEMBERS = [MEMBER_HEADER, "500:101:0:0", "500:102:0:0", "500:103:0:0"]


def make(tmp: Path, monkeypatch: pytest.MonkeyPatch, *rows: str, members: list[str] = MEMBERS):
    PLAYED.clear()
    original = host.LocalSession.play

    async def play(self: host.LocalSession, *prompts: str, interruptible: bool = False) -> Any:
        PLAYED.extend(prompts)
        return await original(self, *prompts, interruptible=interruptible)

    monkeypatch.setattr(host.LocalSession, "play", play)
    tables = {"pbx_queue": [QUEUE_HEADER, *rows], "pbx_queue_member": members}
    return offices(tmp, tables=tables)


@pytest.fixture
def office(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Office]:
    yield from make(tmp_path, monkeypatch, queue_row("500"))


def with_queue(office: Office, *rows: str) -> None:
    office.reload("pbx_queue", [QUEUE_HEADER, *rows])


def figures(office: Office, queue: str = "500") -> dict[str, Any]:
    return dict(office.engine.features.status()["queue"]["queues"][queue])


def agents(office: Office) -> list[Phone]:
    return [office.phone(n, mode="ring") for n in ("101", "102", "103")]


def answer_next(office: Office, phones: list[Phone], caller: Outgoing) -> str:
    """Let the queue ring an agent; the first ringing one answers; both hang up."""
    office.advance(1.5)
    rung = [p for p in phones if p.ringing()]
    assert rung, "no agent rings"
    rung[0].pick_up()
    office.advance(0.5)
    assert caller.status == 200
    caller.hang_up()
    office.advance(0.5)
    return rung[0].number


def test_the_caller_waits_then_the_agent_who_answers_talks_to_it(office: Office) -> None:
    caller = office.phone("100")
    phones = agents(office)
    out = caller.call("500")
    office.advance(1.5)
    assert out.status == 200  # the PBX answered the caller
    assert [p.number for p in phones if p.ringing()] == ["101", "102", "103"]  # ringall
    phones[1].pick_up()
    office.advance(0.5)
    assert [i.state for p in phones for i in p.incoming] == ["cancelled", "answered", "cancelled"]
    fig = figures(office)
    assert fig["answered"] == 1 and fig["waiting"] == 0 and fig["agents"] == {"102": 1}
    office.advance(30)
    out.hang_up()
    office.advance(0.5)
    fig = figures(office)
    assert fig["avg_talk"] >= 29 and fig["abandoned"] == 0
    assert office.left_behind() == []


def distribute(office: Office, strategy: str, calls: int = 30) -> list[str]:
    with_queue(office, queue_row("500", strategy))
    caller = office.phone("100")
    phones = agents(office)
    got = []
    for _ in range(calls):
        out = caller.call("500")
        office.advance(1.5)
        rung = [p for p in phones if p.ringing()]
        assert len(rung) == 1, (strategy, [p.number for p in rung])
        rung[0].pick_up()
        office.advance(2)
        assert out.status == 200
        out.hang_up()
        office.advance(1)
        got.append(rung[0].number)
    assert figures(office)["answered"] == calls
    assert office.left_behind() == []
    return got


def test_linear_always_offers_the_first_free_agent(office: Office) -> None:
    assert distribute(office, "linear") == ["101"] * 30


def test_rrmemory_goes_round_from_the_last_one(office: Office) -> None:
    assert distribute(office, "rrmemory") == ["101", "102", "103"] * 10


@pytest.mark.parametrize("strategy", ["fewestcalls", "leastrecent"])
def test_fewestcalls_and_leastrecent_follow_their_rule(office: Office, strategy: str) -> None:
    got = distribute(office, strategy)
    counts: Counter[str] = Counter()
    last: dict[str, int] = {}
    for i, agent in enumerate(got):
        if strategy == "fewestcalls":
            fewest = min(counts[a] for a in ("101", "102", "103"))
            assert counts[agent] == fewest, (i, agent, counts)
        else:
            oldest = min(last.get(a, -1) for a in ("101", "102", "103"))
            assert last.get(agent, -1) == oldest, (i, agent, last)
        counts[agent] += 1
        last[agent] = i
    assert sorted(counts.values()) == [10, 10, 10]


def test_random_is_roughly_uniform(office: Office) -> None:
    counts = Counter(distribute(office, "random"))
    assert set(counts) <= {"101", "102", "103"}
    chi2 = sum((counts[a] - 10) ** 2 / 10 for a in ("101", "102", "103"))
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001
    assert len(counts) >= 2


def test_ringall_rings_every_free_agent_each_time(office: Office) -> None:
    caller = office.phone("100")
    phones = agents(office)
    taken: Counter[str] = Counter()
    for i in range(30):
        out = caller.call("500")
        office.advance(1.5)
        assert [p.number for p in phones if p.ringing()] == ["101", "102", "103"]
        phones[i % 3].pick_up()
        office.advance(1)
        assert out.status == 200
        out.hang_up()
        office.advance(1)
        taken[phones[i % 3].number] += 1
    assert figures(office)["agents"] == dict(taken) == {"101": 10, "102": 10, "103": 10}


def rung(*phones: Phone) -> list[str]:
    return [p.number for p in phones if p.ringing()]


def test_an_agent_in_a_call_is_skipped(office: Office) -> None:
    with_queue(office, queue_row("500", "linear"))
    a, b, c = agents(office)
    direct = a.call("102")  # 101 talks to 102
    b.pick_up()
    office.advance(0.5)
    assert direct.status == 200
    out = office.phone("100").call("500")
    office.advance(1.5)
    assert rung(a, b, c) == ["103"]
    c.pick_up()
    office.advance(0.5)
    assert figures(office)["agents"] == {"103": 1}
    out.hang_up()
    direct.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_an_agent_who_does_not_answer_is_skipped_for_the_round(office: Office) -> None:
    with_queue(office, queue_row("500", "linear", ring_time=10))
    a, b, c = agents(office)
    out = office.phone("100").call("500")
    office.advance(1.5)
    assert rung(a, b, c) == ["101"]
    office.advance(9)  # 101 rang out (10 s): 102 next at once, not 101 again
    assert rung(a, b, c) == ["102"]
    office.advance(10)
    assert rung(a, b, c) == ["103"]
    office.advance(10)  # everyone tried: a new round begins with 101 (a second later)
    assert rung(a, b, c) == []
    office.advance(1.5)
    assert rung(a, b, c) == ["101"]
    a.pick_up()
    office.advance(0.5)
    assert out.status == 200 and figures(office)["agents"] == {"101": 1}
    assert figures(office)["avg_wait"] >= 30
    out.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_wrapup_keeps_the_agent_from_the_next_call_until_it_is_over(office: Office) -> None:
    with_queue(office, queue_row("500", "linear", wrapup=20))
    a, b, c = agents(office)
    caller = office.phone("100")
    assert answer_next(office, [a, b, c], caller.call("500")) == "101"
    assert answer_next(office, [a, b, c], caller.call("500")) == "102"  # 101 wraps up
    assert answer_next(office, [a, b, c], caller.call("500")) == "103"
    ended = office.loop.time()  # 101 hung up 5 s ago, 102 2.5 s ago
    out = caller.call("500")
    office.advance(11)
    assert rung(a, b, c) == []  # all three wrap up: the caller waits
    office.advance(ended - 5 + 20 - office.loop.time() - 0.5)
    assert rung(a, b, c) == []
    office.advance(1.5)  # 101's 20 s are over, 102's not
    assert rung(a, b, c) == ["101"]
    a.pick_up()
    office.advance(0.5)
    assert out.status == 200
    out.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_a_caller_who_hangs_up_while_waiting_is_abandoned(office: Office) -> None:
    caller = office.phone("100")  # no agent registered: nobody rings
    out = caller.call("500")
    office.advance(5)
    assert out.status == 200 and figures(office)["waiting"] == 1
    assert figures(office)["longest_wait"] >= 4
    out.hang_up()
    office.advance(1)
    fig = figures(office)
    assert fig["abandoned"] == 1 and fig["waiting"] == 0 and fig["answered"] == 0
    assert fig["service_level"] == 0.0
    a, b, c = agents(office)  # and while an agent rings
    out = caller.call("500")
    office.advance(1.5)
    assert rung(a, b, c) == ["101", "102", "103"]
    out.hang_up()
    office.advance(1)
    assert rung(a, b, c) == [] and figures(office)["abandoned"] == 2
    assert office.left_behind() == []


def test_max_wait_sends_the_caller_to_the_failover(office: Office) -> None:
    with_queue(
        office,
        queue_row("500"),
        queue_row("501", max_wait=30, failover_type="extension", failover="103"),
    )
    operator = office.phone("103", mode="ring")  # no agent of 501: nobody else rings
    out = office.phone("100").call("501")
    office.advance(29)
    assert not operator.incoming
    office.advance(2)
    assert rung(operator) == ["103"]
    operator.pick_up()
    office.advance(0.5)
    assert figures(office, "501")["timed_out"] == 1 and figures(office, "501")["waiting"] == 0
    out.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_max_callers_refuses_with_the_failover_or_busy(office: Office) -> None:
    with_queue(
        office,
        queue_row("500", max_callers=1),
        queue_row("501", max_callers=1, failover_type="hangup", failover=""),
    )
    caller = office.phone("100")  # no agent registered: callers wait
    first = caller.call("500")
    office.advance(1)
    second = caller.call("500")
    office.advance(1)
    assert first.status == 200 and second.status == 486  # full, no failover: busy
    third = caller.call("501")
    office.advance(1)
    fourth = caller.call("501")
    office.advance(1)
    assert third.status == 200 and fourth.status == 603  # full: its failover (hangup)
    assert figures(office)["refused"] == 1 and figures(office, "501")["refused"] == 1
    assert figures(office)["waiting"] == 1
    for out in (first, third):
        out.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_the_exit_digit_leaves_for_its_destination(office: Office) -> None:
    with_queue(
        office,
        queue_row("500"),
        queue_row("501", exit_digit="0", exit_dest_type="extension", exit_dest="103"),
    )
    operator = office.phone("103", mode="ring")
    out = office.phone("100").call("501")
    office.advance(3)
    out.keys("5")  # not the exit digit
    office.advance(2)
    assert not operator.incoming
    out.keys("0")
    office.advance(2)
    assert rung(operator) == ["103"]
    operator.pick_up()
    office.advance(0.5)
    assert figures(office, "501")["exited"] == 1 and figures(office, "501")["abandoned"] == 0
    out.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_position_and_estimated_wait_are_announced(office: Office) -> None:
    with_queue(office, queue_row("500", "linear", announce_every=15))
    a, b, c = agents(office)
    caller = office.phone("100")
    for p in (a, b, c):  # everyone busy: 100 waits
        p.mode = "busy"
    first = caller.call("500")
    office.advance(1)
    second = office.phone("101").call("500")
    office.advance(16)
    assert PLAYED[:2] == ["queue-position", "number-1"]
    assert PLAYED[2:4] == ["queue-position", "number-2"]
    assert "queue-wait" not in PLAYED  # no answered call yet: no estimate
    first.hang_up()
    second.hang_up()
    office.advance(1)
    assert office.left_behind() == []


LOGIN_MEMBERS = [MEMBER_HEADER, "500:101:0:1", "501:101:0:1", "500:102:0:0"]


@pytest.fixture
def logins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Office]:
    yield from make(
        tmp_path,
        monkeypatch,
        queue_row("500", "linear"),
        queue_row("501", join_empty="refuse", empty_dest_type="hangup"),
        members=LOGIN_MEMBERS,
    )


def logged_in(office: Office) -> dict[str, list[str]]:
    return {q: figures(office, q)["logged_in"] for q in ("500", "501")}


def test_star45_logs_an_agent_in_and_out_of_its_queues(logins: Office) -> None:
    office = logins
    agent = office.phone("101")
    assert logged_in(office) == {"500": ["102"], "501": []}
    dial_code(agent, "*45")
    assert PLAYED[-1] == "queue-agent-login"
    assert logged_in(office) == {"500": ["101", "102"], "501": ["101"]}
    dial_code(agent, "*45")  # logged in somewhere: out of all
    assert PLAYED[-1] == "queue-agent-logout"
    assert logged_in(office) == {"500": ["102"], "501": []}
    dial_code(agent, "*45501")  # that queue only
    assert logged_in(office) == {"500": ["102"], "501": ["101"]}
    dial_code(agent, "*45500")
    assert logged_in(office) == {"500": ["101", "102"], "501": ["101"]}
    dial_code(agent, "*45501")
    assert PLAYED[-1] == "queue-agent-logout"
    assert logged_in(office) == {"500": ["101", "102"], "501": []}
    dial_code(office.phone("103"), "*45500")  # not an agent of 500
    assert PLAYED[-1] == "queue-not-member"
    dial_code(office.phone("102"), "*45")  # a static member: no login to toggle
    assert PLAYED[-1] == "queue-not-member"
    assert logged_in(office) == {"500": ["101", "102"], "501": []}
    office.restart()  # a login survives a restart (the feature's state)
    assert logged_in(office) == {"500": ["101", "102"], "501": []}


def test_only_logged_in_agents_are_offered_calls(logins: Office) -> None:
    office = logins
    dynamic = office.phone("101", mode="ring")
    static = office.phone("102", mode="ring")
    static.mode = "busy"
    refused = office.phone("100").call("501")  # nobody logged in to 501: refused
    office.advance(1)
    assert refused.status == 603 and figures(office, "501")["refused"] == 1
    out = office.phone("100").call("500")
    office.advance(5)
    assert not dynamic.incoming  # 101 is not logged in
    out.hang_up()
    office.advance(1)
    dynamic.mode = "answer"
    dial_code(dynamic, "*45500")
    dynamic.mode = "ring"
    out = office.phone("100").call("500")
    office.advance(1.5)
    assert rung(dynamic) == ["101"]
    dynamic.pick_up()
    office.advance(0.5)
    assert figures(office)["agents"] == {"101": 1} and figures(office)["abandoned"] == 1
    out.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_the_cdr_records_the_queue_the_wait_and_the_agent(office: Office) -> None:
    ended: list[Call] = []
    before = office.engine.calls.on_end

    def on_end(call: Call) -> None:
        ended.append(call)
        if before is not None:
            before(call)

    office.engine.calls.on_end = on_end
    caller = office.phone("100")
    out = caller.call("500")  # abandoned: nobody to answer
    office.advance(4)
    out.hang_up()
    office.advance(1)
    _a, b, _c = agents(office)
    out = caller.call("500")
    office.advance(6.5)
    b.pick_up()
    office.advance(10)
    out.hang_up()
    office.advance(1)
    cdrs = [Cdr.from_call(call) for call in ended]
    assert [c.notes for c in cdrs] == [("queue=500",), ("queue=500", "wait=6 agent=102")]
    assert cdrs[0].callee == "500" and cdrs[0].billsec == 4  # the PBX answered it
    assert cdrs[1].callee == "102@pbx.local" and cdrs[1].disposition == "ANSWERED"


def test_the_estimated_wait_follows_the_answered_calls(office: Office) -> None:
    with_queue(office, queue_row("500", "linear", announce_every=15))
    a, b, c = agents(office)
    caller = office.phone("100")
    out = caller.call("500")
    office.advance(1.5)
    office.advance(100)  # 101 answers after 100 s: the average wait is 100 s
    office.advance(0)
    a.pick_up()
    office.advance(0.5)
    out.hang_up()
    office.advance(1)
    for p in (a, b, c):
        p.mode = "busy"
    PLAYED.clear()
    out = caller.call("500")
    office.advance(16)
    # position 1 x 100 s / 3 agents logged in = 33 s: less than a minute
    assert PLAYED[:4] == ["queue-position", "number-1", "queue-wait", "queue-less-minute"]
    second = office.phone("102").call("500")
    PLAYED.clear()
    office.advance(15)
    # the second caller: 2 x 100 / 3 = 67 s, said as 2 minutes (rounded up)
    assert ["queue-position", "number-2", "queue-wait", "number-2", "queue-minutes"] in [
        PLAYED[i : i + 5] for i in range(len(PLAYED))
    ]
    out.hang_up()
    second.hang_up()
    office.advance(1)
    assert office.left_behind() == []


def test_lower_penalty_agents_are_offered_first() -> None:
    members = [("101", 1), ("102", 0), ("103", 0)]
    figs: dict[str, Figures] = {}
    assert choose("ringall", members, ["101", "102", "103"], figs, None) == ("102", "103")
    assert choose("linear", members, ["101", "102", "103"], figs, None) == ("102",)
    assert choose("linear", members, ["101", "103"], figs, None) == ("103",)
    assert choose("rrmemory", members, ["101", "102", "103"], figs, "102") == ("103",)
    assert choose("rrmemory", members, ["101", "102", "103"], figs, "103") == ("102",)
    assert choose("fewestcalls", members, ["101"], figs, None) == ("101",)  # only one free
    assert choose("random", members, [], figs, None) == ()


def test_cdr_notes_are_bounded_and_only_for_calls_not_ended(office: Office) -> None:
    ctx = office.engine.features._contexts["queue"]
    out = office.phone("100").call("500")
    office.advance(1)
    call = out.pbx_call
    assert call is not None
    assert call.notes == ["queue=500"]
    assert [ctx.cdr_note(call.id, "x" * 300) for _ in range(8)] == [True] * 7 + [False]
    assert len(call.notes) == 8 and len(call.notes[1]) == 128
    assert not ctx.cdr_note("no-such-call", "queue=1")
    out.hang_up()
    office.advance(1)
    assert not ctx.cdr_note(call.id, "late")
    assert office.left_behind() == []


@pytest.mark.parametrize("strategy", ["fewestcalls", "leastrecent"])
def test_an_agent_who_logs_in_late_catches_up_only_with_fewestcalls(
    office: Office, strategy: str
) -> None:
    with_queue(office, queue_row("500", strategy))
    late = office.phone("101", mode="ring", register=False)
    early = [office.phone(n, mode="ring") for n in ("102", "103")]
    caller = office.phone("100")
    got = [answer_next(office, early, caller.call("500")) for _ in range(10)]
    assert sorted(got) == ["102"] * 5 + ["103"] * 5
    late.register()
    got = [answer_next(office, [late, *early], caller.call("500")) for _ in range(9)]
    if strategy == "fewestcalls":  # 101 has 0 calls: it takes calls until it has 5
        assert got == ["101"] * 6 + ["102", "103", "101"]  # then ties: the table's order
    else:  # 101 never had one: first; then whoever's last call ended longest ago
        assert got[0] == "101" and got[1:4] != ["101"] * 3
        assert got == ["101", got[1], got[2], "101", got[1], got[2], "101", got[1], got[2]]
    assert office.left_behind() == []
