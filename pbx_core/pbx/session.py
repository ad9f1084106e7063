"""The `Session` an application gets (features/api.py): `LocalSession` plays, collects
keys, records, echoes and bridges on the media leg of a call the PBX answered (or of
an extension stepped aside by an in-call code); every await returns at once when the
call ends (`ended`). The host (features.py) makes one per application.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbx_core import paths, sysrec
from pbx_core.features.api import Destination, Recorded
from pbx_core.media.errors import MediaError
from pbx_core.media.events import DtmfEvent
from pbx_core.media.recorder import MAX_RECORD_SECONDS, Recording

if TYPE_CHECKING:
    from pbx_core.media.audio import Audio
    from pbx_core.media.leg import MediaLeg
    from pbx_core.pbx.rooms import Rooms

log = logging.getLogger("pbx.features")

MAX_CODE_ARG = 32  # digits collected at most (a phone number is at most 15, E.164)
MAX_PROMPTS = 32  # prompts in one play() call
CALL_CLASSES = ("internal", "local", "national", "international")  # Session.bridge
CONSULT_CANCEL = "*"  # the key that ends an in-call application's consultation
# An in-call application's consultation (call_consult.py): number -> (its outcome, cancel)
Consult = Callable[[str], "tuple[asyncio.Future[int], Callable[[], None]]"]
RECORDING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # never a path
EXTENSION = re.compile(r"[0-9A-Za-z_.+-]{1,32}")  # `name:EXT`
# An extension's recorded name (`name:EXT`): its voicemail box's "name" greeting, the
# file the voicemail feature records with Session.record (features/voicemail/box.py).
NAME_GREETING = ("voicemail", "greet-{}-name")
# The host's way to ring for an application: a number (with a class of the app's own,
# or None) or a destination (`Session.goto`); the final status.
Bridge = Callable[[str | Destination, str | None], Awaitable[int]]


class LocalSession:
    """`Session` over the media endpoint of a call the PBX answered."""

    def __init__(
        self,
        leg: MediaLeg,
        hangup: Callable[[], None],
        ended: Callable[[], bool],
        bridge: Bridge | None = None,
        recordings: Path | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        root: Path | None = None,
        consult: Consult | None = None,
    ) -> None:
        self._leg = leg
        self._consult = consult
        self._recordings = recordings
        # Every feature's recordings (`recordings/`): system ones, recorded names.
        self._root = root
        self.call_id = ""
        self.music: Audio | None = None
        # Done when the call ends: every await returns at once (`ended`).
        self._gone: asyncio.Future[None] = (loop or asyncio.get_event_loop()).create_future()
        self._hangup = hangup
        self._ended = ended
        self._bridge = bridge
        self.bridged = False
        self._digits: asyncio.Queue[str] = asyncio.Queue(maxsize=64)
        # The host's mix rooms and the feature whose rooms `join_room` names (set by
        # the host, as `music` is).
        self.rooms: Rooms | None = None
        self.feature = ""
        self._with: MediaLeg | None = None  # the other party, in the room with it
        leg.on_dtmf(self._on_dtmf)

    @property
    def hung_up(self) -> bool:
        return self._ended()

    def close(self) -> None:
        """The application ended: its key presses go nowhere any more (the leg may
        live on: an in-call application's extension is back in its call); it leaves
        its mix room."""
        self._leg.off_dtmf(self._on_dtmf)
        self.leave_room()
        self.ended()

    def ended(self) -> None:
        """The call ended (the host tells): wake every await."""
        if not self._gone.done():
            self._gone.set_result(None)

    def _on_dtmf(self, event: DtmfEvent) -> None:
        if not self._digits.full():
            self._digits.put_nowait(event.digit)

    async def play(self, *prompts: str, interruptible: bool = False) -> str | None:
        for prompt in prompts[:MAX_PROMPTS]:
            if self.hung_up:
                return None
            done = asyncio.get_running_loop().create_future()

            def finished(fut: asyncio.Future[None] = done) -> None:
                if not fut.done():
                    fut.set_result(None)

            recorded = self._recorded(prompt)
            if prompt.startswith("tone:"):
                self._leg.tone(prompt[5:], on_done=finished)
            elif recorded is not None and recorded.exists():
                self._leg.play(recorded, on_done=finished)
            elif prompt.startswith(("rec:", "name:")):
                log.debug("recording %s missing: a confirmation tone instead", prompt)
                self._leg.tone("confirmation", on_done=finished)
            elif prompt.startswith("sys:"):  # the office's greeting: someone should know
                log.warning("system recording %r missing: a confirmation tone instead", prompt[4:])
                self._leg.tone("confirmation", on_done=finished)
            else:
                path = paths.asset(f"prompts/{prompt}.wav")
                if path.exists():
                    self._leg.play(path, on_done=finished)
                else:  # a build without prompts (tests, a trimmed image): a beep says it
                    log.debug("prompt %s missing: a confirmation tone instead", prompt)
                    self._leg.tone("confirmation", on_done=finished)
            digit = await self._until(done, interruptible)
            if digit is not None:
                self._leg.stop_play()
                return digit
        return None

    async def _until(self, done: asyncio.Future[None], interruptible: bool) -> str | None:
        """Wait for `done`, a key press (when interruptible) or the hang-up."""
        while not done.done():
            if self.hung_up:
                return None
            waits: set[asyncio.Future[Any]] = {done}
            getter: asyncio.Task[str] | None = None
            if interruptible:
                getter = asyncio.ensure_future(self._digits.get())
                waits.add(getter)
            waits.add(self._gone)
            try:
                await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:  # cancelled too (an app's own timer): no reader left to eat a key
                if getter is not None and not getter.done():
                    getter.cancel()
            if getter is not None and getter.done() and not getter.cancelled():
                return getter.result()
        return None

    async def collect(
        self,
        max_digits: int,
        first_timeout: float = 5.0,
        inter_timeout: float = 3.0,
        terminator: str = "#",
    ) -> str:
        got = ""
        max_digits = max(1, min(max_digits, MAX_CODE_ARG))
        timeout = first_timeout
        loop = asyncio.get_running_loop()
        while len(got) < max_digits and not self.hung_up:
            end = loop.time() + timeout
            getter: asyncio.Future[Any] = asyncio.ensure_future(self._digits.get())
            while not getter.done() and not self.hung_up and loop.time() < end:
                await asyncio.wait(
                    {getter, self._gone},
                    timeout=min(1.0, max(0.0, end - loop.time())),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if not getter.done():
                getter.cancel()
                break
            digit = getter.result()
            if terminator and digit in terminator:
                break
            got += digit
            timeout = inter_timeout
        return "" if self.hung_up else got  # an entry cut short by a hang-up counts for nothing

    def echo(self) -> None:
        self._leg.echo()

    def music_on_hold(self) -> None:
        if self.music is not None and not self.hung_up and self._leg.codec in ("PCMU", "PCMA"):
            self._leg.play(self.music, loop=True)

    async def wait(self, seconds: float) -> None:
        end = asyncio.get_running_loop().time() + max(0.0, seconds)
        while not self.hung_up:
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.wait({self._gone}, timeout=min(left, 1.0))

    def hangup(self) -> None:
        if not self.hung_up:
            self._hangup()

    async def bridge(self, number: str, call_class: str | None = None) -> int:
        if self.hung_up or self.bridged:
            return 487 if self.hung_up else 491
        if self._bridge is None or not number or len(number) > MAX_CODE_ARG:
            return 404
        if call_class is not None and call_class not in CALL_CLASSES:
            return 403
        self._leg.stop_play()
        status = await self._bridge(number, call_class)
        self.bridged = status == 200
        return status

    async def consult(self, number: str) -> int:
        if self.hung_up:
            return 487
        if self._consult is None or not number or len(number) > MAX_CODE_ARG:
            return 404
        self._leg.stop_play()
        while not self._digits.empty():  # keys pressed before are not a cancel
            self._digits.get_nowait()
        outcome, cancel = self._consult(number)
        while not outcome.done() and not self.hung_up:
            getter: asyncio.Future[Any] = asyncio.ensure_future(self._digits.get())
            try:
                await asyncio.wait(
                    {outcome, getter, self._gone}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled() and getter.result() == CONSULT_CANCEL:
                cancel()
        return outcome.result() if outcome.done() else 487

    def join_room(
        self,
        room: str,
        *,
        max_members: int = 50,
        muted: bool = False,
        music_when_alone: bool = True,
        tone: bool = True,
        with_other: bool = False,
    ) -> int:
        if self.hung_up:
            return 487
        if self.rooms is None:
            return 500
        other = self._leg.partner if with_other else None
        if with_other and (other is None or other.closed):
            return 404  # not an in-call application: no other party
        self._leg.stop_play()
        music = self.music if music_when_alone else None
        status = self.rooms.join(
            self.feature,
            room,
            self._leg,
            max_members=max_members,
            muted=muted,
            music=music,
            tone=tone,
        )
        if status != 200 or other is None:
            return status
        other.stop_play()  # its music on hold (AnchoredCall.aside)
        status = self.rooms.join(
            self.feature, room, other, max_members=max_members, music=music, tone=False
        )
        if status != 200:
            self.rooms.leave(self._leg)
            return status
        self._with = other
        return 200

    def leave_room(self) -> None:
        if self.rooms is not None:
            self.rooms.leave(self._leg)
            if self._with is not None:
                self.rooms.leave(self._with)
        self._with = None

    def mute(self, on: bool = True) -> bool:
        return self.rooms is not None and self.rooms.mute(self._leg, on)

    async def transfer(self, number: str) -> None:
        status = await self.bridge(number)
        if status != 200:
            self.hangup()

    def _recorded(self, prompt: str) -> Path | None:
        """The file a `rec:`, `sys:` or `name:` prompt names (None: none can be)."""
        kind, _, name = prompt.partition(":")
        if kind == "rec":
            return self._recording(name)
        if self._root is None:
            return None
        if kind == "sys":
            return sysrec.path(sysrec.folder(self._root), name)
        if kind == "name" and EXTENSION.fullmatch(name):
            feature, pattern = NAME_GREETING
            return self._root / feature / f"{pattern.format(name)}.wav"
        return None

    def has_recording(self, prompt: str) -> bool:
        path = self._recorded(prompt)
        return path is not None and path.is_file()

    async def keep_system(self, recording: str, name: str) -> str | None:
        source = self._recording(recording)
        if source is None or self._root is None:
            return "no such recording"
        directory = sysrec.folder(self._root)
        loop = asyncio.get_running_loop()
        try:  # up to a megabyte and an fsync on the card: not on the event loop
            await loop.run_in_executor(None, sysrec.save_file, directory, name, source)
        except sysrec.SysrecError as exc:
            log.warning("system recording %r not kept: %s", name, exc)
            return str(exc)
        log.info("system recording %r kept (from %s)", name, recording)
        return None

    async def goto(self, destination: Destination) -> int:
        if self.hung_up or self.bridged:
            return 487 if self.hung_up else 491
        if self._bridge is None:
            return 404
        self._leg.stop_play()
        status = await self._bridge(destination, None)
        self.bridged = status == 200
        return status

    def _recording(self, name: str) -> Path | None:
        """The file of the feature's recording `name`; None for a name that could
        leave the directory or when the feature has none."""
        if self._recordings is None or not RECORDING_NAME.fullmatch(name):
            return None
        return self._recordings / f"{name}.wav"

    async def record(
        self,
        name: str,
        max_seconds: float = 180.0,
        silence_seconds: float | None = 5.0,
        terminators: str = "#",
    ) -> Recorded:
        path = self._recording(name)
        if path is None:
            log.warning("recording %r refused: a bad name or no recordings directory", name)
            return Recorded(name, 0.0, "error")
        if self.hung_up:
            return Recorded(name, 0.0, "hangup")
        max_seconds = min(max(1.0, max_seconds), MAX_RECORD_SECONDS)
        if silence_seconds is not None:
            silence_seconds = min(max(0.5, silence_seconds), max_seconds)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Recording] = loop.create_future()

        def finished(result: Recording) -> None:
            if not done.done():
                done.set_result(result)

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._leg.record(
                path,
                "ulaw",  # G.711: 8 000 bytes a second on the card, half of 16-bit PCM
                max_seconds=max_seconds,
                on_done=finished,
                silence_seconds=silence_seconds,
                initial_silence=silence_seconds,
                terminators="".join(t for t in terminators if t in "0123456789*#")[:4],
            )
        except (OSError, MediaError) as exc:
            log.warning("recording %s failed to start: %s", name, exc)
            return Recorded(name, 0.0, "error")
        while not done.done() and not self.hung_up:
            waits: set[asyncio.Future[Any]] = {done, self._gone}
            await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():  # the caller hung up: the leg closes and keeps the file
            self._leg.stop_record()
        result = done.result() if done.done() else None
        while not self._digits.empty():  # the terminator is not a digit to collect
            self._digits.get_nowait()
        if result is None or result.path is None:
            return Recorded(name, 0.0, "error" if not self.hung_up else "hangup")
        reason = "hangup" if result.reason in ("closed", "stopped") else result.reason
        return Recorded(name, round(result.seconds, 2), reason, result.digit)

    def delete_recording(self, name: str) -> bool:
        path = self._recording(name)
        if path is None:
            return False
        try:
            path.unlink()
        except OSError:
            return False
        return True
