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

from pbx_core.pbx import features as host
from tests.harness.office import Office, Outgoing, Phone, offices

PLAYED: list[str] = []
QUEUE_HEADER = (
    "number(string) strategy(string) ring_time(int) wrapup(int) max_callers(int) "
    "max_wait(int) failover_type(string,null) failover(string,null) join_empty(string) "
    "announce_every(int) exit_digit(string,null) exit_dest_type(string,null) "
    "exit_dest(string,null)"
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
