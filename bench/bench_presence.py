"""Busy lamp load (issue 17): 200 phones x 30 keys = 6,000 `dialog` subscriptions on
the notifier (pbx/subscriptions.py) and the lamps (pbx/presence.py), in process, on a
stack stub that sends nothing (the SIP stack's own cost is bench_calls.py's):

- the memory the subscriptions add (tracemalloc: Python objects, not RSS);
- the CPU of refreshing them all (one in-dialog SUBSCRIBE each: what an hour of phones
  refreshing costs);
- one change reaching 200 watchers: a lamp round (every watched resource's state
  compared, the changed one rendered once, a NOTIFY built for each of its watchers),
  with the view of the calls stubbed (one extension ringing).

    python bench/bench_presence.py [--phones 200] [--keys 30] [--watchers 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pbx_core.features.api import Lamp  # after the sys.path line
from pbx_core.pbx.presence import Lamps, Line
from pbx_core.pbx.subscriptions import Subscriptions
from pbx_core.sip.headers import Via
from pbx_core.sip.message import Request, parse_message


class Stack:
    """What the notifier needs of the SIP stack: NOTIFYs are built and counted."""

    user_agent = "bench"

    def __init__(self) -> None:
        self.notifies = 0
        self.keys = itertools.count()

    def respond(self, key: object, resp: object) -> None:
        pass

    def via_for(self, dest: object) -> Via:
        return Via("UDP", "192.0.2.1", 5060, (("branch", f"z9hG4bK{next(self.keys)}"),))

    def request(self, req: Request, dest: object, cb: Any) -> int:
        bytes(req)  # serialized, as the real stack does
        self.notifies += 1
        cb(req.reply(200))
        return next(self.keys)


def subscribe(n: int, user: str, resource: str, to_tag: str = "", cseq: int = 1) -> Request:
    tag = f";tag={to_tag}" if to_tag else ""
    text = (
        f"SUBSCRIBE sip:{resource}@pbx.local SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.{n // 250}.{n % 250}:5060;branch=z9hG4bKb{n}x{cseq}\r\n"
        f"From: <sip:{user}@pbx.local>;tag=w{n}\r\n"
        f"To: <sip:{resource}@pbx.local>{tag}\r\n"
        f"Call-ID: blf{n}@bench\r\nCSeq: {cseq} SUBSCRIBE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{user}@10.0.{n // 250}.{n % 250}:5060>\r\n"
        f"Event: dialog\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    req = parse_message(text.encode())
    if not isinstance(req, Request):
        raise TypeError("not a request")
    return req


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--phones", type=int, default=200)
    ap.add_argument("--keys", type=int, default=30)
    ap.add_argument("--watchers", type=int, default=200)
    args = ap.parse_args()
    loop = asyncio.new_event_loop()
    stack = Stack()
    subs = Subscriptions(stack, loop, lambda _d: "<sip:pbx@192.0.2.1>", lambda _h: True)  # type: ignore[arg-type]
    subs.max_total = args.phones * args.keys + args.watchers
    subs.max_per_user = args.keys + 1
    ringing: dict[str, list[Line]] = {}
    calls = type("Calls", (), {"calls": {}})()
    lamps = Lamps(
        subs,
        calls,  # type: ignore[arg-type]
        extension_of=lambda _label: None,
        is_extension=lambda number: number.isdigit() and len(number) == 3,
        registered=lambda _n: True,
        dnd=lambda _n: False,
        feature_lamp=lambda _r: Lamp(False),
        domain=lambda: "pbx.local",
    )
    lamps.lines = lambda: ringing  # type: ignore[method-assign]  # the stubbed call view
    subs.add_package(lamps.dialog)
    phones = [str(100 + i) for i in range(args.phones)]
    src = ("UDP", "10.0.0.1", 5060)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    n = 0
    started = time.process_time()
    for i, user in enumerate(phones):
        # Each phone watches 101 (the receptionist everybody watches) among its keys.
        keys = ["101", *(phones[(i + k) % len(phones)] for k in range(1, args.keys))]
        for resource in keys[: args.keys]:
            n += 1
            subs.subscribe(subscribe(n, user, resource), src, ("k", n), user)  # type: ignore[arg-type]
    made = time.process_time() - started
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    total = len(subs.subs)
    print(f"subscriptions: {total} ({made:.2f} s CPU to create, first NOTIFY included)")
    print(
        f"memory they add (Python objects): {(after - before) / 1e6:.1f} MB, "
        f"{(after - before) / total / 1e3:.2f} kB each"
    )
    started = time.process_time()
    for i, sub in enumerate(list(subs.subs.values())):
        req = subscribe(i, sub.username, sub.resource, sub.dialog.local_tag, cseq=2)
        req.headers.set("Call-ID", sub.dialog.call_id)
        req.headers.set("From", f"<sip:{sub.username}@pbx.local>;tag={sub.dialog.remote_tag}")
        if not subs.in_dialog(req, src, ("r", i)):  # type: ignore[arg-type]
            raise RuntimeError("a refresh found no subscription")
    refresh = time.process_time() - started
    print(f"refreshing all: {refresh:.2f} s CPU (once an hour: {refresh / 36:.2f} % of a core)")
    watching = len(subs.watchers.get(("dialog", "101"), {}))
    ringing["101"] = [Line("c1-0", "early", "recipient", "cid@x", "t1", "t2", "100", "Anna")]
    sent = stack.notifies
    started = time.perf_counter()
    lamps._flush()  # one round, as the poke's timer runs it
    took = time.perf_counter() - started
    print(
        f"one change to {watching} watchers: {stack.notifies - sent} NOTIFYs in "
        f"{took * 1e3:.1f} ms (the round compares {len(subs.watchers)} resources)"
    )
    lamps.close()
    subs.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
