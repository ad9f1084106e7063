"""Where a call goes: the dial plan, destinations, hunting and forwarding.

The dial plan's order, for a number an extension dials (docs/architecture.md):

1. emergency routes (an outbound route of call class `emergency`): always, first;
   then, for a call the extension's phone places, the features' `outgoing` hook
   (a hotline's `Redirect`, a warm line's `Answer`);
2. feature codes (`*72` …), the longest code the number starts with;
3. extensions, then aliases;
4. numbers the tables give a destination (ring groups, feature destinations);
5. outbound routes, with the caller's call class (toll-fraud guard).

A trunk's inbound call goes to its DID's destination. A destination is an extension
(ringing its registered contacts, after the features' `before_ring`), `hangup`, or a
type a feature declares (`group` → the ring group feature's `Hunt`). A `Plan` follows
the call while it rings: when nobody answers, the features' `unanswered` hook may
forward it, else the hunt's next step rings, else its failover destination, else the
caller hears the status. Forwards are routed as if the forwarding extension dialled
the number (its call class applies) and stop after MAX_FORWARDS or at a loop;
failover destinations stop at a cycle (a destination the call has been to) or after
MAX_FAILOVERS. A `Redirect` (a speed dial, a hotline) routes its number through the
dial plan again as the dialling extension (its call class), at most MAX_REDIRECTS
times per call (then 482: a speed dial naming itself). A number starting with a
feature code is the features' even when they decline it: refused (404), never routed
out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pbx_core.features.api import (
    Answer,
    Barge,
    CallInfo,
    Decision,
    Forward,
    Goto,
    Page,
    Pickup,
    Record,
    Redirect,
    Reject,
    Step,
    Why,
)
from pbx_core.features.api import Destination as FeatureDestination
from pbx_core.pbx.call_state import Call, State, Target, name_addr, tag
from pbx_core.pbx.welcome import welcome
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request
from pbx_core.sip.uri import unescape
from pbx_core.store.model import Destination, Did, ExtensionSettings, User
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.media.leg import MediaLeg
    from pbx_core.pbx.engine import Engine

log = logging.getLogger("pbx.routing")

# Asked of a phone that is to answer by itself and open its speaker (intercom):
# Call-Info answer-after (Yealink, Polycom, Grandstream, Cisco SPA) and Alert-Info
# info=alert-autoanswer (Snom, Yealink), both in their RFC 3261 form.
AUTO_ANSWER = (
    ("Call-Info", "<sip:pbx>;answer-after=0"),
    ("Alert-Info", "<http://127.0.0.1/autoanswer>;info=alert-autoanswer;delay=0"),
)
CLASS_RANK = {"internal": 0, "local": 1, "national": 2, "international": 3}
MAX_FORWARDS = 5  # forwards one call may take (Asterisk's default max forwards is 5)
MAX_STEPS = 64  # ring steps of one hunt (a group has at most 64 members)
MAX_STEP_NUMBERS = 8  # numbers of one hunt step (a follow-me list)
MAX_FAILOVERS = 8  # failover destinations one call may take (groups failing over in a chain)
MAX_GOTOS = 8  # Goto decisions one call may follow (time conditions chained: holiday, hours)
FORWARD_RING = 120.0  # seconds a forward to a trunk rings (the provider times out)
MAX_REDIRECTS = 4  # Redirects one call may take (*0NN -> *0MM -> ... is a loop)
MAX_NUMBER = 32  # characters of a number a Redirect names


@dataclass
class Plan:
    """How one call is being routed: what to do when the current step goes
    unanswered."""

    req: Request
    source: Address
    key: AnyServerKey
    info: CallInfo
    from_value: str  # the From the callees see (the original caller's)
    domain: str
    call: Call | None = None
    extension: str | None = None  # the one extension ringing now (its unanswered hook)
    steps: list[Step] = field(default_factory=list)
    failover: FeatureDestination | None = None
    status: int = 480
    busy: bool = False  # someone was busy: the final status is 486
    forwards: int = 0
    rung: set[str] = field(default_factory=set)  # extensions rung so far (loops)
    diversion: list[str] = field(default_factory=list)  # Diversion header values
    visited: set[tuple[str, str | None]] = field(default_factory=set)  # feature destinations
    failovers: int = 0
    gotos: int = 0
    trunk: str | None = None  # inbound over this trunk
    did: str | None = None
    dialler: User | None = None  # the extension (or application class) dialling
    redirects: int = 0


class Router:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ------------------------------------------------------------------ entry points
    def from_extension(
        self, req: Request, source: Address, key: AnyServerKey, caller: User, number: str
    ) -> None:
        eng = self.engine
        info = CallInfo(
            caller=caller.aor,
            caller_number=caller.username,
            caller_class=caller.settings.call_class,
            number=number,
            from_extension=True,
            source=source[1],
        )
        display = caller.settings.display_name or caller.username
        plan = Plan(
            req,
            source,
            key,
            info,
            name_addr(display, f"sip:{caller.username}@{caller.domain}"),
            eng.domain,
        )
        self._dial(plan, caller, number, outgoing=True)

    def _dial(
        self, plan: Plan, caller: User, number: str, codes: bool = True, outgoing: bool = False
    ) -> None:
        """The dial plan (module docstring) for `number` as extension `caller` dials it
        (`codes`: feature codes too; an application's bridge with a class of its own
        has none; `outgoing`: a call its phone places, asked of the features'
        `outgoing` hook)."""
        eng = self.engine
        snap = eng.snap
        info = plan.info
        plan.dialler = caller
        routed = snap.route(number) if number else None
        if routed is not None and routed[0].call_class == "emergency":
            self._outbound(plan, caller, number)  # 1. emergency first, always
            return
        if outgoing and caller.domain == eng.domain:
            decision = eng.features.outgoing(info, caller.username)  # a hotline
            if decision is not None:
                self._apply(plan, decision)
                return
        if not number:
            self._fail(plan, 484, "no number dialled")
            return
        if caller.domain == eng.domain and codes:
            decision = eng.features.dial(info, caller.aor, caller.username)  # 2. codes
            if decision is not None:
                self._apply(plan, decision)
                return
        elif snap.user(number, caller.domain) is not None:
            # A subscriber of another of our domains reaches the users of its own
            # domain by their names (the numbers of the dial plan are the setting's).
            plan.domain = caller.domain
            self._ring_extension(plan, number)
            return
        if eng.features.is_code(number):
            # A code its feature declined (*431) or failed on, or dialled from another
            # of our domains (the features serve the setting's), is still the
            # features' number: never a catch-all route's way out.
            self._fail(plan, 404, "no such feature code")
            return
        dest = self._internal(number)  # 3. and 4.
        if dest is not None:
            self._destination(plan, dest)
            return
        if caller.domain == eng.domain and codes:  # 4. a feature's own numbers (park)
            decision = eng.features.number(info, caller.aor, caller.username)
            if decision is not None:
                self._apply(plan, decision)
                return
        self._outbound(plan, caller, number)  # 5.

    def from_trunk(
        self, req: Request, source: Address, key: AnyServerKey, trunk: str, number: str
    ) -> None:
        eng = self.engine
        if self.trunk_full(trunk):
            resp = req.reply(503, to_tag=tag())
            resp.headers.add("Warning", f'399 pbx "trunk {trunk[:60]} is at max_channels"')
            eng.stack.respond(key, resp)
            return
        did_number = number or unescape(req.to.uri.user or "")
        did = self._did(did_number, trunk)
        if did is None:
            eng.stack.respond(key, req.reply(404, to_tag=tag()))
            return
        a_from = req.from_
        caller_id = unescape(a_from.uri.user or "") or "anonymous"
        privacy = {p.strip().lower() for p in (req.headers.get("privacy") or "").split(";")}
        info = CallInfo(
            caller=f"{trunk}:{caller_id}",
            caller_number=caller_id,
            caller_class="internal",
            number=did_number,
            from_extension=False,
            anonymous="id" in privacy or caller_id.lower() == "anonymous",
        )
        from_value = name_addr(a_from.display or caller_id, f"sip:{caller_id}@{eng.domain}")
        plan = Plan(req, source, key, info, from_value, eng.domain, trunk=trunk, did=did_number)
        if did.welcome:
            self._answer(plan, Answer(welcome(did.welcome, did.dest), "welcome"))
            return
        self._destination(plan, did.dest)

    def reroute(
        self,
        call: Call,
        number: str | FeatureDestination,
        by: str | None,
        call_class: str | None = None,
    ) -> None:
        """Ring `number` as the new far end of the answered `call` (call_ops.py: a
        transfer, an application's bridge): the dial plan as extension `by` dials it,
        with its call class; with no extension (an application on a trunk's call),
        our own numbers only. With `call_class` (an application with a class of its
        own: DISA), the dial plan without feature codes, with that class, and the
        trunk's own caller ID. A destination (an application's `goto`: an auto
        attendant's key, a DID's welcome) is routed as a table naming it would be,
        whoever the caller. The outcome reaches `call.replacing`."""
        eng = self.engine
        goto = number if isinstance(number, FeatureDestination) else None
        number = (goto.target or goto.type) if goto is not None else str(number)
        old = call.routing if isinstance(call.routing, Plan) else None
        user = eng.snap.user(by, eng.domain) if by else None
        if call_class is not None:
            user = User("", eng.domain, "", settings=ExtensionSettings(call_class=call_class))
        label = call.caller
        shown = label.partition(":")[2] if ":" in label else label.partition("@")[0]
        info = CallInfo(
            caller=label,
            caller_number=shown,
            caller_class=user.settings.call_class if user is not None else "internal",
            number=number,
            from_extension=user is not None,
        )
        if old is not None and old.info.caller == label:
            from_value = old.from_value
        else:
            from_value = name_addr(None, f"sip:{shown or 'anonymous'}@{eng.domain}")
        plan = Plan(
            call.a_req,
            call.a_source,
            call.a_key,
            info,
            from_value,
            eng.domain,
            call=call,
            trunk=call.trunk,
            did=call.did,
        )
        call.routing = plan
        with eng.calls.guard(call, "routing a new far end"):
            if goto is not None:
                self._destination(plan, Destination(goto.type, goto.target))
                return
            if user is not None:
                self._dial(plan, user, number, codes=call_class is None)
                return
            dest = self._internal(number)
            if dest is None:
                self._fail(plan, 403, "only our own numbers from here")
                return
            self._destination(plan, dest)

    def _info(self, call: Call, by: str, number: str) -> CallInfo:
        """What the features are told of an answered `call` that extension `by` acts
        on (a transfer, an in-call code)."""
        label = call.caller
        shown = label.partition(":")[2] if ":" in label else label.partition("@")[0]
        user = self.engine.snap.user(by, self.engine.domain)
        return CallInfo(
            caller=label,
            caller_number=shown,
            caller_class=user.settings.call_class if user is not None else "internal",
            number=number,
            from_extension=user is not None,
        )

    def transfer_refused(self, call: Call, by: str, number: str) -> int | None:
        """The features' word on extension `by` transferring `call` to `number`: the
        status of their `Reject`, None when the transfer may go ahead."""
        decision = self.engine.features.transfer(self._info(call, by, number), by, number)
        return decision.status if isinstance(decision, Reject) else None

    def in_call(self, call: Call, by: str, code: str) -> Decision | None:
        """The features' word on extension `by` pressing in-call `code`."""
        return self.engine.features.in_call(self._info(call, by, call.callee), by, code)

    def run_in_call_app(
        self, call: Call, side: str, leg: MediaLeg, answer: Answer, back: Callable[[], None]
    ) -> None:
        """Run an in-call code's application on `side`'s leg (call_keys.py): its
        `transfer` sends the other party away; its end brings the side back."""
        eng = self.engine
        fork = call.answered
        label = call.caller if side == "a" else (fork.target.label if fork else "")
        extension = self.extension_of(label) or ""

        async def transfer(number: str | FeatureDestination, _klass: str | None) -> int:
            if not isinstance(number, str):
                return 404  # an in-call application transfers to numbers only
            return eng.calls.keys.transfer(call, side, extension, number)

        def consult(number: str) -> tuple[asyncio.Future[int], Callable[[], None]]:
            return eng.calls.ops.consult.start(call, side, extension, number)

        eng.features.run_app(
            call.id,
            answer.app,
            answer.name,
            leg,
            back,
            lambda: not eng.calls.keys.in_app(call, side),
            transfer,
            answer.feature,
            on_exit=back,
            consult=consult,
        )

    def extension_of(self, label: str) -> str | None:
        """The extension number of a call leg's label (an AOR of our domain), None for
        a trunk or a stranger."""
        user, _, domain = label.partition("@")
        if not domain or domain != self.engine.domain:
            return None
        return user if self.engine.snap.user(user, domain) is not None else None

    async def bridge(
        self, call: Call, number: str | FeatureDestination, call_class: str | None = None
    ) -> int:
        """An application's `Session.bridge`: ring `number` for its caller (with the
        caller's call class when it is an extension, or the application's
        `call_class`) and join them; 200 when it was answered, else the final
        status."""
        done: asyncio.Future[int] = self.engine.loop.create_future()

        def finished(status: int) -> None:
            if not done.done():
                done.set_result(status)

        refused = self.engine.calls.ops.start_replacement(call, "bridge", finished)
        if refused is not None:
            log.info("call %s: bridge to %s refused: %s", call.id, number, refused)
            return 500
        self.reroute(call, number, self.extension_of(call.caller), call_class)
        return await done

    def _did(self, number: str, trunk: str) -> Did | None:
        """The DID row of `number` for a call from `trunk`: a row naming another trunk
        does not match (the `*` row is tried instead, if it is for this trunk or any)."""
        snap = self.engine.snap
        did = snap.did(number)
        if did is not None and did.trunk not in (None, trunk):
            did = snap.did("*") if did.number != "*" else None
            if did is not None and did.trunk not in (None, trunk):
                did = None
        return did

    def trunk_full(self, trunk: str) -> bool:
        """Whether `trunk` carries its max_channels calls already (0 = no limit). A call
        counts once whether it came in, went out or both over the trunk."""
        t = self.engine.snap.trunk(trunk)
        if t is None or t.max_channels <= 0:
            return False
        calls = self.engine.calls.calls.values()
        used = sum(1 for c in calls if c.trunk == trunk and c.state is not State.ENDED)
        return used >= t.max_channels

    # ------------------------------------------------------------------ numbers
    def _internal(self, number: str) -> Destination | None:
        """An extension, alias or numbered destination of the tables."""
        snap = self.engine.snap
        dest = snap.number(number)
        if dest is None:
            alias = snap.alias(number, self.engine.domain)
            if alias is not None and alias.aor:
                dest = Destination("extension", alias.aor.partition("@")[0])
        return dest

    def may_dial(self, number: str, by: str) -> bool:
        """Whether extension `by` may call `number`: our own numbers always; an
        outside number only through a route its call class allows (emergency: any)."""
        eng = self.engine
        user = eng.snap.user(by, eng.domain)
        if user is None:
            return False
        if self._internal(number) is not None:
            return True
        routed = eng.snap.route(number)
        if routed is None or routed[0].action == "deny":
            return False
        return self._class_allows(user, routed[0].call_class)

    @staticmethod
    def _class_allows(user: User, call_class: str) -> bool:
        if call_class == "emergency":
            return True
        return CLASS_RANK.get(user.settings.call_class, 0) >= CLASS_RANK.get(call_class, 3)

    # ------------------------------------------------------------------ decisions
    def _apply(self, plan: Plan, decision: Decision) -> None:
        if isinstance(decision, Reject):
            self._fail(plan, decision.status, decision.reason)
        elif isinstance(decision, Answer):
            self._answer(plan, decision)
        elif isinstance(decision, Forward):
            self._forward(plan, decision, 480)
        elif isinstance(decision, Pickup):
            self._pickup(plan, decision)
        elif isinstance(decision, Barge):
            self._barge(plan, decision)
        elif isinstance(decision, Page):
            self._page(plan, decision)
        elif isinstance(decision, Goto):
            self._goto(plan, decision.destination)
        elif isinstance(decision, Redirect):
            self._redirect(plan, decision)
        elif isinstance(decision, Record):  # an in-call code's answer: a feature's bug here
            log.warning("call to %s: a feature answered Record while routing", plan.info.number)
            self._fail(plan, 500, "")
        else:
            plan.steps = list(decision.steps[:MAX_STEPS])
            plan.failover, plan.status = decision.failover, decision.status
            self._next_step(plan)

    def _goto(self, plan: Plan, dest: FeatureDestination) -> None:
        """A feature sent the call to another destination (a time condition's day or
        night one): followed at most MAX_GOTOS times per call, so a loop of them (a
        condition naming itself, two naming each other) ends with 480 and a log line."""
        if plan.gotos >= MAX_GOTOS:
            log.warning(
                "call to %s: more than %d destinations in a row (a loop?) at %s %s",
                plan.info.number,
                MAX_GOTOS,
                dest.type,
                dest.target,
            )
            self._fail(plan, 480, "destinations loop")
            return
        plan.gotos += 1
        self._destination(plan, Destination(dest.type, dest.target))

    def _redirect(self, plan: Plan, redirect: Redirect) -> None:
        """Route `redirect.number` as the dialling extension would dial it (its call
        class; feature codes too, the `outgoing` hook not again); bounded."""
        user, number = plan.dialler, redirect.number
        if user is None or not user.username or not plan.info.from_extension:
            self._fail(plan, 403, "a redirect needs a dialling extension")
            return
        if plan.redirects >= MAX_REDIRECTS:
            log.info("call to %s: redirect to %s stopped (a loop)", plan.info.number, number)
            self._fail(plan, 482, "too many redirects (a loop)")
            return
        if not number or len(number) > MAX_NUMBER:
            self._fail(plan, 484, "not a number")
            return
        plan.redirects += 1
        plan.info = replace(plan.info, number=number)
        self._dial(plan, user, number)

    def _answer(self, plan: Plan, answer: Answer) -> None:
        eng = self.engine
        host = eng.features

        def started(call: Call, leg: MediaLeg) -> None:
            host.run_app(
                call.id,
                answer.app,
                answer.name,
                leg,
                lambda: eng.calls.hangup(call, f"{answer.name} ended"),
                lambda: call.state is State.ENDED,
                lambda number, klass: self.bridge(call, number, klass),
                answer.feature,
            )

        if plan.call is not None:  # after ringing, or a transfer to an application
            plan.call.announce = answer.announce  # for a transferor by keys (call_ops)
            if not eng.calls.ops.answer_app(plan.call, started):
                self._fail(plan, 480, f"{answer.name} cannot take this call")
            return

        call = eng.calls.answer_locally(
            plan.req, plan.key, plan.source, plan.info.caller, plan.info.number, started
        )
        if call is not None:
            call.trunk, call.did = plan.trunk, plan.did

    def _page(self, plan: Plan, page: Page) -> None:
        """Page the members' phones (call_page.py): each registered member that is in
        no call, with the auto-answer headers."""
        eng = self.engine
        if plan.call is not None:
            self._fail(plan, 480, "a page starts a call of its own")
            return
        busy = {label for c in eng.calls.calls.values() for label in _labels(c)}
        targets: list[Target] = []
        for member in page.members[:MAX_STEPS]:
            user = eng.snap.user(member, plan.domain)
            if user is None or not user.settings.enabled or user.aor in busy:
                continue
            for target in self._targets(plan, user):
                target.extra.extend(AUTO_ANSWER)
                targets.append(target)
        call = eng.calls.paging.start(
            plan.req,
            plan.key,
            plan.source,
            plan.info.caller,
            plan.info.number,
            targets,
            page,
        )
        if call is not None:
            call.trunk, call.did = plan.trunk, plan.did

    def _barge(self, plan: Plan, barge: Barge) -> None:
        """The dialling phone joins the answered call `barge.call_id` (call_barge.py)."""
        eng = self.engine
        target = eng.calls.calls.get(barge.call_id)
        if plan.call is not None or target is None:
            self._fail(plan, 480, "nothing to join")
            return
        side = "a" if self.extension_of(target.caller) == barge.extension else "b"
        status = eng.calls.barge.join(
            target, plan.req, plan.key, plan.source, plan.info.caller, barge.mode, side
        )
        if status is not None:
            self._fail(plan, status, "cannot join that call")

    def _pickup(self, plan: Plan, pickup: Pickup) -> None:
        """The dialling extension answers the ringing call `pickup.call_id`."""
        eng = self.engine
        target = eng.calls.calls.get(pickup.call_id)
        if plan.call is not None or target is None:
            self._fail(plan, 481 if target is None else 480, "nothing to pick up")
            return
        status = eng.calls.pickup.take(target, plan.req, plan.key, plan.source, plan.info.caller)
        if status is not None:
            self._fail(plan, status, "pickup failed")

    def _fail(self, plan: Plan, status: int, reason: str) -> None:
        eng = self.engine
        if plan.call is None:
            resp = plan.req.reply(status, to_tag=tag())
            if status in (403, 404, 484, 503):
                resp.headers.add("Warning", f'399 pbx "{reason[:120]}"')
            eng.stack.respond(plan.key, resp)
        elif plan.call.state is not State.ENDED:
            eng.calls.fail_a(plan.call, status, reason)

    # ------------------------------------------------------------------ destinations
    def _destination(self, plan: Plan, dest: Destination) -> None:
        if dest.type == "extension" and dest.target:
            self._ring_extension(plan, dest.target)
            return
        if dest.type == "hangup":
            self._fail(plan, 603, "destination hangup")
            return
        plan.visited.add((dest.type, dest.target))
        fdest = FeatureDestination(dest.type, dest.target)
        decision = self.engine.features.destination(plan.info, fdest)
        if decision is None:
            log.info("destination %s %s not available in this build", dest.type, dest.target)
            self._fail(plan, 480, f"no {dest.type} destination")
            return
        self._apply(plan, decision)

    def _ring_extension(self, plan: Plan, number: str) -> None:
        eng = self.engine
        user = eng.snap.user(number, plan.domain)
        if user is None or not user.settings.enabled:
            self._fail(plan, 404 if user is None else 480, "no such extension")
            return
        plan.extension = number
        plan.rung.add(number)
        decision = eng.features.before_ring(plan.info, number)
        if isinstance(decision, Forward):
            self._forward(plan, decision, 480)
            return
        if isinstance(decision, Reject):
            self._extension_unanswered(plan, number, decision.status, Why.BUSY)
            return
        if decision is not None:
            self._apply(plan, decision)
            return
        targets = self._targets(plan, user)
        if not targets:
            self._extension_unanswered(plan, number, 480, Why.UNAVAILABLE)
            return
        self._ring(plan, targets, float(user.settings.ring_timeout))

    def _targets(self, plan: Plan, user: User) -> list[Target]:
        eng = self.engine
        to_value = name_addr(None, f"sip:{user.username}@{plan.domain}")
        extra = [("Diversion", d) for d in plan.diversion]
        return [
            Target(b.uri, b.dest, user.aor, plan.from_value, to_value, list(extra))
            for b in eng.registrar.lookup(user.aor, eng.loop.time())
        ]

    def _ring(
        self, plan: Plan, targets: list[Target], timeout: float, extensions: bool = True
    ) -> None:
        """Ring `targets`: the call's first step, or its next one. Direct media only
        between extensions: never with a trunk on either side."""
        eng = self.engine
        if plan.call is None:
            direct = extensions and plan.trunk is None
            call = eng.calls.start(
                plan.req,
                plan.key,
                plan.source,
                plan.info.caller,
                plan.info.number,
                targets,
                timeout,
                direct,
                routing=plan,
            )
            call.trunk, call.did = plan.trunk, plan.did
            if call.state is not State.ENDED:
                plan.call = call
            return
        if not eng.calls.ring_more(plan.call, targets, timeout):
            self.unanswered(plan.call, 480, "no reachable contact")

    # ------------------------------------------------------------------ unanswered
    def unanswered(self, call: Call, status: int, why: str) -> bool:
        """CallManager's hook: nobody of the current step answered."""
        plan = call.routing
        if not isinstance(plan, Plan):
            return False
        plan.call = call
        if plan.extension is not None:
            self._extension_unanswered(plan, plan.extension, status)
        else:
            self._step_unanswered(plan, status)
        return True

    def _extension_unanswered(
        self, plan: Plan, number: str, status: int, why: Why | None = None
    ) -> None:
        """Extension `number` was busy (486/600), rang out or is not registered: its
        features may forward the call; else the hunt goes on or the call fails."""
        if why is None:
            why = Why.BUSY if status in (486, 600) else Why.NO_ANSWER
        plan.extension = None
        plan.busy = plan.busy or why is Why.BUSY
        decision = self.engine.features.unanswered(plan.info, number, why)
        if isinstance(decision, Forward):
            self._forward(plan, decision, status)
            return
        if isinstance(decision, Answer | Reject):  # an application (voicemail), a status
            self._apply(plan, decision)
            return
        self._step_unanswered(plan, status)

    def _step_unanswered(self, plan: Plan, status: int) -> None:
        if plan.steps:
            self._next_step(plan)
            return
        if plan.failover is not None:
            failover, plan.failover = plan.failover, None
            again = (failover.type, failover.target) in plan.visited
            if not again and plan.failovers < MAX_FAILOVERS:
                plan.failovers += 1
                self._destination(plan, Destination(failover.type, failover.target))
                return
            log.info(
                "call to %s: failover to %s %s stopped (a cycle or too many)",
                plan.info.number,
                failover.type,
                failover.target,
            )
        final = 486 if plan.busy or status in (486, 600) else status
        self._fail(plan, final, "no answer")

    def _next_step(self, plan: Plan) -> None:
        """Ring the hunt's next step: its members that may ring now (DND, call
        waiting: `before_ring`; a member's own forwards do not apply in a group)."""
        eng = self.engine
        while plan.steps:
            step = plan.steps.pop(0)
            targets: list[Target] = []
            for member in step.members:
                user = eng.snap.user(member, plan.domain)
                if user is None or not user.settings.enabled:
                    continue
                decision = eng.features.before_ring(plan.info, member)
                if isinstance(decision, Reject):
                    plan.busy = plan.busy or decision.status in (486, 600)
                    continue
                if isinstance(decision, Answer):
                    # A feature would answer for the member (a blocked caller's
                    # announcement): in a group it is not rung, and counts as busy.
                    plan.busy = True
                    continue
                found = self._targets(plan, user)
                for target in found:
                    if step.auto_answer:
                        target.extra.extend(AUTO_ANSWER)
                    target.one_way = step.one_way
                targets.extend(found)
            for number in step.numbers[:MAX_STEP_NUMBERS]:
                targets.extend(self._number_targets(plan, number, step.by, step.confirm))
            if targets:
                plan.extension = None
                self._ring(plan, targets, step.timeout)
                return
        self._step_unanswered(plan, plan.status)

    def _number_targets(self, plan: Plan, number: str, by: str, confirm: bool) -> list[Target]:
        """Where a hunt step's `number` rings, as extension `by` would dial it: an
        extension of ours (its phones), else an outbound route its call class allows
        (`confirm` then asks the phone to accept). Nothing when the class or the
        routes forbid it: never a way around the call class."""
        eng = self.engine
        user = eng.snap.user(by, eng.domain)
        if user is None:
            return []
        dest = self._internal(number)
        if dest is not None:
            member = eng.snap.user(dest.target or "", plan.domain)
            ok = dest.type == "extension" and member is not None and member.settings.enabled
            return self._targets(plan, member) if ok and member is not None else []
        routed = eng.snap.route(number)
        if routed is None or routed[0].action == "deny":
            return []
        rule, out_number = routed
        if not self._class_allows(user, rule.call_class) or (
            rule.trunk and self.trunk_full(rule.trunk)
        ):
            log.info("%s's follow-me to %s refused (%s call)", by, number, rule.call_class)
            return []
        target = eng.trunks.target(
            rule.trunk or "", out_number, user, plan.req, presented=plan.info.caller_number
        )
        if target is None:
            return []
        target.extra.append(("Diversion", f"<sip:{by}@{eng.domain}>;reason=follow-me;counter=1"))
        target.confirm = confirm
        return [target]

    # ------------------------------------------------------------------ forwards
    def _forward(self, plan: Plan, fwd: Forward, status: int) -> None:
        """Route `fwd.number` as extension `fwd.by` would dial it, keeping the caller."""
        eng = self.engine
        if plan.forwards >= MAX_FORWARDS or fwd.number in plan.rung:
            log.info("call to %s: forward to %s stopped (loop or too many)", fwd.by, fwd.number)
            self._step_unanswered(plan, status)
            return
        by = eng.snap.user(fwd.by, eng.domain)
        if by is None:
            self._step_unanswered(plan, status)
            return
        plan.forwards += 1
        plan.info = replace(plan.info, diverted_by=(*plan.info.diverted_by, fwd.by))
        counter = plan.forwards
        plan.diversion.append(
            f"<sip:{fwd.by}@{eng.domain}>;reason={fwd.why.value};counter={counter}"
        )
        dest = self._internal(fwd.number)
        if dest is not None:
            if dest.type == "extension" and dest.target == fwd.by:
                self._step_unanswered(plan, status)
                return
            self._destination(plan, dest)
            return
        self._outbound(plan, by, fwd.number, forwarded=True)

    # ------------------------------------------------------------------ outbound
    def _outbound(self, plan: Plan, caller: User, number: str, forwarded: bool = False) -> None:
        eng = self.engine
        routed = eng.snap.route(number)
        if routed is None:
            self._fail(plan, 404, "no route")
            return
        rule, out_number = routed
        if rule.action == "deny":
            self._fail(plan, 403, "number barred")
            return
        if not self._class_allows(caller, rule.call_class):
            log.info("%s may not dial %s (%s call)", caller.aor, number, rule.call_class)
            self._fail(plan, 403, "not allowed to dial this")
            return
        if rule.trunk and self.trunk_full(rule.trunk):
            self._fail(plan, 503, f"trunk {rule.trunk} is at max_channels")
            return
        presented = plan.info.caller_number if forwarded else None
        target = eng.trunks.target(
            rule.trunk or "", out_number, caller, plan.req, presented=presented
        )
        if target is None:
            self._fail(plan, 503, "trunk unavailable")
            return
        target.extra.extend(("Diversion", d) for d in plan.diversion)
        plan.extension = None
        self._ring(plan, [target], FORWARD_RING, extensions=False)
        if plan.call is not None:
            plan.call.trunk = rule.trunk


def _labels(call: Call) -> tuple[str, ...]:
    """Who is in `call`: its caller and the callee it rings or talks to."""
    fork = call.answered
    return (call.caller, fork.target.label) if fork is not None else (call.caller,)
