"""N legs mixed in real time: conference, paging/intercom, barge/whisper, and the
mix of a call for recording.

    bridge = MixBridge(engine)          # engine: the MediaEngine of the legs
    bridge.add(leg_a); bridge.add(leg_b); bridge.add(leg_c, muted=True)
    bridge.beep()                       # everyone hears a join beep
    bridge.play("/…/you-are-muted.wav", to=leg_c)
    bridge.remove(leg_b)                # leg_b goes back to silent
    bridge.close()

Theory of operation
-------------------
A member's leg hands each audio packet it receives (telephone-events are not
audio: they stay with the leg's ``on_dtmf``) to its ``Member``, which decodes it to
PCM into a small jitter buffer (media/jitter.py): playout starts once ``PREFILL``
is held, a hole waits for a late packet until the buffer's depth, anything beyond
``MAX_DELAY`` is shed (a burst after a stall), and when the
buffer runs dry (the phone paused) playout stops and prefills again at the next
packet, so a silence-suppressing phone does not accumulate delay; more than
``TARGET`` held for a second in a row (a phone clock running fast) sheds one frame.

One timer per bridge ticks every 20 ms from a fixed start (frame k at t0 + k·20 ms,
restarting after a stall of more than 0.2 s, as a leg's player does), and only while
the bridge has members.  Each tick takes 160 samples from every member; a frame
quieter than ``QUIET`` peak (-60 dBFS) counts as silence, and at most
``max_speakers`` loudest frames are mixed, which bounds the work whatever the
number of members.  The public mix (the speakers, plus a clip played to the whole
bridge) is computed once; a member that is not speaking hears it as is, encoded
once per codec for all of them; a speaker hears it minus itself (mix-minus, no
echo of one's own voice); whispers and clips for one member are added to that
member's frame only.  Sums are saturated to 16 bits.

A ``level`` bridge (conference rooms) also evens out its members: a frame whose
peak is above ``LEVEL_CAP`` (-9 dBFS) is scaled down to it (a 2 ms attack, the
gain coming back by ``LEVEL_RELEASE`` per tick: about a second), so one shouting or
clipping line does not drown the rest and three speakers rarely saturate; the gain
is ramped across the frame (no step, no click).  A member joining fades in over its
first frame, and one leaving fades out over what it still had buffered, so joins
and leaves mid-sentence do not click.  A frame below the cap at unity gain costs one
``translate`` and ``max`` (no per-sample work).  The frame is encoded in the
member's codec and sent through its leg (``leg.mode == "mix"``; while the leg plays
a prompt of its own it hears the prompt instead, and still talks into the bridge).

Per member: ``muted`` (talks, nobody hears it: listen-only), ``deaf`` (hears
silence but for clips played to it alone), ``heard_by`` (only these legs hear it:
whisper / coaching).

A ``tap`` bridge only listens: its members' legs keep their own output (the two legs
of an AnchoredCall go on relaying each other, untouched) and it sends nothing; its
mix exists for ``record`` (``AnchoredCall.record``: a call recorded on demand). The
legs decode what they receive only while they are in it.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pbx_core.media.audio import Audio
from pbx_core.media.codecs import CODECS
from pbx_core.media.errors import MediaError
from pbx_core.media.jitter import JitterBuffer
from pbx_core.media.leg import MediaLeg
from pbx_core.media.mixer import pack, samples, saturate, sum_frames
from pbx_core.media.recorder import RecordDone, Recorder
from pbx_core.media.tones import Tone

if TYPE_CHECKING:
    from pbx_core.media.engine import MediaEngine

log = logging.getLogger("pbx.media")

__all__ = ["MAX_MEMBERS", "Member", "MixBridge", "beep_clip"]

PTIME = 20  # ms per tick
FRAME = 8 * PTIME  # samples per tick (8 kHz)
FRAME_BYTES = 2 * FRAME
PREFILL = 2 * FRAME  # samples held before a member's playout starts
MAX_DELAY = 10 * FRAME  # samples held beyond which the oldest are shed (200 ms)
TARGET = 4 * FRAME  # held for DRIFT ticks in a row beyond this: one frame is shed
DRIFT = 50
QUIET = 32  # peak below which a frame counts as silence (-60 dBFS)
MAX_PACKET = 960  # samples in one packet at most (120 ms, the longest ptime); more: dropped
MAX_MEMBERS = 64
MAX_CLIPS = 16  # clips playing at once in one bridge
STALL = 0.2  # seconds late beyond which the tick restarts its clock
UNITY = 256  # a level bridge's member gain, Q8
LEVEL_CAP = 45  # peak, in 1/128 of full scale (the high byte), a level bridge lets through
LEVEL_RELEASE = 6  # gain (Q8) regained per tick after a loud frame (unity in ~1 s)
ATTACK = 16  # samples (2 ms) over which a loud frame's gain comes down

ClipDone = Callable[[], None]


def _beep(*freqs: float) -> Audio:
    pcm = b"".join(
        Audio.from_tone(Tone((f,), ((90, 30),), repeat=False, level_dbm0=-16.0)).pcm for f in freqs
    )
    return Audio(pcm, "beep")


class Member:
    """A leg in a bridge: its options and the jitter buffer of what it sends."""

    __slots__ = (
        "bridge",
        "deaf",
        "dropped",
        "gain",
        "heard_by",
        "high",
        "jitter",
        "leg",
        "loud_end",
        "muted",
        "pcm",
        "playing",
        "shed",
    )

    def __init__(self, bridge: MixBridge, leg: MediaLeg, muted: bool, deaf: bool) -> None:
        self.bridge = bridge
        self.leg = leg
        self.muted = muted
        self.deaf = deaf
        self.heard_by: frozenset[MediaLeg] | None = None  # None: everyone
        self.jitter = JitterBuffer(depth=3 * FRAME)
        self.pcm = bytearray()  # decoded, taken FRAME_BYTES per tick
        self.loud_end = 0  # bytes of pcm up to the end of the last loud packet
        self.playing = False
        self.shed = 0  # frames dropped to keep the delay bounded
        self.high = 0  # ticks in a row with more than TARGET held
        self.dropped = 0  # packets refused: empty or longer than MAX_PACKET
        self.gain = 0  # a level bridge's gain (Q8): 0 until the first frame fades in

    def put(self, ts: int, payload: bytes, codec: str) -> None:
        """A G.711 packet from the leg (called by MediaLeg._consume): decoded if it
        is loud, else filed as quiet (b"") without decoding.  Longer than
        MAX_PACKET: dropped (a bound on the jitter buffer's memory)."""
        if len(payload) > MAX_PACKET or not payload:
            self.dropped += 1
            return
        if b"\x01" in payload.translate(_loud_table(codec)):
            self.jitter.put(ts, CODECS[codec].decode(payload), len(payload))
        else:
            self.jitter.put(ts, b"", len(payload))

    def pull(self) -> bytes | None:
        """This tick's 20 ms of what the member says; None while it says nothing
        louder than ``QUIET``."""
        jb = self.jitter
        if not self.playing:
            if jb.span() < PREFILL:
                return None
            self.playing = True
        while jb.span() > MAX_DELAY and jb.pop(force=True) is not None:
            self.shed += 1
        if jb.span() > TARGET:  # a phone clock faster than ours: catch up slowly
            self.high += 1
            if self.high >= DRIFT and jb.pop(force=True) is not None:
                self.shed += 1
                self.high = 0
        else:
            self.high = 0
        buf = self.pcm
        while len(buf) < FRAME_BYTES:
            item = jb.pop()
            if item is None:
                if not len(jb):  # ran dry: prefill again from the next packet
                    self.playing = False
                    jb.reset()
                break  # else a hole: wait for the late packet (at most the depth)
            payload, n = item
            if payload:
                buf += payload
                self.loud_end = len(buf)
            else:  # quiet, or lost
                buf += bytes(2 * min(n, MAX_DELAY))
        loud = self.loud_end > 0
        out = bytes(buf[:FRAME_BYTES]) if loud else None
        del buf[:FRAME_BYTES]
        self.loud_end = max(0, self.loud_end - FRAME_BYTES)
        if len(buf) > 2 * MAX_DELAY:
            cut = len(buf) - 2 * MAX_DELAY
            del buf[:cut]
            self.loud_end = max(0, self.loud_end - cut)
        if out is None or len(out) == FRAME_BYTES:
            return out
        return out + bytes(FRAME_BYTES - len(out))

    def leveled(self, pcm: bytes) -> bytes:
        """A level bridge's frame: capped at LEVEL_CAP, the gain ramped from the
        last frame's (from 0 for the first: a fade-in)."""
        peak = max(pcm[1::2].translate(_MAGNITUDE))
        target = UNITY if peak <= LEVEL_CAP else LEVEL_CAP * UNITY // peak
        g0 = self.gain
        if target < g0:  # attack: down within ATTACK samples, the rest at the new gain
            self.gain = target
            return pack(ramp(samples(pcm), g0, target, ATTACK))
        g1 = target if g0 == 0 else min(target, g0 + LEVEL_RELEASE)
        self.gain = g1
        if g0 == g1 == UNITY:
            return pcm
        return pack(ramp(samples(pcm), g0, g1))


def ramp(a: array[int], g0: int, g1: int, over: int = 0) -> array[int]:
    """Samples scaled by a gain (Q8) going linearly from g0 to g1 over the first
    `over` samples (0: the whole frame), then g1."""
    n = min(over, len(a)) if over else len(a)
    if g0 == g1 or n == 0:
        return array("h", [(v * g1) >> 8 for v in a])
    d = g1 - g0
    head = [(v * (g0 + d * i // n)) >> 8 for i, v in enumerate(a[:n])]
    return array("h", head + [(v * g1) >> 8 for v in a[n:]])


_LOUD: dict[str, bytes] = {}


def _loud_table(codec: str) -> bytes:
    """A translate table: G.711 code -> 1 if its sample is at least QUIET."""
    table = _LOUD.get(codec)
    if table is None:
        values = samples(CODECS[codec].decode(bytes(range(256))))
        table = _LOUD[codec] = bytes(int(abs(v) >= QUIET) for v in values)
    return table


class _Clip:
    __slots__ = ("loop", "on_done", "pcm", "pos", "to")

    def __init__(self, pcm: bytes, loop: bool, to: Member | None, on_done: ClipDone | None) -> None:
        self.pcm = pcm
        self.loop = loop
        self.pos = 0
        self.to = to
        self.on_done = on_done

    def frame(self) -> bytes | None:
        pcm = self.pcm
        if self.pos >= len(pcm):
            if not self.loop:
                return None
            self.pos = 0
        out = pcm[self.pos : self.pos + FRAME_BYTES]
        self.pos += FRAME_BYTES
        while len(out) < FRAME_BYTES:
            if self.loop:
                self.pos = FRAME_BYTES - len(out)
                out += pcm[: self.pos]
            else:
                out += bytes(FRAME_BYTES - len(out))
        return out


class MixBridge:
    """Legs of one engine mixed together (see the module docstring).

    ``max_members`` (1..256) bounds the size; ``max_speakers`` (1..256) how many
    of the loudest speakers are mixed each tick; ``tap``: listen only (the members'
    legs keep their output, nothing is sent: the mix is for ``record``); ``level``:
    even out the members' levels, fade joins and leaves (see the module docstring)."""

    def __init__(
        self,
        engine: MediaEngine,
        max_members: int = MAX_MEMBERS,
        max_speakers: int = 8,
        *,
        tap: bool = False,
        level: bool = False,
    ) -> None:
        if not 1 <= max_members <= 256:
            raise MediaError("max_members must be 1..256")
        if not 1 <= max_speakers <= 256:
            raise MediaError("max_speakers must be 1..256")
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop = engine.loop
        self.max_members = max_members
        self.max_speakers = max_speakers
        self.tap = tap
        self.level = level
        self._members: dict[MediaLeg, Member] = {}
        self._clips: list[_Clip] = []
        self._recorder: Recorder | None = None
        # Called with every tick's mix (20 ms of 16-bit PCM, silence too): a multicast
        # page's sender (media/multicast.py).
        self.listeners: list[Callable[[bytes], None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._t0 = 0.0
        self._k = 0
        self.ticks = 0
        self.closed = False

    # ------------------------------------------------------------------
    # Membership

    def add(self, leg: MediaLeg, *, muted: bool = False, deaf: bool = False) -> None:
        """Join ``leg`` (negotiated, G.711): it hears the others' mix from the next
        tick (unless it is playing a prompt of its own: then after it).  MediaError:
        closed bridge or leg, leg not negotiated, codec the bridge cannot decode,
        already in a bridge, or the bridge is full (503)."""
        if self.closed:
            raise MediaError("the bridge is closed")
        if leg.closed:
            raise MediaError("the leg is closed")
        if leg.engine is not self.engine:
            raise MediaError("the leg belongs to another media engine")
        if leg.stream is None:
            raise MediaError("the leg has nothing negotiated yet")
        codec = CODECS.get(leg.codec)
        if codec is None or codec.clock_rate != 8000:
            raise MediaError(f"cannot mix a {leg.codec} stream (G.711 only)", 488)
        if leg._mix is not None:
            raise MediaError("the leg is already in a bridge")
        if len(self._members) >= self.max_members:
            raise MediaError(f"the bridge is full ({self.max_members} members)", 503)
        member = Member(self, leg, muted, deaf)
        self._members[leg] = member
        leg._mix = member
        if not self.tap:  # a listening bridge leaves the leg's output as it is
            leg._resync = True
            if leg.mode == "source":
                leg._pending_mode = "mix"
            else:
                leg._set_mode("mix")
        self._start()

    def remove(self, leg: MediaLeg) -> None:
        """Take ``leg`` out (no error if it is not in); it goes back to silent, or
        to relaying its partner when it is a leg of an AnchoredCall (after the
        prompt it may be playing).  Clips aimed at it stop."""
        member = self._members.pop(leg, None)
        if member is None:
            return
        leg._mix = None
        self._clips = [c for c in self._clips if c.to is not member]
        if self.level and member.playing and member.gain and self._members:
            self._fade_out(member)
        for other in self._members.values():
            if other.heard_by is not None and leg in other.heard_by:
                other.heard_by = other.heard_by - {leg}
        back = "relay" if leg.partner is not None else "silent"
        if leg.mode == "mix":
            leg._set_mode(back)
        elif leg._pending_mode == "mix":
            leg._pending_mode = back
        if not self._members and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fade_out(self, member: Member) -> None:
        """What a leaving member still had buffered, faded out over one frame and
        heard by those left (no click when someone leaves mid-sentence)."""
        pcm = member.pull()
        if pcm is None or member.muted or member.heard_by is not None:
            return
        if len(self._clips) < MAX_CLIPS:
            self._clips.append(_Clip(pack(ramp(samples(pcm), member.gain, 0)), False, None, None))

    def mute(self, leg: MediaLeg, on: bool = True) -> None:
        """Muted: the member talks into the bridge but nobody hears it."""
        self._member(leg).muted = on

    def deafen(self, leg: MediaLeg, on: bool = True) -> None:
        """Deaf: the member hears silence, but for clips played ``to`` it alone
        (and its own leg's prompts)."""
        self._member(leg).deaf = on

    def whisper(self, leg: MediaLeg, to: Iterable[MediaLeg] | None) -> None:
        """Only the members ``to`` hear ``leg`` (coaching); ``None``: everyone again."""
        member = self._member(leg)
        if to is None:
            member.heard_by = None
            return
        targets = frozenset(to)
        missing = [t for t in targets if t not in self._members]
        if missing:
            raise MediaError("whisper to a leg that is not in the bridge")
        member.heard_by = targets

    def _member(self, leg: MediaLeg) -> Member:
        member = self._members.get(leg)
        if member is None:
            raise MediaError("the leg is not in this bridge")
        return member

    @property
    def legs(self) -> list[MediaLeg]:
        return list(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, leg: object) -> bool:
        return leg in self._members

    def stats(self) -> dict[str, int]:
        """For ``pbx status``: members, ticks run, frames shed to bound the delay
        and packets dropped (empty or over 120 ms), summed over the members."""
        members = self._members.values()
        return {
            "members": len(self._members),
            "ticks": self.ticks,
            "shed": sum(m.shed for m in members),
            "dropped": sum(m.dropped for m in members),
        }

    @property
    def ticking(self) -> bool:
        """Whether a tick is scheduled (only while there are members)."""
        return self._timer is not None

    # ------------------------------------------------------------------
    # Clips

    def play(
        self,
        audio: Audio | str | Path,
        *,
        to: MediaLeg | None = None,
        loop: bool = False,
        on_done: ClipDone | None = None,
    ) -> None:
        """Mix a clip (an Audio or a WAV path) over the conference, into everyone's
        ear (deaf members excepted, and into a recording of the bridge) or only
        ``to``'s (even when deaf).  ``on_done()`` when it ends (not on
        ``stop_play`` or removal).  Up to ``MAX_CLIPS`` at once; MediaError beyond,
        or for a bad file."""
        member = self._member(to) if to is not None else None
        if len(self._clips) >= MAX_CLIPS:
            raise MediaError(f"already {MAX_CLIPS} clips playing in this bridge")
        clip = audio if isinstance(audio, Audio) else self.engine.load(audio)
        if clip.samples == 0 and loop:
            raise MediaError(f"cannot loop the empty clip {clip.name!r}")
        self._clips.append(_Clip(clip.pcm, loop, member, on_done))

    def beep(self, *, to: MediaLeg | None = None, leave: bool = False) -> None:
        """A short two-note beep: rising (someone joined) or falling (``leave``)."""
        self.play(_LEAVE if leave else _JOIN, to=to)

    def stop_play(self, to: MediaLeg | None = None) -> None:
        """Stop the clips played to everyone (``to`` None) or to ``to``."""
        member = self._members.get(to) if to is not None else None
        self._clips = [c for c in self._clips if c.to is not member]

    # ------------------------------------------------------------------
    # Recording the mix

    def record(
        self,
        path: str | Path,
        fmt: str = "pcm",
        max_seconds: float | None = None,
        on_done: RecordDone | None = None,
    ) -> None:
        """Record what the bridge carries (every speaker heard publicly and clips
        played to everyone; not whispers) as MediaLeg.record does; it ends at
        ``max_seconds``, ``stop_record`` or ``close``.  Ticks only run while there
        are members: time with an empty bridge is not in the file."""
        if self.closed:
            raise MediaError("the bridge is closed")
        if self._recorder is not None:
            raise MediaError("this bridge is already recording")
        self._recorder = Recorder(Path(path), fmt, max_seconds=max_seconds, on_done=on_done)

    def stop_record(self) -> Path | None:
        """Finish the recording of the mix; its path (None if none or it failed)."""
        return self._end_record("stopped")

    def _end_record(self, reason: str) -> Path | None:
        rec = self._recorder
        if rec is None:
            return None
        self._recorder = None
        result = rec.close(reason)
        rec.notify(result)
        return result.path

    def close(self) -> None:
        """Remove every member (their legs go silent, they stay open), drop the
        clips, finish a recording (reason "closed").  Idempotent."""
        if self.closed:
            return
        for leg in list(self._members):
            self.remove(leg)
        self._clips.clear()
        self.listeners.clear()
        self._end_record("closed")
        self.closed = True

    # ------------------------------------------------------------------
    # The tick

    def _start(self) -> None:
        if self._timer is None:
            self._t0 = self.loop.time()
            self._k = 0
            self._tick()

    def _tick(self) -> None:
        self._timer = None
        if not self._members:
            return
        now = self.loop.time()
        step = PTIME / 1000
        due = self._t0 + self._k * step
        if now - due > STALL:  # the loop stalled: restart the clock, don't burst
            self._t0 = due = now
            self._k = 0
        done: list[ClipDone] = []
        while due <= now + 0.002:
            try:
                self.mix_once(now, done)
            except Exception:
                log.exception("bridge tick failed")
            self._k += 1
            due = self._t0 + self._k * step
        if self._members:
            self._timer = self.loop.call_at(due, self._tick)
        for cb in done:
            try:
                cb()
            except Exception:
                log.exception("bridge clip callback failed")

    def mix_once(self, now: float, done: list[ClipDone] | None = None) -> None:
        """One 20 ms frame for every member (the tick's work; public for the bench)."""
        self.ticks += 1
        members = list(self._members.values())
        talk: list[tuple[Member, bytes]] = []
        whispers: list[tuple[Member, array[int]]] = []
        level = self.level
        for m in members:
            pcm = m.pull()
            if pcm is None or m.muted:
                continue
            if level:
                pcm = m.leveled(pcm)
            if m.heard_by is None:
                talk.append((m, pcm))
            else:
                whispers.append((m, samples(pcm)))
        if len(talk) > self.max_speakers:
            talk.sort(key=_peak, reverse=True)
            del talk[self.max_speakers :]
        public = {m: samples(pcm) for m, pcm in talk}
        # Clips: to everyone (part of the public mix) or to one member.
        shared: list[array[int]] = []
        private: dict[Member, list[array[int]]] = {}
        if self._clips:
            for clip in list(self._clips):
                f = clip.frame()
                if f is None:
                    self._clips.remove(clip)
                    if clip.on_done is not None and done is not None:
                        done.append(clip.on_done)
                    continue
                if clip.to is None:
                    shared.append(samples(f))
                else:
                    private.setdefault(clip.to, []).append(samples(f))
        parts = [*public.values(), *shared]
        total = sum_frames(parts) if parts else None
        everyone = pack(saturate(total)) if total is not None else bytes(FRAME_BYTES)
        encoded: dict[str, bytes] = {}  # the public mix (or silence) per codec
        silence: dict[str, bytes] = {}
        rec = self._recorder
        if rec is not None:
            self._record(rec, everyone)
        for listener in self.listeners:
            listener(everyone)
        if self.tap:
            return  # a listening bridge sends nothing
        for m in members:
            leg = m.leg
            if leg.mode != "mix" or not leg.sendable:
                continue
            codec = CODECS.get(leg.codec)
            if codec is None:
                continue  # renegotiated to something the bridge cannot encode
            if m.deaf:  # only its own clips
                mine = private.get(m)
                if mine is not None:
                    payload = codec.encode(pack(saturate(sum_frames(mine))))
                else:
                    found = silence.get(codec.name)
                    if found is None:
                        found = silence[codec.name] = codec.encode(bytes(FRAME_BYTES))
                    payload = found
                leg._send_frame(payload, FRAME, now)
                continue
            own = public.get(m)
            extra = [a for w, a in whispers if w is not m and leg in (w.heard_by or ())]
            extra += private.get(m, ())
            if own is None and not extra:
                shared_mix = encoded.get(codec.name)
                if shared_mix is None:
                    shared_mix = encoded[codec.name] = codec.encode(everyone)
                payload = shared_mix
            else:
                vals = total
                if own is not None and vals is not None:
                    vals = list(map(operator.sub, vals, own)) if len(parts) > 1 else None
                if extra:
                    more = sum_frames(extra)
                    vals = list(map(operator.add, vals, more)) if vals is not None else more
                pcm = pack(saturate(vals)) if vals is not None else bytes(FRAME_BYTES)
                payload = codec.encode(pcm)
            leg._send_frame(payload, FRAME, now)

    def _record(self, rec: Recorder, pcm: bytes) -> None:
        try:
            reason = rec.write_pcm(pcm)
        except OSError as exc:
            log.warning("recording %s failed: %s", rec.path, exc)
            reason = "error"
        if reason is not None:
            self._end_record(reason)


_MAGNITUDE = bytes(b if b < 128 else 255 - b for b in range(256))  # of a high byte


def _peak(talker: tuple[Member, bytes]) -> int:
    """A frame's peak to 1/128 of full scale, from its high bytes (cheap)."""
    return max(talker[1][1::2].translate(_MAGNITUDE))


_JOIN = _beep(660.0, 880.0)
_LEAVE = _beep(880.0, 660.0)
_ERROR = _beep(330.0, 330.0, 330.0)
_BEEPS = {"on": _JOIN, "off": _LEAVE, "error": _ERROR}


def beep_clip(kind: str) -> Audio:
    """The short beeps: ``on`` (rising: joined, recording), ``off`` (falling),
    ``error`` (three low notes). MediaError for another kind."""
    clip = _BEEPS.get(kind)
    if clip is None:
        raise MediaError(f"no beep {kind!r} (have {', '.join(_BEEPS)})")
    return clip
