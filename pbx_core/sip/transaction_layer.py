"""The transaction layer: matches messages to transactions (RFC 3261 §17.1.3, §17.2.3)
and runs the machines of transaction.py. Sans-IO: time comes in as `now`.

How the transport and the TU drive it::

    events = layer.receive(parse_message(data), source, loop.time())
    handle, events = layer.send_request(request, dest, loop.time())
    events = layer.send_response(key, response, loop.time())
    when = layer.next_timer()            # -> loop.call_at(when, ...)
    events = layer.handle_timer(loop.time())
    events = layer.transport_error(send_event.key, loop.time())

Matching. A request whose top Via branch starts with the magic cookie is keyed by
(branch, sent-by, method), ACK counting as INVITE and CANCEL as itself; any other
request by the RFC 2543 rules (Request-URI, To tag, From tag, Call-ID, CSeq, top Via),
an ACK there matching the INVITE whose final response carried the ACK's To tag.
A response is keyed by (top Via branch, CSeq method). A CANCEL gets its own server
transaction and names the INVITE transaction it matches (§9.2). An ACK that matches
no transaction (the ACK for a 2xx, RFC 3261 §17) goes to the TU without a key.

Timers live in one heap of (deadline, token, transaction, timer); a transaction
remembers the token of each armed timer, so cancelling is forgetting the token and
stale entries are skipped when popped (and swept when they pile up). A timer fires
"at its deadline": a timer started by a firing counts from the deadline, not from
the (possibly late) `now`, so `handle_timer(40.0)` replays Timer A's whole schedule.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import NamedTuple

from pbx_core.sip.errors import ParseError
from pbx_core.sip.events import (
    Address,
    AnyServerKey,
    BadRequest,
    ClientKey,
    Event,
    LegacyServerKey,
    Overloaded,
    RequestReceived,
    ResponseReceived,
    Send,
    ServerKey,
    StrayResponse,
    TransactionKey,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from pbx_core.sip.headers import Via
from pbx_core.sip.message import Request, Response
from pbx_core.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    MAGIC_COOKIE,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    STARTS,
    Action,
    Input,
    Machine,
    State,
    TransactionError,
    Transition,
    non_2xx_ack,
    response_input,
    trying_for,
)
from pbx_core.sip.uri import URI

# Transports that retransmit on their own (RFC 3261 §17.1.1.2: no Timer A/E/G there).
UNRELIABLE = frozenset({"UDP"})

_LegacyAckKey = tuple[URI, str | None, str, int, Via]
# States in which a transaction only absorbs or answers retransmissions.
_SETTLED = frozenset({State.COMPLETED, State.ACCEPTED, State.CONFIRMED})


class _Transaction:
    __slots__ = (
        "ack",
        "alive",
        "interval",
        "key",
        "legacy_ack",
        "machine",
        "peer",
        "reliable",
        "request",
        "response",
        "state",
        "timers",
        "to_tag",
    )

    def __init__(
        self,
        key: TransactionKey,
        machine: Machine,
        request: Request,
        peer: Address,
    ) -> None:
        self.key = key
        self.machine = machine
        self.state = machine.start.target
        # Released once a server transaction has sent its final response (only that
        # response is needed to answer retransmissions) and once a client one has
        # its final response: a REGISTER or BYE transaction lingers 32 s (Timer J),
        # an answered INVITE 32 s (Timer M) — less to keep, less for the GC to scan.
        self.request: Request | None = request
        self.peer = peer  # client: where the request goes; server: where it came from
        self.reliable = peer[0].upper() not in UNRELIABLE
        self.response: Response | None = None  # server: last response sent
        self.ack: Request | None = None  # INVITE client: the ACK for a non-2xx
        self.to_tag: str | None = None  # server: To tag of the final (RFC 2543 ACK)
        self.legacy_ack: _LegacyAckKey | None = None
        self.timers: dict[Input, int] = {}  # armed timer -> heap token
        self.interval = 0.0  # last retransmission interval (Timer A, E or G)
        self.alive = True


class _Step(NamedTuple):
    """What an action sees: the transaction, the input (None for the start transition),
    the time, the events list to append to, and the message and its source if any."""

    tx: _Transaction
    inp: Input | None
    now: float
    out: list[Event]
    msg: Request | Response | None
    source: Address | None


class TransactionLayer:
    """Every client and server transaction of one SIP element."""

    def __init__(
        self,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        trying_delay: float | None = 0.2,
        max_server_transactions: int = 50_000,
    ) -> None:
        """`trying_delay`: send 100 Trying for an INVITE the TU has not answered after
        this many seconds (§17.2.1; 0 sends it at once, None leaves it to the TU).
        `max_server_transactions` bounds the memory peers can make us spend: past it
        new requests come out as `Overloaded` (answer 503 statelessly)."""
        if not (0 < t1 <= t2) or t4 <= 0:
            raise ValueError("need 0 < t1 <= t2 and t4 > 0")
        if trying_delay is not None and trying_delay < 0:
            raise ValueError("trying_delay must be >= 0 or None")
        if max_server_transactions < 1:
            raise ValueError("max_server_transactions must be >= 1")
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.trying_delay = trying_delay
        self.max_server_transactions = max_server_transactions
        self._clients: dict[ClientKey, _Transaction] = {}
        self._servers: dict[AnyServerKey, _Transaction] = {}
        self._legacy_acks: dict[_LegacyAckKey, _Transaction] = {}
        self._heap: list[tuple[float, int, _Transaction, Input]] = []
        self._tokens = itertools.count()
        self._armed = 0  # live entries in the heap
        # Stale heap entries tolerated beyond 2x the live ones before a sweep.
        self.sweep_slack = 1024
        self._handlers: dict[Action, Callable[[_Step], None]] = {
            Action.SEND_REQUEST: self._send_request,
            Action.SEND_ACK: self._send_ack,
            Action.REQUEST_TO_TU: self._request_to_tu,
            Action.RESPONSE_TO_TU: self._response_to_tu,
            Action.ACK_TO_TU: self._ack_to_tu,
            Action.SEND_RESPONSE: self._send_response,
            Action.RESEND_RESPONSE: self._resend_response,
            Action.SEND_TRYING: self._send_trying,
            Action.INFORM_TIMEOUT: self._inform_timeout,
            Action.INFORM_TRANSPORT_ERROR: self._inform_transport_error,
            Action.STOP_TRYING: self._stop_trying,
        }

    # -- public API ----------------------------------------------------------------

    def receive(self, msg: Request | Response, source: Address, now: float) -> list[Event]:
        """A parsed message arrived from `source`. Never raises on peer input."""
        if isinstance(msg, Response):
            return self._receive_response(msg, source, now)
        return self._receive_request(msg, source, now)

    def send_request(
        self, request: Request, dest: Address, now: float
    ) -> tuple[ClientKey, list[Event]]:
        """Start a client transaction. The request's top Via must carry an RFC 3261
        branch (`new_branch()`); ACK is not a transaction (send it with `Send`)."""
        if request.method == "ACK":
            raise TransactionError("ACK is not sent in a transaction (RFC 3261 §17)")
        try:
            branch = request.top_via.branch
            cseq = request.cseq
            _ = request.from_, request.to, request.call_id
        except ParseError as e:
            raise TransactionError(f"cannot send {request.method}: {e.reason}") from e
        if not branch or not branch.startswith(MAGIC_COOKIE) or branch == MAGIC_COOKIE:
            raise TransactionError(f"top Via branch {branch!r} lacks the magic cookie")
        if cseq.method != request.method:
            raise TransactionError(f"CSeq method {cseq.method} is not {request.method}")
        key = ClientKey(branch, request.method)
        if key in self._clients:
            raise TransactionError(f"a client transaction {key} already exists")
        machine = INVITE_CLIENT if request.method == "INVITE" else NON_INVITE_CLIENT
        tx = _Transaction(key, machine, request, dest)
        self._clients[key] = tx
        out: list[Event] = []
        self._run(machine.start, _Step(tx, None, now, out, request, None))
        return key, out

    def send_response(self, key: AnyServerKey, response: Response, now: float) -> list[Event]:
        """Answer the server transaction `key` (from RequestReceived)."""
        tx = self._servers.get(key)
        if tx is None:
            raise TransactionError(f"no server transaction {key}")
        inp = response_input(response.status, from_tu=True)
        if inp is None:
            raise TransactionError(f"cannot send status {response.status}")
        out: list[Event] = []
        self._run(tx.machine.step(tx.state, inp), _Step(tx, inp, now, out, response, None))
        return out

    def transport_error(self, key: TransactionKey, now: float) -> list[Event]:
        """The transport failed to send a message of transaction `key` (Send.key).
        Late reports (the transaction moved on or is gone) are ignored."""
        tx = self._clients.get(key) if isinstance(key, ClientKey) else self._servers.get(key)
        if tx is None:
            return []
        return self._peer_input(tx, Input.TRANSPORT_ERROR, now, None, None)

    def next_timer(self) -> float | None:
        """The earliest deadline, or None when no timer is armed."""
        heap = self._heap
        while heap:
            _deadline, token, tx, timer = heap[0]
            if tx.timers.get(timer) == token:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer whose deadline is <= now, in deadline order."""
        out: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, token, tx, timer = heapq.heappop(heap)
            if tx.timers.get(timer) != token:
                continue
            del tx.timers[timer]
            self._armed -= 1
            step = _Step(tx, timer, deadline, out, None, None)
            self._run(tx.machine.step(tx.state, timer), step)
        return out

    def state(self, key: TransactionKey) -> State | None:
        """The state of a live transaction, None once it is gone."""
        tx = self._clients.get(key) if isinstance(key, ClientKey) else self._servers.get(key)
        return None if tx is None else tx.state

    def timers(self, key: TransactionKey) -> dict[Input, float]:
        """Armed timers of a transaction and their deadlines (for tests and traces)."""
        tx = self._clients.get(key) if isinstance(key, ClientKey) else self._servers.get(key)
        if tx is None:
            return {}
        tokens = {token: timer for timer, token in tx.timers.items()}
        return {tokens[t]: d for d, t, x, _i in self._heap if x is tx and t in tokens}

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- matching ------------------------------------------------------------------

    def _receive_response(self, resp: Response, source: Address, now: float) -> list[Event]:
        try:
            key = ClientKey(resp.top_via.branch or "", resp.cseq.method)
        except ParseError:
            return []  # §18.1.2: a malformed response is discarded
        tx = self._clients.get(key)
        if tx is None:
            return [StrayResponse(resp, source)]
        inp = response_input(resp.status, from_tu=False)
        if inp is None:
            return []
        return self._peer_input(tx, inp, now, resp, source)

    def _receive_request(self, req: Request, source: Address, now: float) -> list[Event]:
        is_ack = req.method == "ACK"
        key: AnyServerKey | None = None
        try:
            via = req.top_via
            cseq = req.cseq
            branch = via.branch
            if branch is not None and branch.startswith(MAGIC_COOKIE):
                key = ServerKey(branch, via.sent_by.lower(), "INVITE" if is_ack else req.method)
                tx = self._servers.get(key)
            elif is_ack:
                tx = self._legacy_acks.get(_legacy_ack_key(req, via))
                if tx is not None and tx.to_tag != req.to.tag:
                    tx = None
            else:
                key = _legacy_key(req, via, req.method)
                tx = self._servers.get(key)
            if tx is None:
                # For the TU: check what it will need (§8.1.1).
                _ = req.from_, req.to, req.call_id
                if cseq.method != req.method:
                    # One handler below answers every malformed header alike.
                    bad = f"CSeq method {cseq.method!r} is not {req.method!r}"
                    raise ParseError(bad)  # noqa: TRY301  # see above
        except ParseError as e:
            # An ACK is never answered (§17.1.1.3): a malformed one is dropped.
            return [] if is_ack else [BadRequest(req, source, e)]
        if tx is not None:
            return self._peer_input(tx, Input.ACK if is_ack else Input.REQUEST, now, req, source)
        if is_ack or key is None:  # (key is None only for an RFC 2543 ACK)
            # The ACK for a 2xx (its own branch), or a stray one: the TU decides.
            return [RequestReceived(req, source, None)]
        if len(self._servers) >= self.max_server_transactions:
            return [Overloaded(req, source)]
        machine = INVITE_SERVER if req.method == "INVITE" else NON_INVITE_SERVER
        tx = _Transaction(key, machine, req, source)
        self._servers[key] = tx
        if isinstance(key, LegacyServerKey) and machine is INVITE_SERVER:
            tx.legacy_ack = _legacy_ack_key(req, via)
            self._legacy_acks[tx.legacy_ack] = tx
        out: list[Event] = []
        self._run(machine.start, _Step(tx, None, now, out, req, source))
        return out

    def _peer_input(
        self,
        tx: _Transaction,
        inp: Input,
        now: float,
        msg: Request | Response | None,
        source: Address | None,
    ) -> list[Event]:
        # Peer and transport input the table does not list is late, duplicated or
        # reordered: dropped, never raised (see transaction.py).
        tr = tx.machine.table.get((tx.state, inp))
        if tr is None:
            return []
        out: list[Event] = []
        self._run(tr, _Step(tx, inp, now, out, msg, source))
        return out

    # -- running the machines --------------------------------------------------------

    def _run(self, tr: Transition, step: _Step) -> None:
        tx = step.tx
        if tr.target is not tx.state:
            tx.state = tr.target
            if tx.timers:
                keep = tx.machine.timers_in[tr.target]
                for stale in [t for t in tx.timers if t not in keep]:
                    del tx.timers[stale]
                    self._armed -= 1
        due: list[Input] = []
        handlers = self._handlers
        for action in tr.actions:
            started = STARTS.get(action)
            if started is None:
                handlers[action](step)
            elif self._start(tx, started, step.now):
                due.append(started)
        if tr.target is State.TERMINATED:
            self._destroy(tx, step.out)
            return
        if tr.target in _SETTLED:
            # Nothing is sent from the request any more (a client's ACK for a non-2xx
            # is built by now); the transaction may linger 32 s: let the request go.
            tx.request = None
        for timer in due:  # zero duration: fires at once (reliable transports)
            if tx.alive and tx.timers.pop(timer, None) is not None:
                self._armed -= 1
                fired = _Step(tx, timer, step.now, step.out, None, None)
                self._run(tx.machine.step(tx.state, timer), fired)

    def _start(self, tx: _Transaction, timer: Input, now: float) -> bool:
        """Arm `timer`; True if its duration is zero (the caller fires it at once)."""
        duration = self._duration(tx, timer)
        if duration is None:
            return False
        token = next(self._tokens)
        if timer not in tx.timers:
            self._armed += 1
        tx.timers[timer] = token
        if duration <= 0:
            return True
        heapq.heappush(self._heap, (now + duration, token, tx, timer))
        if len(self._heap) > 2 * self._armed + self.sweep_slack:
            self._sweep()
        return False

    def _duration(self, tx: _Transaction, timer: Input) -> float | None:
        """RFC 3261 §17 timer values (see the table in transaction.py)."""
        t1 = self.t1
        if timer in (Input.TIMER_A, Input.TIMER_E, Input.TIMER_G):
            if not tx.reliable:
                if tx.interval == 0.0:
                    tx.interval = t1
                elif timer is Input.TIMER_E and tx.state is State.PROCEEDING:
                    tx.interval = self.t2  # §17.1.2.2
                elif timer is Input.TIMER_A:
                    tx.interval *= 2  # §17.1.1.2: no cap, Timer B ends it
                else:
                    tx.interval = min(2 * tx.interval, self.t2)
                return tx.interval
            return None  # reliable transports do not retransmit
        if timer is Input.TIMER_TRYING:
            return self.trying_delay
        if timer is Input.TIMER_D:
            return 0.0 if tx.reliable else max(32.0, 64 * t1)
        if timer in (Input.TIMER_I, Input.TIMER_K):
            return 0.0 if tx.reliable else self.t4
        if timer is Input.TIMER_J:
            return 0.0 if tx.reliable else 64 * t1
        return 64 * t1  # B, F, H, L, M

    def _sweep(self) -> None:
        # In place: handle_timer may be iterating over this very list.
        self._heap[:] = [e for e in self._heap if e[2].timers.get(e[3]) == e[1]]
        heapq.heapify(self._heap)

    def _destroy(self, tx: _Transaction, out: list[Event]) -> None:
        tx.alive = False
        self._armed -= len(tx.timers)
        tx.timers.clear()
        if isinstance(tx.key, ClientKey):
            del self._clients[tx.key]
        else:
            del self._servers[tx.key]
            if tx.legacy_ack is not None:
                self._legacy_acks.pop(tx.legacy_ack, None)
        out.append(TransactionTerminated(tx.key))

    # -- actions ---------------------------------------------------------------------

    def _send_request(self, step: _Step) -> None:
        tx = step.tx
        if tx.request is not None:
            step.out.append(Send(tx.request, tx.peer, tx.key))

    def _send_ack(self, step: _Step) -> None:
        tx = step.tx
        if tx.ack is None and tx.request is not None and isinstance(step.msg, Response):
            tx.ack = non_2xx_ack(tx.request, step.msg)
        if tx.ack is not None:  # §17.1.1.3: to the address the INVITE went to
            step.out.append(Send(tx.ack, tx.peer, tx.key))

    def _request_to_tu(self, step: _Step) -> None:
        tx = step.tx
        key = tx.key
        request = tx.request
        if isinstance(key, ClientKey) or request is None:
            return
        cancels: AnyServerKey | None = None
        if request.method == "CANCEL":
            # §9.2: match as if the CANCEL were the request it cancels (an INVITE).
            target = key._replace(method="INVITE")
            invite = self._servers.get(target)
            if invite is not None and invite.machine is INVITE_SERVER:
                cancels = target
        step.out.append(RequestReceived(request, tx.peer, key, cancels))

    def _response_to_tu(self, step: _Step) -> None:
        tx = step.tx
        if isinstance(step.msg, Response) and isinstance(tx.key, ClientKey):
            step.out.append(ResponseReceived(step.msg, tx.key, step.source or tx.peer))

    def _ack_to_tu(self, step: _Step) -> None:
        if isinstance(step.msg, Request):
            step.out.append(RequestReceived(step.msg, step.source or step.tx.peer, None))

    def _send_response(self, step: _Step) -> None:
        tx, msg = step.tx, step.msg
        if not isinstance(msg, Response):
            return
        tx.response = msg
        if msg.status >= 200 and tx.legacy_ack is not None:
            try:
                tx.to_tag = msg.to.tag  # the RFC 2543 ACK must carry it
            except ParseError:
                tx.to_tag = None
        if msg.status >= 200:
            tx.request = None
        step.out.append(Send(msg, tx.peer, tx.key))

    def _resend_response(self, step: _Step) -> None:
        tx = step.tx
        if tx.response is not None:
            step.out.append(Send(tx.response, tx.peer, tx.key))

    def _send_trying(self, step: _Step) -> None:
        tx = step.tx
        if tx.request is None:
            return
        tx.response = trying_for(tx.request)
        step.out.append(Send(tx.response, tx.peer, tx.key))

    def _inform_timeout(self, step: _Step) -> None:
        timer = step.inp.name.removeprefix("TIMER_") if step.inp is not None else "?"
        step.out.append(TransactionTimeout(step.tx.key, timer))

    def _inform_transport_error(self, step: _Step) -> None:
        step.out.append(TransportError(step.tx.key))

    def _stop_trying(self, step: _Step) -> None:
        if step.tx.timers.pop(Input.TIMER_TRYING, None) is not None:
            self._armed -= 1


def _legacy_key(req: Request, via: Via, method: str) -> LegacyServerKey:
    """RFC 3261 §17.2.3 matching for requests without the magic cookie."""
    return LegacyServerKey(
        _norm_uri(req.uri), req.to.tag, req.from_.tag, req.call_id, req.cseq.seq, method,
        _norm_via(via),
    )  # fmt: skip


def _legacy_ack_key(req: Request, via: Via) -> _LegacyAckKey:
    """What an RFC 2543 ACK shares with its INVITE: Request-URI, From tag, Call-ID,
    CSeq number and top Via (its To tag is the one of our final response)."""
    return (_norm_uri(req.uri), req.from_.tag, req.call_id, req.cseq.seq, _norm_via(via))


def _norm_uri(uri: URI) -> URI:
    return uri if uri.host == uri.host.lower() else uri.with_(host=uri.host.lower())


def _norm_via(via: Via) -> Via:
    host = via.host.lower()
    return via if host == via.host else Via(via.transport, host, via.port, via.params, via.protocol)
