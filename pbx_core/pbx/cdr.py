"""Call accounting: one call detail record (CDR) per call, kept in the state LMDB.

The engine hands every finished call to `CdrQueue.call_ended`; its writer thread
writes the record then (`CdrWriter`), in one short transaction, so an idle PBX
writes nothing. The store keeps the
newest `max_records` (oldest rotated out, in batches so a busy day does not turn
every call's write into a delete as well). `pbx cdr export` prints them as CSV.

Fields follow what every PBX's CDR carries (Asterisk's cdr_csv is the best known):

| field | meaning |
|---|---|
| seq | record number in the store (export `--since` takes it) |
| call_id | the caller's Call-ID |
| caller, callee | the calling extension (AOR) or `trunk:number`; the number dialled |
| did | the DID an inbound call came in on, else empty |
| trunk | the trunk the call used, else empty |
| source | address the caller's INVITE came from |
| start, answer, end | wall-clock times (ISO 8601, UTC or `--timezone`); answer empty if never |
| duration | seconds from start to end |
| billsec | seconds from answer to end (0 if not answered) |
| disposition | ANSWERED, NO ANSWER, BUSY, FAILED or CANCELLED |
| cause | how it ended: the SIP status and reason, or which side hung up |

Then, for each side S of an anchored call (`caller`, `callee`; empty when the media
did not pass through the PBX), the RTP/RTCP figures of that side's leg at hang-up
(RFC 3550 A.3 and A.8):

| field | meaning |
|---|---|
| S_codec | the codec on that leg |
| S_rtp_in | RTP packets the PBX received from that phone |
| S_rtp_out | RTP packets the PBX sent to that phone |
| S_lost | packets that phone sent which never reached the PBX |
| S_jitter_ms | interarrival jitter of that phone's stream at the PBX |
| S_reported_lost | what that phone's last RTCP report said it lost of ours (empty: no report) |
| S_reported_jitter_ms | the jitter that report gave for our stream (empty: no report) |

Last, the same three times as the box's local time (ISO 8601 with the offset then in
force, `2026-03-29T03:00:00+02:00`), in the zone of the setting `timezone` when the
call ended (kept with the record: a later change of the setting does not rewrite the
past); records from before the setting are in UTC:

| field | meaning |
|---|---|
| start_local, answer_local, end_local | start, answer, end in the box's time zone |

Last of all, the call's recordings (an extension pressed `*1`: features/recording):

| field | meaning |
|---|---|
| recordings | its files, `;` between them, in `recordings/calls/` by the state LMDB |
| barged | who joined the call as a third phone, and how (features/barge), `;` between |
| notes | features' notes (`Context.cdr_note`: `queue=500`, `wait=12 agent=101`), `;` between |
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import logging
import math
import os
import re
import sys
import tempfile
import threading
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from pbx_core import paths, tz
from pbx_core.media.events import LegStats
from pbx_core.store.errors import StoreError
from pbx_core.store.state import StateStore

log = logging.getLogger("pbx.cdr")

DISPOSITIONS = frozenset({"ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CANCELLED"})
BASE_FIELDS = (
    "seq",
    "call_id",
    "caller",
    "callee",
    "did",
    "trunk",
    "source",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "cause",
)
SIDES = ("caller", "callee")
MEDIA_FIELDS = (
    "codec",
    "rtp_in",
    "rtp_out",
    "lost",
    "jitter_ms",
    "reported_lost",
    "reported_jitter_ms",
)
LOCAL_FIELDS = ("start_local", "answer_local", "end_local")
RECORDING_FIELDS = ("recordings", "barged", "notes")
FIELDS = (
    BASE_FIELDS
    + tuple(f"{side}_{name}" for side in SIDES for name in MEDIA_FIELDS)
    + LOCAL_FIELDS
    + RECORDING_FIELDS
)
MAX_RECORDINGS = 16  # file names kept per record (call_record.py starts no more)
MAX_NAME = 128  # characters of one
DEFAULT_MAX_RECORDS = 10_000


def _seconds(span: float) -> int:
    """Whole seconds, half up (as billing rounds); never negative."""
    return max(0, math.floor(span + 0.5))


def _names(values: Any) -> tuple[str, ...]:
    """Recording file names, bounded (MAX_RECORDINGS of MAX_NAME characters)."""
    return tuple(str(v)[:MAX_NAME] for v in list(values)[:MAX_RECORDINGS])


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class MediaFigures:
    """One side's RTP figures at hang-up (what `pbx status` showed during the call)."""

    codec: str = ""
    rtp_in: int = 0
    rtp_out: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    reported_lost: int | None = None
    reported_jitter_ms: float | None = None

    def __post_init__(self) -> None:
        if min(self.rtp_in, self.rtp_out, self.lost) < 0 or self.jitter_ms < 0:
            raise ValueError("media figures are never negative")

    @classmethod
    def from_stats(cls, st: LegStats) -> MediaFigures:
        return cls(
            codec=st.codec,
            rtp_in=st.packets_received,
            rtp_out=st.packets_sent,
            lost=st.lost,
            jitter_ms=round(st.jitter_ms, 2),
            reported_lost=st.remote_lost,
            reported_jitter_ms=None
            if st.remote_jitter_ms is None
            else round(st.remote_jitter_ms, 2),
        )

    def record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in MEDIA_FIELDS}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> MediaFigures:
        return cls(
            codec=str(rec.get("codec") or ""),
            rtp_in=int(rec.get("rtp_in") or 0),
            rtp_out=int(rec.get("rtp_out") or 0),
            lost=int(rec.get("lost") or 0),
            jitter_ms=float(rec.get("jitter_ms") or 0.0),
            reported_lost=_opt_int(rec.get("reported_lost")),
            reported_jitter_ms=_opt_float(rec.get("reported_jitter_ms")),
        )

    def cells(self) -> list[object]:
        return [
            _cell(self.codec),
            self.rtp_in,
            self.rtp_out,
            self.lost,
            f"{self.jitter_ms:.1f}",
            "" if self.reported_lost is None else self.reported_lost,
            "" if self.reported_jitter_ms is None else f"{self.reported_jitter_ms:.1f}",
        ]


