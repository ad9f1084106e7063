"""One RTP stream between the PBX and a phone: sockets, latching, relay, own output.

Theory of operation
-------------------
A leg owns a bound RTP socket (even port) and RTCP socket (odd port), read with
``loop.add_reader`` into one receive buffer shared by the whole engine (stock
asyncio datagram transports allocate 256 KiB per datagram).  Each wake-up drains
up to ``BATCH`` datagrams and reads the clock once.

Symmetric RTP (RFC 4961): a leg sends to the address its phone's packets come from
("latching"), which gets through NAT.  Before it has latched it sends to the SDP
address, or, for a phone behind NAT (``nat_peer``: its public SIP address) whose SDP
names a private address, to that address and the SDP port (Kamailio's
fix_nated_sdp).  The source is learned once per offer/answer (media/latch.py); after
that, packets from elsewhere are dropped (``stray``).  RTCP likewise: from the RTP
source's host, or carrying the latched SSRC.

Each leg's output comes from exactly one place (``mode``):

* ``relay``  — what the partner leg receives, forwarded straight from the receive
  buffer: the header is rewritten in place (our SSRC; sequence number and timestamp
  shifted by offsets chosen so they continue where our last packet left off, marker
  bit set after a switch), the payload type mapped and the payload translated
  µ-law↔A-law with one ``bytes.translate`` when the legs disagree;
* ``source`` — a player, tone or DTMF tone, paced from a fixed start time
  (frame k goes at t0 + k·ptime, so timer lateness never accumulates);
* ``echo``   — what this leg receives, sent back to it;
* ``silent`` — nothing (the partner is on hold and there is no music);
* ``mix``    — what a MixBridge (media/bridge.py) sends it: the others' mix.  A
  bridge member also hands what it receives to the bridge (``_mix``).

Telephone-events (RFC 4733) are followed with ``Rfc4733Receiver`` and reported as
DtmfEvent; they are forwarded when the partner negotiated telephone-event, and
turned into in-band tones otherwise.  In-band detection, recording and a bridge
decode the incoming G.711 only while switched on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pbx_core.media import negotiation as neg
from pbx_core.media import rtcp
from pbx_core.media.audio import Audio, AudioSource, Interrupt, Source, dtmf_audio
from pbx_core.media.codecs import CODECS
from pbx_core.media.dtmf import InbandDetector, Rfc4733Receiver, rfc4733_packets
from pbx_core.media.errors import MediaError, RtpError
from pbx_core.media.events import DtmfEvent, DtmfSource, LegStats
from pbx_core.media.latch import Learner, private
from pbx_core.media.recorder import DoneCallback, RecordDone, Recorder
from pbx_core.media.rtp import ReceptionStats

if TYPE_CHECKING:
    from pbx_core.media.bridge import Member
    from pbx_core.media.engine import MediaEngine

log = logging.getLogger("pbx.media")

__all__ = ["MediaLeg"]

BATCH = 64
TE_EXPIRE = 0.25  # seconds without telephone-event packets that end an event
_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_ICMP_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)

DtmfCallback = Callable[[DtmfEvent], None]


def _jitter_factor() -> float:
    # RFC 3550 §6.3.1 randomises the report interval; timing, not secrecy.
    return random.uniform(0.5, 1.5)  # noqa: S311


class MediaLeg:
    """The PBX's end of one phone's RTP stream (see the module docstring)."""

    def __init__(
        self,
        engine: MediaEngine,
        side: str,
        port: int,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        address: str | None = None,
    ) -> None:
        self.engine = engine
        self.loop = engine.loop
        self.side = side
        self.port = port
        self._rtp = rtp_sock
        self._rtcp = rtcp_sock
        self.address = address or engine.address  # what our SDP on this leg names
        self.local = neg.LocalSession(self.address, random.getrandbits(31))
        self.nat_peer: str | None = None  # the phone's public SIP address, when NATed
        self.closed = False
        # What was negotiated with the phone.
        self.stream: neg.Stream | None = None
        self.codec = "PCMU"  # name of the codec we send
        self.pt = 0
        self.te_pt: int | None = None
        self.ptime = 20
        self.held = False  # the phone put us on hold (it will not listen)
        self.pending_offer: bytes | None = None  # ours, while its answer is awaited
        self._pts: dict[int, str] = {}  # payload types the phone may send -> codec name
        # Where to send.
        self.remote: tuple[str, int] | None = None
        self.rtcp_remote: tuple[str, int] | None = None
        self.latched = False
        self._latched_ssrc = -1
        self._learner = Learner()  # once per offer/answer (media/latch.py)
        self._rtcp_learning = True
        self.stray = 0  # packets dropped: not from the latched source
        # Receive side.
        self.rx = ReceptionStats(8000)
        self.rx_packets = 0
        self.rx_bytes = 0
        self.malformed = 0
        self.last_rx = self.loop.time()
        self._te = Rfc4733Receiver()
        self._te_last = 0.0
        self._inband: InbandDetector | None = None
        self._recorder: Recorder | None = None
        self._mix: Member | None = None  # set while the leg is in a MixBridge
        self._dtmf_callbacks: list[DtmfCallback] = []
        # Send side.
        self.ssrc = random.getrandbits(32)
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._last_send = self.loop.time()
        self.tx_packets = 0
        self.tx_bytes = 0
        self._rtcp_packets = 0  # packets sent at our last SR, for the next one
        # Output.
        self.mode = "relay"
        self.partner: MediaLeg | None = None  # the other leg of an anchored call
        self._forward_to: MediaLeg | None = None  # who receives what this leg receives
        self._fwd: dict[int, tuple[int, bytes | None]] = {}  # in pt -> (out pt, table)
        self._resync = True  # next forwarded packet starts a new run (offsets, marker)
        self._seq_off = 0
        self._ts_off = 0
        self._fwd_ssrc = -1
        self._source: Source | None = None
        self._source_done: DoneCallback | None = None
        self._pacer: asyncio.TimerHandle | None = None
        self._pace_t0 = 0.0
        self._pace_k = 0
        self._pending_mode = "relay"  # what to return to when a source ends
        self._dtmf_out: asyncio.TimerHandle | None = None
        # RTCP.
        self._sr_ntp_mid = 0  # middle 32 bits of the last SR received
        self._sr_arrival = 0.0
        self.remote_lost: int | None = None
        self.remote_jitter: int | None = None
        self.rtt: float | None = None
        self.next_rtcp = self.loop.time() + engine.settings.rtcp_interval * _jitter_factor()
        self.inactivity: float | None = None
        self._inactivity_cb: Callable[[MediaLeg], None] | None = None
        self._inactive_reported = False
        self.loop.add_reader(rtp_sock.fileno(), self._rtp_readable)
        self.loop.add_reader(rtcp_sock.fileno(), self._rtcp_readable)

    # ------------------------------------------------------------------
    # Negotiated state

    def _apply(self, stream: neg.Stream, choice: neg.Choice, we_answered: bool = True) -> None:
        """Take the phone's SDP (its address and codecs) and the codec we send.  When
        the PBX wrote the answer, only the answered codec is in use on this leg
        (RFC 3264 §6.1); when the phone answered, every codec of its answer is."""
        old = self.stream
        self.stream = stream
        self.pt = choice.pt
        self.codec = choice.rtpmap.encoding.upper()
        self.te_pt = choice.te_pt
        self.ptime = stream.ptime or 20
        if we_answered:
            self._pts = {choice.pt: self.codec}
        else:
            self._pts = {pt: m.encoding.upper() for pt, m in stream.codecs.items()}
        self.held = stream.held
        if (
            old is None
            or (old.address, old.port) != (stream.address, stream.port)
            or self.remote is None
        ):
            if stream.receives or stream.sends:
                addr = self._send_host(stream.address)
                self.remote = (addr, stream.port) if stream.port else None
                self.rtcp_remote = (addr, stream.port + 1) if stream.port else None
            self._latched_ssrc = -1
        # Every offer/answer opens learning again (the phone may have moved); until a
        # source is latched we keep sending where we did, and the latched source's
        # next packet closes the window at once.
        self.latched = False
        self._learner.reopen()
        self._rtcp_learning = True
        if self.te_pt is None and self.codec in CODECS and self.engine.settings.inband_dtmf:
            self.detect_inband(True)
        self.last_rx = self.loop.time()
        self._inactive_reported = False

    @property
    def sendable(self) -> bool:
        return self.remote is not None and not self.held and not self.closed

    # ------------------------------------------------------------------
    # Receiving

    def _send_host(self, sdp_address: str) -> str:
        """Where to send before latching: the SDP address, or the NATed phone's
        public address when the SDP names a private one it cannot mean for us."""
        peer = self.nat_peer
        if peer is None or peer == sdp_address or not private(sdp_address):
            return sdp_address
        return peer

    def set_address(self, address: str) -> None:
        """Advertise another address on this leg from now on (the B2BUA's choice for
        the phone that answered a forked call)."""
        self.address = address
        self.local.origin.address = address
        self.local.origin.addrtype = "IP6" if ":" in address else "IP4"

    def _latch(self, addr: tuple[str, int], ssrc: int, seq: int, pt: int) -> bool:
        """Learning (media/latch.py): True when the packet is from the source this
        leg now latches to."""
        if pt not in self._pts and pt != self.te_pt:
            return False  # not what was negotiated on this leg: proves nothing
        remote = self.remote
        expected = remote is not None and addr[:2] == remote[:2]
        if not self._learner.learn(addr, ssrc, seq, expected):
            return False
        if not expected:
            log.info("leg %s port %d latched %s -> %s", self.side, self.port, remote, addr)
        # The address as the socket reports it (IPv6: a 4-tuple), so the next
        # packet's source compares equal to it on the fast path.
        self.remote = addr
        self.latched = True
        self._latched_ssrc = ssrc
        if self._rtcp_learning:
            self.rtcp_remote = (addr[0], addr[1] + 1, *addr[2:])
        return True

    def _rtp_readable(self) -> None:
        if self.closed:
            return
        sock = self._rtp
        buf = self.engine.buffer
        view = self.engine.view
        now = self.loop.time()
        got = 0
        for _ in range(BATCH):
            try:
                n, addr = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _ICMP_ERRORS:
                    continue
                log.warning("RTP port %d: %s", self.port, exc)
                break
            if n < 12 or buf[0] & 0xC0 != 0x80:
                self.malformed += 1
                continue
            b1 = buf[1]
            pt = b1 & 0x7F
            if 72 <= pt <= 76:  # RTCP multiplexed on the RTP port (RFC 5761): not ours
                continue
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(buf, 2)
            if (addr != self.remote or not self.latched) and not self._latch(addr, ssrc, seq, pt):
                self.stray += 1  # a stranger, or not yet learned
                continue
            got += 1
            self.rx_bytes += n
            self.rx.update(ssrc, seq, ts, now)
            b0 = buf[0]
            start = 12 + 4 * (b0 & 0x0F)
            end = n
            if b0 & 0x30:  # extension or padding: the slow way
                if b0 & 0x10:
                    if n < start + 4:
                        self.malformed += 1
                        continue
                    start += 4 + 4 * ((buf[start + 2] << 8) | buf[start + 3])
                if b0 & 0x20:
                    end -= buf[n - 1]
            if end < start:  # a CSRC count, extension or padding past the datagram
                self.malformed += 1
                continue
            if pt == self.te_pt:
                self._telephone_event(ts, bytes(view[start:end]), now)
                target = self._forward_to
                if target is not None and target.te_pt is not None:
                    target._forward(
                        buf, view, start, end, b1 & 0x80, seq, ts, ssrc, target.te_pt, None, now
                    )
                continue
            if self._inband is not None or self._recorder is not None or self._mix is not None:
                self._consume(pt, seq, ts, bytes(view[start:end]))
            target = self._forward_to
            if target is not None:
                entry = target._fwd.get(pt) if target is not self else (pt, None)
                if entry is not None:
                    target._forward(
                        buf, view, start, end, b1 & 0x80, seq, ts, ssrc, entry[0], entry[1], now
                    )
        if got:
            self.rx_packets += got
            self.last_rx = now
            self._inactive_reported = False

    def _forward(
        self,
        buf: bytearray,
        view: memoryview,
        start: int,
        end: int,
        marker: int,
        seq: int,
        ts: int,
        ssrc: int,
        pt: int,
        table: bytes | None,
        now: float,
    ) -> None:
        """Send a received packet out of this leg (header rewritten in place)."""
        remote = self.remote
        if remote is None or self.held or self.closed:
            return
        if self._resync or ssrc != self._fwd_ssrc:
            # A new run: continue our own numbering from where it stopped.
            elapsed = int((now - self._last_send) * 8000)
            self._seq_off = (self._seq + 1 - seq) & 0xFFFF
            self._ts_off = (self._ts + max(elapsed, 1) - ts) & 0xFFFFFFFF
            self._fwd_ssrc = ssrc
            self._resync = False
            marker = 0x80
        out_seq = (seq + self._seq_off) & 0xFFFF
        out_ts = (ts + self._ts_off) & 0xFFFFFFFF
        self._seq = out_seq
        self._ts = out_ts
        self._last_send = now
        h = start - 12
        if table is not None:
            buf[start:end] = buf[start:end].translate(table)
        _HDR.pack_into(buf, h, 0x80, marker | pt, out_seq, out_ts, self.ssrc)
        try:
            self._rtp.sendto(view[h:end], remote)
        except (BlockingIOError, InterruptedError):
            self.engine.send_drops += 1
            return
        except OSError as exc:
            if exc.errno not in _ICMP_ERRORS:
                log.warning("RTP port %d send to %s: %s", self.port, remote, exc)
            return
        self.tx_packets += 1
        self.tx_bytes += end - h

    def _consume(self, pt: int, seq: int, ts: int, payload: bytes) -> None:
        codec = self._pts.get(pt)
        if codec not in CODECS:
            return
        if self._inband is not None:
            for digit in self._inband.feed(CODECS[codec].decode(payload)):
                self._emit(DtmfEvent(digit, DtmfSource.INBAND, None, self.side))
        if self._mix is not None:
            self._mix.put(ts, payload, codec)
        rec = self._recorder
        if rec is not None:
            try:
                reason = rec.feed(codec, ts, payload)
            except OSError as exc:
                log.warning("recording %s failed: %s", rec.path, exc)
                reason = "error"
            if reason is not None:
                self._end_record(reason)

    def _telephone_event(self, ts: int, payload: bytes, now: float) -> None:
        try:
            started, ended = self._te.feed(ts, payload)
        except MediaError:
            self.malformed += 1
            return
        self._te_last = now
        if started is not None:
            self._emit(DtmfEvent(started, DtmfSource.RFC4733, None, self.side))
            target = self._forward_to
            if target is not None and target is not self and target.te_pt is None:
                target._inband_digit(started, self)
        del ended

    def _inband_digit(self, digit: str, origin: MediaLeg) -> None:
        """Play a key press as tones on this leg (its phone has no telephone-event),
        for as long as the origin keeps sending the event."""
        if self.codec not in CODECS:
            return
        clip = dtmf_audio(digit, 2000)
        src = _HeldTone(AudioSource(clip), origin)
        self._play_source(src, None, temporary=True)

    def _emit(self, event: DtmfEvent) -> None:
        rec = self._recorder
        if rec is not None and event.digit in rec.terminators:
            self._end_record("key", event.digit)
        for cb in list(self._dtmf_callbacks):
            try:
                cb(event)
            except Exception:
                log.exception("DTMF callback failed")

    def _rtcp_readable(self) -> None:
        if self.closed:
            return
        buf = self.engine.buffer
        for _ in range(BATCH):
            try:
                n, addr = self._rtcp.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ICMP_ERRORS:
                    continue
                return
            try:
                packets = rtcp.parse_rtcp(bytes(buf[:n]))
            except RtpError:
                self.malformed += 1
                continue
            if (addr != self.rtcp_remote or self._rtcp_learning) and not self._rtcp_from_phone(
                addr, packets
            ):
                self.stray += 1
                continue
            now = self.loop.time()
            self.last_rx = now
            self._inactive_reported = False
            ntp_now = rtcp.ntp_from_unix(time.time())
            for p in packets:
                if isinstance(p, rtcp.SenderReport):
                    self._sr_ntp_mid = rtcp.ntp_middle(p.ntp)
                    self._sr_arrival = now
                if isinstance(p, rtcp.SenderReport | rtcp.ReceiverReport):
                    for block in p.reports:
                        if block.ssrc == self.ssrc:
                            self.remote_lost = block.cumulative_lost
                            self.remote_jitter = block.jitter
                            rtt = rtcp.round_trip(block, ntp_now)
                            if rtt is not None:
                                self.rtt = rtt

    def _rtcp_from_phone(self, addr: tuple[str, int], packets: list[rtcp.RtcpPacket]) -> bool:
        """RTCP learning: while the window is open, the first compound from the
        RTP source's host (latched, else where we send) or carrying the latched SSRC
        fixes where our reports go; after that only that address is heard."""
        if not self._rtcp_learning:
            return False
        first = packets[0] if packets else None
        ssrc = first.ssrc if isinstance(first, rtcp.SenderReport | rtcp.ReceiverReport) else -1
        host = self.remote[0] if self.remote is not None else None
        if addr[0] != host and (ssrc < 0 or ssrc != self._latched_ssrc):
            return False
        self.rtcp_remote = (addr[0], addr[1])
        self._rtcp_learning = False
        return True

    # ------------------------------------------------------------------
    # Periodic work (called by the engine's housekeeping tick)

    def send_rtcp(self, now: float) -> None:
        self.next_rtcp = now + self.engine.settings.rtcp_interval * _jitter_factor()
        if self.rtcp_remote is None or self.closed:
            return
        blocks: tuple[rtcp.ReportBlock, ...] = ()
        if self.rx.started:
            fraction, lost = self.rx.interval_report()
            lsr = self._sr_ntp_mid
            dlsr = int((now - self._sr_arrival) * 65536) if lsr else 0
            blocks = (
                rtcp.ReportBlock(
                    self.rx.ssrc,
                    fraction,
                    lost,
                    self.rx.extended_max,
                    int(self.rx.jitter),
                    lsr,
                    dlsr & 0xFFFFFFFF,
                ),
            )
        first: rtcp.SenderReport | rtcp.ReceiverReport
        if self.tx_packets != self._rtcp_packets:
            self._rtcp_packets = self.tx_packets
            ts = (self._ts + int((now - self._last_send) * 8000)) & 0xFFFFFFFF
            first = rtcp.SenderReport(
                self.ssrc,
                rtcp.ntp_from_unix(time.time()),
                ts,
                self.tx_packets,
                self.tx_bytes - 12 * self.tx_packets,
                blocks,
            )
        else:
            first = rtcp.ReceiverReport(self.ssrc, blocks)
        sdes = rtcp.Sdes(((self.ssrc, {rtcp.SDES_CNAME: self.engine.cname}),))
        with contextlib.suppress(OSError):  # unreachable peer: the next report retries
            self._rtcp.sendto(rtcp.build_compound([first, sdes]), self.rtcp_remote)

    def check_inactive(self, now: float) -> None:
        if self.inactivity is None or self._inactive_reported or self._inactivity_cb is None:
            return
        stream = self.stream
        if stream is None or not stream.sends:
            return  # not negotiated yet, or the phone said it would not send
        if now - self.last_rx >= self.inactivity:
            self._inactive_reported = True
            try:
                self._inactivity_cb(self)
            except Exception:
                log.exception("inactivity callback failed")

    # ------------------------------------------------------------------
    # Output

    def _set_mode(self, mode: str) -> None:
        self.mode = mode
        self.engine.rewire(self)

    def _play_source(
        self, src: Source, on_done: DoneCallback | None, temporary: bool = False
    ) -> None:
        if self.closed:
            raise MediaError("the leg is closed")
        if self.codec not in CODECS:
            raise MediaError(f"cannot play into a {self.codec} stream (G.711 only)")
        if not temporary or self._source is None:
            self._pending_mode = self.mode if self.mode != "source" else self._pending_mode
        if self._source is not None and not temporary:
            self._finish_source(notify=False)  # replaced, as by stop_play
        if temporary and self._source is not None and not isinstance(self._source, _HeldTone):
            src = Interrupt(src, self._source)
            on_done = self._source_done
        self._source = src
        self._source_done = on_done
        if self.mode != "source":
            self._set_mode("source")
        if self._pacer is None:
            now = self.loop.time()
            self._pace_t0 = now
            self._pace_k = 0
            self._resync = True
            self._pace()

    def _pace(self) -> None:
        self._pacer = None
        src = self._source
        if src is None or self.closed:
            return
        now = self.loop.time()
        step = self.ptime / 1000
        samples = self.ptime * 8
        due = self._pace_t0 + self._pace_k * step
        if now - due > 0.2:  # the loop stalled: restart the clock, don't burst
            self._pace_t0 = now
            self._pace_k = 0
            due = now
        while due <= now + 0.002:
            frame = src.frame(self.codec, samples)
            if frame is None:
                self._finish_source(notify=True)
                return
            self._send_frame(frame, samples, now)
            self._pace_k += 1
            due = self._pace_t0 + self._pace_k * step
        self._pacer = self.loop.call_at(due, self._pace)

    def _send_frame(self, payload: bytes, samples: int, now: float) -> None:
        marker = 0
        if self._resync:
            self._ts = (self._ts + max(int((now - self._last_send) * 8000), samples)) & 0xFFFFFFFF
            self._resync = False
            marker = 0x80
        else:
            self._ts = (self._ts + samples) & 0xFFFFFFFF
        self._seq = (self._seq + 1) & 0xFFFF
        self._send_packet(marker | self.pt, payload, now)

    def _send_packet(self, b1: int, payload: bytes, now: float) -> None:
        self._last_send = now
        if not self.sendable or self.remote is None:
            return
        packet = _HDR.pack(0x80, b1, self._seq, self._ts, self.ssrc) + payload
        try:
            self._rtp.sendto(packet, self.remote)
        except OSError:
            self.engine.send_drops += 1
            return
        self.tx_packets += 1
        self.tx_bytes += len(packet)

    def _finish_source(self, notify: bool) -> None:
        done = self._source_done
        self._source = None
        self._source_done = None
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None
        self._resync = True
        self._fwd_ssrc = -1
        if self.mode == "source":
            self._set_mode(self._pending_mode)
        if notify and done is not None:
            try:
                done()
            except Exception:
                log.exception("play callback failed")

    # ------------------------------------------------------------------
    # Public API

    def play(
        self,
        audio: Audio | str | Path,
        loop: bool = False,
        on_done: DoneCallback | None = None,
    ) -> None:
        """Play a clip (an Audio or a WAV path) to this leg's phone, replacing what it
        hears until the clip ends (``on_done`` is called then) or ``stop_play``."""
        clip = audio if isinstance(audio, Audio) else self.engine.load(audio)
        self._play_source(AudioSource(clip, loop), on_done)

    def tone(
        self, name: str, country: str | None = None, on_done: DoneCallback | None = None
    ) -> None:
        """Play a call-progress tone (ringback, busy, congestion, callwaiting,
        confirmation, dial) with the country's cadence (default: the engine's)."""
        clip, repeat = self.engine.tone_audio(name, country)
        self._play_source(AudioSource(clip, repeat), on_done)

    def stop_play(self) -> None:
        """Stop a player, tone or echo; the leg goes back to what it did before
        (normally relaying the partner).  ``on_done`` is not called."""
        if self._source is not None:
            self._finish_source(notify=False)
        elif self.mode == "echo":
            self._set_mode(self._pending_mode if self._pending_mode != "echo" else "relay")

    @property
    def playing(self) -> bool:
        return self._source is not None

    def echo(self) -> None:
        """Send back to the phone what it sends (the *43 echo test)."""
        if self._source is not None:
            self._finish_source(notify=False)
        back = "mix" if self._mix is not None else "relay" if self.partner else "silent"
        self._pending_mode = back
        self._resync = True
        self._set_mode("echo")

    def record(
        self,
        path: str | Path,
        fmt: str = "pcm",
        max_seconds: float | None = None,
        on_done: RecordDone | None = None,
        *,
        silence_seconds: float | None = None,
        silence_db: float = -42.0,
        initial_silence: float | None = None,
        terminators: str = "",
    ) -> None:
        """Record what the phone sends to a WAV file (8 kHz mono; ``fmt`` "pcm",
        "ulaw" or "alaw").  It ends at ``max_seconds``, after ``silence_seconds``
        quieter than ``silence_db`` following speech (or ``initial_silence`` seconds
        with no speech), at a key in ``terminators`` (e.g. "#"), at ``stop_record``
        or when the leg closes; the file appears then, and ``on_done(Recording)``
        says its path, length and why (media/recorder.py).  MediaError: bad option,
        unwritable path, already recording."""
        if self._recorder is not None or self.closed:
            raise MediaError("this leg is closed or already recording")
        self._recorder = Recorder(
            Path(path),
            fmt,
            max_seconds=max_seconds,
            silence_seconds=silence_seconds,
            silence_db=silence_db,
            initial_silence=initial_silence,
            terminators=terminators,
            on_done=on_done,
        )

    def stop_record(self) -> Path | None:
        """Finish the recording (reason "stopped"); its path, None if not recording
        or the file could not be written."""
        return self._end_record("stopped")

    def _end_record(self, reason: str, digit: str | None = None) -> Path | None:
        rec = self._recorder
        if rec is None:
            return None
        self._recorder = None
        result = rec.close(reason, digit, self.codec if self.codec in CODECS else "PCMU")
        rec.notify(result)
        return result.path

    def unbind(self, keep_callbacks: bool = False) -> None:
        """Free the leg from its call, keeping it open and negotiated with its phone:
        what it plays or echoes stops, it forgets its partner and the callbacks its
        call set, and it sends nothing until told (`MediaEngine.extend`/`join` put it
        in another call; an application plays into it)."""
        if self._source is not None:
            self._finish_source(notify=False)
        self.partner = None
        self._fwd = {}
        if not keep_callbacks:
            self._dtmf_callbacks.clear()
            self._inactivity_cb = None
            self.inactivity = None
        self._pending_mode = "silent"
        self._set_mode("silent")

    def detect_inband(self, on: bool = True) -> None:
        """Switch in-band DTMF detection on the incoming audio (G.711 only)."""
        self._inband = InbandDetector() if on else None

    def on_dtmf(self, callback: DtmfCallback) -> None:
        """Call ``callback(DtmfEvent)`` for each key press the phone sends."""
        self._dtmf_callbacks.append(callback)

    def off_dtmf(self, callback: DtmfCallback) -> None:
        """Stop calling ``callback`` (an application that ended)."""
        if callback in self._dtmf_callbacks:
            self._dtmf_callbacks.remove(callback)

    def on_inactivity(self, seconds: float, callback: Callable[[MediaLeg], None]) -> None:
        """Call ``callback(leg)`` once when no RTP or RTCP came for ``seconds`` while
        the phone should be sending (re-armed by the next packet)."""
        self.inactivity = seconds
        self._inactivity_cb = callback

    def rearm_inactivity(self) -> None:
        """Count the silence from now (a call just answered: nothing was due before)."""
        self.last_rx = self.loop.time()
        self._inactive_reported = False

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        """Send a key press to the phone: RFC 4733 if it negotiated telephone-event,
        else as tones in the audio."""
        if self.te_pt is None:
            if self.codec not in CODECS:
                raise MediaError(f"cannot send in-band DTMF into a {self.codec} stream")
            clip = dtmf_audio(digit.upper(), max(40, duration_ms))
            self._play_source(AudioSource(clip), None, temporary=True)
            return
        packets = rfc4733_packets(digit, duration_ms, self.ptime)
        te_pt = self.te_pt
        event_ts = (
            self._ts + max(int((self.loop.time() - self._last_send) * 8000), 1)
        ) & 0xFFFFFFFF
        self._ts = event_ts
        t0 = self.loop.time()

        def send(payload: bytes, marker: bool) -> None:
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = event_ts
            self._send_packet((0x80 if marker else 0) | te_pt, payload, self.loop.time())

        for offset, payload, marker in packets:
            if offset <= 0:
                send(payload, marker)
            else:
                self.loop.call_at(t0 + offset, send, payload, marker)
        self._resync = True

    def stats(self) -> LegStats:
        expected = self.rx.expected
        return LegStats(
            packets_received=self.rx_packets,
            packets_sent=self.tx_packets,
            bytes_received=self.rx_bytes,
            bytes_sent=self.tx_bytes,
            lost=max(0, self.rx.lost),
            loss_fraction=max(0, self.rx.lost) / expected if expected > 0 else 0.0,
            jitter_ms=self.rx.jitter_seconds * 1000,
            malformed=self.malformed,
            remote_lost=self.remote_lost,
            remote_jitter_ms=self.remote_jitter / 8 if self.remote_jitter is not None else None,
            round_trip_ms=self.rtt * 1000 if self.rtt is not None else None,
            remote_address=f"{self.remote[0]}:{self.remote[1]}" if self.remote else "",
            codec=self.codec,
            stray=self.stray,
        )

    def close(self) -> None:
        """Stop everything and release the ports (idempotent)."""
        if self.closed:
            return
        if self._mix is not None:
            self._mix.bridge.remove(self)
        self._end_record("closed")
        if self._source is not None:
            self._finish_source(notify=False)
        self.closed = True
        self.loop.remove_reader(self._rtp.fileno())
        self.loop.remove_reader(self._rtcp.fileno())
        self._rtp.close()
        self._rtcp.close()
        self.engine.release(self)


class _HeldTone(Source):
    """A DTMF tone that lasts while the far leg's telephone-event does."""

    __slots__ = ("inner", "origin", "played")

    def __init__(self, inner: AudioSource, origin: MediaLeg) -> None:
        self.inner = inner
        self.origin = origin
        self.played = 0

    def frame(self, codec: str, samples: int) -> bytes | None:
        o = self.origin
        ended = o._te.active is None or o.loop.time() - o._te_last > TE_EXPIRE
        if ended and self.played >= 480:  # at least 60 ms of tone
            return None
        self.played += samples
        return self.inner.frame(codec, samples)
