"""In-call key codes: digits an extension presses during an answered call, for the
features that declare `call_codes` (`##` blind transfer, `*1` recording …).

Theory of operation. Every anchored call reports its key presses (RFC 4733, SIP
INFO, in-band) here (`watch`). Only a side that is one of our extensions counts:
a caller over the trunk never reaches a code (no transfer of oneself to a paid
number). Digits of a side are kept while they come less than INTER_DIGIT seconds
apart (at most MAX_KEYS of them); when they end with a declared code, its feature is
asked (`in_call` hook). An `Answer` puts that side aside (`AnchoredCall.aside`: it
hears nothing of the other party, who hears music on hold) and runs the application
on its media leg. In that application `transfer(number)` is a blind transfer of the
other party (the extension's call class applies; a failed one rings the extension
back), `hangup()` and returning both bring the extension back into the call. The
presses are also passed on to the other phone, as always (PBXs do so: the code's
first key cannot be told from a digit meant for the far end). A `Record` starts or
stops recording the call (call_record.py); the extension stays in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pbx_core.features.api import Answer, Decision, Record
from pbx_core.media.engine import AnchoredCall
from pbx_core.media.events import DtmfEvent
from pbx_core.media.leg import MediaLeg
from pbx_core.pbx.call_record import CallRecordings
from pbx_core.pbx.call_state import Call, State

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager

log = logging.getLogger("pbx.calls")

INTER_DIGIT = 2.0  # seconds between the keys of one code
MAX_KEYS = 8  # keys kept per side (the longest code is shorter)

# (call, side, its leg, the answer, back) -> runs the application; back() when it ends
RunApp = Callable[[Call, str, MediaLeg, Answer, Callable[[], None]], None]


class CallKeys:
    """The in-call codes of every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        # Set by the engine: the declared codes (longest first), the features' word
        # on a code (call, extension, code), and how to run an application.
        self.codes: Callable[[], Sequence[str]] = lambda: ()
        self.ask: Callable[[Call, str, str], Decision | None] = lambda *_a: None
        self.run_app: RunApp | None = None
        self.recordings = CallRecordings(manager.loop)  # the engine sets its root

    def watch(self, call: Call, media: AnchoredCall) -> None:
        """Hear the key presses of `call`'s relay `media`."""
        if self.codes():
            media.on_dtmf(lambda event: self.key(call, media, event))

    def key(self, call: Call, media: AnchoredCall, event: DtmfEvent) -> None:
        if (
            call.state is not State.ANSWERED
            or call.media is not media
            or call.replacing is not None
            or call.aside is not None
        ):
            return
        side = "a" if event.side == "caller" else "b"
        fork = call.answered
        label = call.caller if side == "a" else (fork.target.label if fork else "")
        extension = self.manager.ops.extension_of(label)
        if extension is None:
            return
        now = self.manager.loop.time()
        keys, at = call.keys.get(side, ("", 0.0))
        if now - at > INTER_DIGIT:
            keys = ""
        keys = (keys + event.digit)[-MAX_KEYS:]
        code = next((c for c in self.codes() if keys.endswith(c)), None)
        if code is None:
            call.keys[side] = (keys, now)
            return
        call.keys.pop(side, None)
        with self.manager.guard(call, f"in-call code {code}"):
            self._pressed(call, media, side, extension, code)

    def _pressed(
        self, call: Call, media: AnchoredCall, side: str, extension: str, code: str
    ) -> None:
        decision = self.ask(call, extension, code)
        if isinstance(decision, Record):
            log.info("call %s: %s pressed %s (recording)", call.id, extension, code)
            self.recordings.toggle(call, media, side, decision)
            return
        if not isinstance(decision, Answer) or self.run_app is None:
            if decision is not None:
                log.info("call %s: in-call code %s: %s is not for a call", call.id, code, decision)
            return
        leg = media.aside("caller" if side == "a" else "callee")
        call.aside = side
        log.info("call %s: %s pressed %s (%s)", call.id, extension, code, decision.name)

        def back() -> None:
            if call.consult is not None and call.consult.leg is leg:
                self.manager.ops.consult.rejoin(call)  # after a `*2` consultation
                return
            if call.aside == side and call.state is State.ANSWERED and call.media is media:
                call.aside = None
                media.back("caller" if side == "a" else "callee")

        self.run_app(call, side, leg, decision, back)

    def transfer(self, call: Call, side: str, extension: str, number: str) -> int:
        """An in-call application's `transfer`: the other party to `number`, blind;
        the extension's leg is released at once. 200 once started, else why not."""
        manager = self.manager
        if call.state is not State.ANSWERED or call.aside != side:
            return 481
        media = call.media
        if media is not None:
            media.back("caller" if side == "a" else "callee")
        call.aside = None
        return manager.ops.blind_transfer(call, side, number, extension)

    def in_app(self, call: Call, side: str) -> bool:
        """Whether `side`'s in-call application still has the extension (aside, or
        consulting a third party: call_consult.py)."""
        if call.state is State.ENDED:
            return False
        return call.aside == side or (call.consult is not None and call.consult.side == side)
