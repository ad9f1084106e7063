"""RFC 4028 session timers of the B2BUA's calls: the glue between CallManager and the
sans-IO rules in session_timer.py.

Theory of operation. Timers run on each leg on its own: negotiated on A's INVITE
(422 when too short) and on our INVITE to B, restarted by every re-INVITE or UPDATE
that succeeds on that leg. Where the PBX is the refresher it sends an UPDATE (or, to
a phone that does not allow UPDATE, a re-INVITE without SDP whose offer the media
engine answers in the ACK) at half the interval; where the phone is, a missing
refresh ends the call with BYE on both legs. A body-less UPDATE is a pure refresh and
is answered on its leg, not passed across.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pbx_core.pbx.call_state import Call, Fork, State, allows_update
from pbx_core.pbx.session_timer import (
    Action,
    LegTimer,
    Reject,
    SessionTimerError,
    TimerConfig,
    negotiate_uac,
    negotiate_uas,
    retry_interval,
    uac_headers,
)
from pbx_core.sip.events import AnyServerKey
from pbx_core.sip.message import Request, Response
from pbx_core.transport.manager import Address

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

RETRY_REFRESH = 2.0  # seconds: our own re-INVITE is out, refresh once it is answered


class CallTimers:
    """The session timers of every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        self.config = TimerConfig()

    def invite_headers(self) -> list[tuple[str, str]]:
        """Session-Expires/Min-SE/Supported of our initial INVITE to B."""
        return uac_headers(self.config)

    def negotiate_a(self, call: Call) -> bool:
        """Negotiate A's session timer from its INVITE (sent with our 2xx); False
        when the call was refused (422 with our Min-SE, or 400)."""
        req = call.a_req
        try:
            got = negotiate_uas(req.headers, self.config)
        except SessionTimerError as exc:
            self.manager.fail_a(call, exc.status, exc.reason)
            return False
        if isinstance(got, Reject):
            self.manager.fail_a(call, got.status, "session interval too small", got.headers())
            return False
        call.a_session = got
        call.allows_update["a"] = allows_update(req)
        return True

    def start_a(self, call: Call, resp: Response) -> None:
        """Our 2xx to A's INVITE: its session timer headers, and A's timer starts."""
        resp.headers.add("Supported", "timer")
        if call.a_session is not None:
            for name, value in call.a_session.headers():
                resp.headers.add(name, value)
            self.restart(call, "a", LegTimer.start(self.manager.loop.time(), call.a_session))

    def retry_422(self, fork: Fork, resp: Response) -> bool:
        """B wants a longer session interval (422, RFC 4028 §7.3): ask again, once."""
        try:
            asked = fork.invite.headers.get("session-expires") or ""
            interval = retry_interval(resp.headers, int(asked.split(";")[0] or 0))
        except (SessionTimerError, ValueError):
            return False
        if interval is None or fork.timer_retried or fork.call.state is State.ENDED:
            return False
        fork.timer_retried = True
        self.manager.retries.resend(
            fork, [("Session-Expires", str(interval)), ("Min-SE", str(interval))]
        )
        return True

    def on_request(
        self, call: Call, side: str, req: Request, key: AnyServerKey, source: Address
    ) -> bool:
        """A re-INVITE or UPDATE from a phone at `source` (RFC 4028 §9): False when
        it was answered here (422, 400, or a body-less UPDATE, which is only a
        refresh)."""
        try:
            got = negotiate_uas(req.headers, self.config)
        except SessionTimerError as exc:
            self.manager.stack.respond(key, req.reply(exc.status))
            return False
        if isinstance(got, Reject):
            resp = req.reply(got.status)
            for name, value in got.headers():
                resp.headers.add(name, value)
            self.manager.stack.respond(key, resp)
            return False
        if req.method == "UPDATE" and not req.body:
            self.manager.call_relay.answer(call, side, req, key, b"", source)
            return False
        return True

    def reply(self, call: Call, side: str, req: Request, resp: Response) -> None:
        """Our 2xx to a phone's re-INVITE/UPDATE carries the leg's new session timer,
        which starts again now."""
        if req.method not in ("INVITE", "UPDATE") or not 200 <= resp.status < 300:
            return
        try:
            got = negotiate_uas(req.headers, self.config)
        except SessionTimerError:
            return  # answered with 400 before it got here
        if isinstance(got, Reject):
            return
        resp.headers.add("Supported", "timer")
        for name, value in got.headers():
            resp.headers.add(name, value)
        self.restart(call, side, LegTimer.start(self.manager.loop.time(), got))

    def refresh_headers(self, call: Call, side: str) -> list[tuple[str, str]]:
        """Session timer headers of a re-INVITE/UPDATE we send on `side`: the leg's
        interval, and the same refresher as now."""
        timer = call.timers.get(side)
        if timer is None:
            return uac_headers(self.config)
        return uac_headers(self.config, timer.interval, timer.we_refresh)

    def restart_uac(self, call: Call, side: str, resp: Response) -> None:
        """A 2xx to our INVITE/UPDATE on `side` (RFC 4028 §7.2) restarts its timer."""
        try:
            got = negotiate_uac(resp.headers, self.config)
        except SessionTimerError as exc:
            log.info("call %s: bad session timer in a 2xx (%s): no timer", call.id, exc)
            got = None
        self.restart(call, side, LegTimer.start(self.manager.loop.time(), got))

    def restart(self, call: Call, side: str, timer: LegTimer | None) -> None:
        old = call.timer_handles.pop(side, None)
        if old is not None:
            old.cancel()
        if timer is None:
            call.timers.pop(side, None)
            return
        call.timers[side] = timer
        when, action = timer.due()
        call.timer_handles[side] = self.manager.loop.call_at(when, self._fire, call, side, action)

    def drop(self, call: Call, side: str) -> LegTimer | None:
        """`side`'s leg leaves the call (a transfer): its timer stops; returned so the
        leg can take it to its new side (`restart`)."""
        handle = call.timer_handles.pop(side, None)
        if handle is not None:
            handle.cancel()
        return call.timers.pop(side, None)

    def stop(self, call: Call) -> None:
        """The call ended: no more timers."""
        for handle in call.timer_handles.values():
            handle.cancel()
        call.timer_handles.clear()

    def _fire(self, call: Call, side: str, action: Action) -> None:
        call.timer_handles.pop(side, None)
        if call.state is State.ENDED:
            return
        who = "caller" if side == "a" else "callee"
        if action is Action.EXPIRE:
            log.info("call %s: no session refresh from the %s, hanging up", call.id, who)
            self.manager.hangup(call, f"session timer expired ({who})")
            return
        self._send_refresh(call, side)

    def _send_refresh(self, call: Call, side: str) -> None:
        """We are the refresher on `side` (RFC 4028 §10): UPDATE without a body when
        the phone allows it, else a re-INVITE without SDP whose offer (in the 2xx)
        the media engine answers in the ACK."""
        manager = self.manager
        timer = call.timers.get(side)
        dialog = call.dialog(side)
        if timer is None or dialog is None:
            return
        method = "UPDATE" if call.allows_update.get(side) else "INVITE"
        if method == "INVITE" and (
            call.reinvite_pending or (call.media is None and call.endpoint is None)
        ):
            if call.reinvite_pending:  # our relayed re-INVITE is out: try again soon
                call.timer_handles[side] = manager.loop.call_later(
                    RETRY_REFRESH, self._fire, call, side, Action.REFRESH
                )
                return
            # Media passes end to end and the phone takes no UPDATE: we have no SDP
            # to answer its offer with, so this leg goes without a timer.
            log.info("call %s: cannot refresh the %s leg, its session timer is off", call.id, side)
            self.restart(call, side, None)
            return
        req = dialog.request(method)
        for name, value in uac_headers(self.config, timer.interval, we_refresh=True):
            req.headers.add(name, value)
        if method == "INVITE":
            call.reinvite_pending = True

        def answered(resp: Response | None) -> None:
            status = 408 if resp is None else resp.status
            if status < 200 or call.state is State.ENDED:
                return
            if method == "INVITE":
                call.reinvite_pending = False
            if resp is not None and 200 <= status < 300:
                if method == "INVITE" and not manager.call_media.answer_refresh_offer(
                    call, side, req, resp
                ):
                    return
                self.restart_uac(call, side, resp)
                return
            if status in (408, 481):  # §10: the session is gone
                manager.hangup(call, f"session refresh failed ({status})")
                return
            # Refused for another reason: stop refreshing, and end the call at expiry
            # unless the phone refreshes meanwhile.
            log.info("call %s: session refresh got %s", call.id, status)
            self.restart(call, side, LegTimer(timer.interval, False, timer.refreshed_at))

        if manager.send_in_dialog(dialog, req, answered) is None:
            call.reinvite_pending = False
            manager.hangup(call, "session refresh failed")