@dataclass(frozen=True, slots=True)
class Cdr:
    call_id: str
    caller: str
    callee: str
    start: float  # Unix time
    end: float
    disposition: str
    cause: str = ""
    answer: float | None = None
    did: str | None = None
    trunk: str | None = None
    source: str = ""
    # Per side ("caller", "callee"), when the call's media passed through the PBX.
    media: Mapping[str, MediaFigures] = field(default_factory=dict)
    timezone: str = ""  # the setting `timezone` when the call ended ("": UTC)
    recordings: tuple[str, ...] = ()  # file names under recordings/calls/
    barged: tuple[str, ...] = ()  # who joined as a third phone, and how
    notes: tuple[str, ...] = ()  # features' notes (Context.cdr_note)

    def __post_init__(self) -> None:
        unknown = set(self.media) - set(SIDES)
        if unknown:
            raise ValueError(f"unknown CDR media side {sorted(unknown)[0]!r}")
        if self.disposition not in DISPOSITIONS:
            raise ValueError(f"unknown CDR disposition {self.disposition!r}")
        if self.end < self.start:
            raise ValueError("a call cannot end before it starts")
        if self.answer is not None and not self.start <= self.answer <= self.end:
            raise ValueError("a call is answered between its start and its end")

    @property
    def duration(self) -> int:
        return _seconds(self.end - self.start)

    @property
    def billsec(self) -> int:
        return 0 if self.answer is None else _seconds(self.end - self.answer)

    # -------------------------------------------------------------- conversions
    @classmethod
    def from_call(cls, call: EndedCall, timezone: str = "") -> Cdr:
        """The record of a call the B2BUA has ended (calls.py's `Call`), with the box's
        time zone setting of the moment."""
        started = call.started

        def wall(t: float | None) -> float | None:
            return None if t is None else round(call.wall_start + (t - started), 3)

        start = round(call.wall_start, 3)
        end = wall(call.ended_at if call.ended_at is not None else started)
        assert end is not None  # noqa: S101  # wall() of a float is a float
        answer = wall(call.answered_at)
        disposition = call.disposition or "FAILED"
        if disposition == "ANSWERED" and answer is None:
            disposition = "FAILED"
        try:
            call_id = call.a_req.call_id
        except Exception:  # noqa: BLE001  # a malformed Call-ID never stops accounting
            call_id = ""
        return cls(
            call_id=call_id,
            caller=call.caller,
            callee=call.callee,
            start=start,
            end=max(end, start),
            disposition=disposition,
            cause=call.cause,
            answer=None if answer is None else min(max(answer, start), max(end, start)),
            did=call.did,
            trunk=call.trunk,
            source=f"{call.a_source[1]}:{call.a_source[2]}",
            media={
                side: MediaFigures.from_stats(st)
                for side, st in call.media_stats.items()
                if side in SIDES
            },
            timezone=timezone[: tz.MAX_TEXT],
            recordings=_names(call.recordings),
            barged=_names(call.barged_by),
            notes=_names(call.notes),
        )

    def record(self) -> dict[str, Any]:
        """The msgpack-able dict stored in the state LMDB."""
        rec: dict[str, Any] = {
            "v": 2,
            "call_id": self.call_id,
            "caller": self.caller,
            "callee": self.callee,
            "did": self.did,
            "trunk": self.trunk,
            "source": self.source,
            "start": self.start,
            "answer": self.answer,
            "end": self.end,
            "disposition": self.disposition,
            "cause": self.cause,
        }
        if self.media:
            rec["media"] = {side: fig.record() for side, fig in self.media.items()}
        if self.timezone:
            rec["tz"] = self.timezone
        if self.recordings:
            rec["rec"] = list(self.recordings)
        if self.barged:
            rec["barged"] = list(self.barged)
        if self.notes:
            rec["notes"] = list(self.notes)
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Cdr:
        """A stored record back; ValueError if it is not one."""
        try:
            answer = rec.get("answer")
            media = rec.get("media") or {}
            return cls(
                call_id=str(rec["call_id"]),
                caller=str(rec["caller"]),
                callee=str(rec["callee"]),
                start=float(rec["start"]),
                end=float(rec["end"]),
                disposition=str(rec["disposition"]),
                cause=str(rec.get("cause") or ""),
                answer=None if answer is None else float(answer),
                did=None if rec.get("did") is None else str(rec["did"]),
                trunk=None if rec.get("trunk") is None else str(rec["trunk"]),
                source=str(rec.get("source") or ""),
                media={str(k): MediaFigures.from_record(v) for k, v in media.items()},
                timezone=str(rec.get("tz") or "")[: tz.MAX_TEXT],
                recordings=_names(rec.get("rec") or ()),
                barged=_names(rec.get("barged") or ()),
                notes=_names(rec.get("notes") or ()),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a call record: {exc}") from None


class EndedCall(Protocol):
    """What the writer reads from a finished call (pbx_core.pbx.calls.Call)."""

    @property
    def a_req(self) -> _HasCallId: ...
    @property
    def a_source(self) -> tuple[str, str, int]: ...
    @property
    def caller(self) -> str: ...
    @property
    def callee(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def wall_start(self) -> float: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def disposition(self) -> str: ...
    @property
    def cause(self) -> str: ...
    @property
    def did(self) -> str | None: ...
    @property
    def trunk(self) -> str | None: ...
    @property
    def media_stats(self) -> Mapping[str, LegStats]: ...
    @property
    def recordings(self) -> Sequence[str]: ...
    @property
    def barged_by(self) -> Sequence[str]: ...
    @property
    def notes(self) -> Sequence[str]: ...


class _HasCallId(Protocol):
    @property
    def call_id(self) -> str: ...


class CdrWriter:
    """Writes one record per call and keeps the store at most `max_records` long
    (plus a rotation batch of up to 1 %)."""

    def __init__(
        self,
        state: StateStore,
        max_records: int = DEFAULT_MAX_RECORDS,
        timezone: Callable[[], object] = lambda: "",
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        self.state = state
        self.timezone = timezone  # the setting in force (app.py: the snapshot's)
        self.max_records = max_records
        self.batch = max(1, max_records // 100)
        self._count: int | None = None  # counted on the first write

    def write(self, cdr: Cdr) -> int:
        """Store a record; returns its sequence number. Raises StoreError."""
        return self.write_many([cdr])[0]

    def write_many(self, cdrs: Sequence[Cdr]) -> list[int]:
        """Store records in one transaction (one sync of the card); their sequence
        numbers. Raises StoreError (then none of them is stored)."""
        if self._count is None:
            self._count = sum(1 for _ in self.state.cdrs())
        seqs = self.state.add_cdrs([cdr.record() for cdr in cdrs])
        self._count += len(seqs)
        if self._count >= self.max_records + self.batch:
            self._count -= self.state.prune_cdrs(self.max_records)
        return seqs

    def call_ended(self, call: EndedCall) -> int | None:
        """Account for the call at once (in this thread), never raise."""
        cdr = _cdr_of(call, self.timezone)
        if cdr is None:
            return None
        try:
            return self.write(cdr)
        except (StoreError, ValueError) as exc:
            _not_written(cdr.caller, exc)
            return None


def _not_written(caller: str, exc: Exception) -> None:
    # The reason is the whole story (a full disk, a bad record): no traceback.
    log.error("CDR of call from %s not written: %s", caller, exc)


def _cdr_of(call: EndedCall, timezone: Callable[[], object]) -> Cdr | None:
    """The call's record, or None (logged) if the call cannot make one."""
    try:
        return Cdr.from_call(call, str(timezone() or ""))
    except ValueError as exc:
        _not_written(getattr(call, "caller", "?"), exc)
        return None


class CdrQueue:
    """Hands finished calls' records to one writer thread, off the event loop (a
    synced LMDB commit takes milliseconds on a CF card). Records keep their order;
    those that arrive while a commit is syncing share the next one (fewer syncs under
    load, for the CPU and the card). `close` waits until all are written."""

    def __init__(self, writer: CdrWriter) -> None:
        self.writer = writer
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdr")
        self._lock = threading.Lock()
        self._pending: list[Cdr] = []

    def call_ended(self, call: EndedCall) -> None:
        """The engine's call-end hook: queue the call's record, never raise."""
        cdr = _cdr_of(call, self.writer.timezone)
        if cdr is not None:
            self.put(cdr)

    def put(self, cdr: Cdr) -> None:
        with self._lock:
            self._pending.append(cdr)
            if len(self._pending) > 1:
                return  # a write is queued already and takes this record too
        self._thread.submit(self._write)

    def _write(self) -> None:
        with self._lock:
            records, self._pending = self._pending, []
        try:
            self.writer.write_many(records)
        except (StoreError, ValueError) as exc:
            for record in records:
                _not_written(record.caller, exc)

    def close(self) -> None:
        self._thread.shutdown(wait=True)


# ------------------------------------------------------------------ CSV export

# A cell a spreadsheet would run as a formula (OWASP "CSV injection"); caller IDs
# from a trunk are outside data. Plain numbers such as +4930123 stay as they are.
_FORMULA = re.compile(r"[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?[0-9][0-9.]*")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    if text and _FORMULA.match(text) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def _time(t: float | None, zone: dt.tzinfo | tz.Zone) -> str:
    if t is None:
        return ""
    if isinstance(zone, tz.Zone):
        return zone.aware(t).isoformat(timespec="seconds")
    return dt.datetime.fromtimestamp(t, zone).isoformat(timespec="seconds")


class _Zones:
    """The records' zones, each text parsed once (a bad one, which the judge refused
    when it was set, reads as UTC)."""

    def __init__(self) -> None:
        self._zones: dict[str, tz.Zone] = {}

    def __call__(self, text: str) -> tz.Zone:
        found = self._zones.get(text)
        if found is None:
            try:
                found = tz.zone(text)
            except tz.ZoneError:
                found = tz.UTC
            if len(self._zones) < 64:
                self._zones[text] = found
        return found


def rows(state: StateStore, since: int | None = None) -> Iterator[tuple[int, Cdr]]:
    """Stored records from `since` on (a sequence number), oldest first; records
    that do not decode are logged and skipped."""
    for seq, rec in state.cdrs(since or 0):
        try:
            cdr = Cdr.from_record(rec)
        except ValueError as exc:
            log.warning("CDR %d skipped: %s", seq, exc)
        else:
            yield seq, cdr


def export_csv(
    state: StateStore,
    out: IO[str],
    since: int | None = None,
    zone: dt.tzinfo | tz.Zone = dt.UTC,
) -> int:
    """Write the records as CSV (a header line, then one line per call); returns
    how many were written."""
    w = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    w.writerow(FIELDS)
    zones = _Zones()
    n = 0
    for seq, c in rows(state, since):
        w.writerow(
            [
                seq,
                _cell(c.call_id),
                _cell(c.caller),
                _cell(c.callee),
                _cell(c.did),
                _cell(c.trunk),
                _cell(c.source),
                _time(c.start, zone),
                _time(c.answer, zone),
                _time(c.end, zone),
                c.duration,
                c.billsec,
                c.disposition,
                _cell(c.cause),
                *(
                    cell
                    for side in SIDES
                    for cell in (
                        c.media[side].cells() if side in c.media else [""] * len(MEDIA_FIELDS)
                    )
                ),
                *(_time(t, zones(c.timezone)) for t in (c.start, c.answer, c.end)),
                _cell(";".join(c.recordings)),
                _cell(";".join(c.barged)),
                _cell(";".join(c.notes)),
            ]
        )
        n += 1
    return n


# ------------------------------------------------------------------ pbx cdr …


def _zone(name: str | None) -> dt.tzinfo | tz.Zone:
    """`--timezone`: what the setting takes (a POSIX TZ string, a listed name), else
    any zone this machine's zoneinfo has (an export may run on a laptop)."""
    if not name or name.upper() == "UTC":
        return dt.UTC
    try:
        return tz.zone(name)
    except tz.ZoneError as exc:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(str(exc)) from None


def main(args: argparse.Namespace) -> int:
    """`pbx cdr export [--state PATH] [--since N] [--out FILE] [--timezone NAME]`."""
    path = Path(args.state) if args.state else paths.state_db()
    if args.since is not None and args.since < 0:
        print("pbx cdr export: --since must be 0 or more", file=sys.stderr)
        return 2
    try:
        zone = _zone(args.timezone)
    except ValueError as exc:
        print(f"pbx cdr export: {exc}", file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"pbx cdr export: no state database at {path}", file=sys.stderr)
        return 1
    try:
        with StateStore(path) as state:
            if args.out is None:
                n = export_csv(state, sys.stdout, args.since, zone)
            else:
                n = _export_file(state, Path(args.out), args.since, zone)
    except (StoreError, OSError) as exc:
        print(f"pbx cdr export: {exc}", file=sys.stderr)
        return 1
    print(f"pbx cdr export: {n} records", file=sys.stderr)
    return 0


def _export_file(state: StateStore, out: Path, since: int | None, zone: dt.tzinfo | tz.Zone) -> int:
    """Write to a temporary file beside `out`, then rename: never half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            n = export_csv(state, f, since, zone)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return n
