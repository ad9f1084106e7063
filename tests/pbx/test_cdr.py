"""Call detail records: from a finished call to the state LMDB to CSV."""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from pbx_core import cli
from pbx_core.media.events import LegStats
from pbx_core.pbx.calls import Call
from pbx_core.pbx.cdr import (
    BASE_FIELDS,
    FIELDS,
    LOCAL_FIELDS,
    RECORDING_FIELDS,
    Cdr,
    CdrQueue,
    CdrWriter,
    EndedCall,
    MediaFigures,
    export_csv,
)
from pbx_core.sip.message import Request, parse_message
from pbx_core.store.errors import StoreError
from pbx_core.store.state import StateStore

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def invite(call_id: str = "abc@10.0.0.7") -> Request:
    text = (
        "INVITE sip:101@pbx.local SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK1\r\n"
        "From: <sip:100@pbx.local>;tag=a\r\nTo: <sip:101@pbx.local>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


@dataclass
class FakeCall:
    a_req: Request
    a_source: tuple[str, str, int] = ("UDP", "10.0.0.7", 5060)
    caller: str = "100@pbx.local"
    callee: str = "101"
    started: float = 500.0  # loop time
    wall_start: float = T0
    answered_at: float | None = 503.0
    ended_at: float | None = 563.7
    disposition: str = "ANSWERED"
    cause: str = "callee hung up"
    did: str | None = None
    trunk: str | None = None
    media_stats: dict[str, LegStats] = field(default_factory=dict)
    recordings: list[str] = field(default_factory=list)
    barged_by: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def leg_stats(**kw: object) -> LegStats:
    base: dict[str, object] = {
        "packets_received": 3000,
        "packets_sent": 2990,
        "bytes_received": 516000,
        "bytes_sent": 514280,
        "lost": 12,
        "loss_fraction": 0.004,
        "jitter_ms": 3.456,
        "malformed": 0,
        "codec": "PCMU",
        "remote_address": "10.0.0.7:4000",
    }
    base.update(kw)
    return LegStats(**base)  # type: ignore[arg-type]  # test kwargs


def cdr(**kw: object) -> Cdr:
    base = {
        "call_id": "c1",
        "caller": "100@pbx.local",
        "callee": "101",
        "start": T0,
        "end": T0 + 60,
        "disposition": "ANSWERED",
        "answer": T0 + 3,
        "cause": "caller hung up",
    }
    base.update(kw)
    return Cdr(**base)  # type: ignore[arg-type]  # test kwargs


# ---------------------------------------------------------------- the record


def test_from_call_converts_loop_times_to_wall_clock() -> None:
    c = Cdr.from_call(FakeCall(invite()))
    assert c.call_id == "abc@10.0.0.7"
    assert (c.caller, c.callee, c.source) == ("100@pbx.local", "101", "10.0.0.7:5060")
    assert c.start == T0
    assert c.answer == pytest.approx(T0 + 3.0)
    assert c.end == pytest.approx(T0 + 63.7)
    assert (c.duration, c.billsec) == (64, 61)  # 63.7 s and 60.7 s, rounded
    assert (c.disposition, c.cause) == ("ANSWERED", "callee hung up")


def test_unanswered_call_bills_nothing() -> None:
    call = FakeCall(invite(), answered_at=None, ended_at=520.0, disposition="NO ANSWER")
    call.cause = "480 Temporarily Unavailable"
    c = Cdr.from_call(call)
    assert (c.answer, c.duration, c.billsec) == (None, 20, 0)
    assert c.cause == "480 Temporarily Unavailable"


def test_from_call_repairs_what_cannot_be() -> None:
    # No disposition, no end time, "ANSWERED" without an answer time: still one record.
    call = FakeCall(invite(), answered_at=None, ended_at=None, disposition="")
    assert Cdr.from_call(call).disposition == "FAILED"
    call = FakeCall(invite(), answered_at=None, disposition="ANSWERED")
    assert Cdr.from_call(call).disposition == "FAILED"


def test_inbound_trunk_call_keeps_did_and_trunk() -> None:
    call = FakeCall(invite(), caller="provider:+4930123456", callee="4930555", did="4930555")
    call.trunk = "provider"
    c = Cdr.from_call(call)
    assert (c.did, c.trunk, c.caller) == ("4930555", "provider", "provider:+4930123456")


def test_real_call_object_fits() -> None:
    """The B2BUA's own Call has everything the writer reads."""
    call = Call(
        id="x",
        a_req=invite("real@host"),
        a_key=object(),  # type: ignore[arg-type]  # the key is not read
        a_source=("UDP", "192.0.2.1", 5070),
        a_tag="t",
        caller="100@pbx.local",
        callee="102",
        started=10.0,
    )
    call.ended_at, call.disposition, call.cause = 12.0, "BUSY", "486 Busy Here"
    ended: EndedCall = call
    c = Cdr.from_call(ended)
    assert (c.call_id, c.disposition, c.duration, c.source) == (
        "real@host",
        "BUSY",
        2,
        "192.0.2.1:5070",
    )


@pytest.mark.parametrize(
    ("span", "seconds"), [(0.0, 0), (0.49, 0), (0.5, 1), (59.5, 60), (60.49, 60)]
)
def test_seconds_round_half_up(span: float, seconds: int) -> None:
    assert cdr(answer=T0, end=T0 + span).billsec == seconds


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"disposition": "HUNG"}, "unknown CDR disposition 'HUNG'"),
        ({"end": T0 - 1}, "cannot end before"),
        ({"answer": T0 + 100}, "answered between"),
    ],
)
def test_impossible_records_are_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cdr(**kw)


def test_record_round_trip() -> None:
    c = cdr(did="555", trunk="provider", source="192.0.2.1:5060", answer=None)
    assert Cdr.from_record(c.record()) == c


@pytest.mark.parametrize("rec", [{}, {"call_id": "x"}, [1, 2], "text"])
def test_from_record_rejects_garbage(rec: object) -> None:
    with pytest.raises(ValueError, match="not a call record"):
        Cdr.from_record(rec)  # type: ignore[arg-type]  # garbage on purpose


# ---------------------------------------------------------------- media figures


def test_media_figures_of_each_side_reach_the_record() -> None:
    call = FakeCall(
        invite(),
        media_stats={
            "caller": leg_stats(remote_lost=5, remote_jitter_ms=7.25),
            "callee": leg_stats(
                packets_received=2900, packets_sent=3000, lost=0, jitter_ms=0.4, codec="PCMA"
            ),
        },
    )
    c = Cdr.from_call(call)
    assert c.media["caller"] == MediaFigures("PCMU", 3000, 2990, 12, 3.46, 5, 7.25)
    assert c.media["callee"] == MediaFigures("PCMA", 2900, 3000, 0, 0.4, None, None)
    assert Cdr.from_record(c.record()) == c


def test_endpoint_call_without_callee_leg() -> None:
    c = Cdr.from_call(FakeCall(invite(), media_stats={"caller": leg_stats()}))
    assert set(c.media) == {"caller"}
    rec = c.record()
    assert set(rec["media"]) == {"caller"} and rec["v"] == 2


def test_version_1_records_still_read() -> None:
    rec = cdr().record()
    rec.pop("media", None)
    rec["v"] = 1
    assert Cdr.from_record(rec).media == {}


@pytest.mark.parametrize(
    ("media", "message"),
    [
        ({"caller": {"rtp_in": "many"}}, "not a call record"),
        ({"caller": {"lost": -3}}, "never negative"),
        ({"third": {}}, "unknown CDR media side 'third'"),
        ({"caller": "text"}, "not a call record"),
    ],
)
def test_bad_media_figures_are_refused(media: object, message: str) -> None:
    rec = cdr().record()
    rec["media"] = media
    with pytest.raises(ValueError, match=message):
        Cdr.from_record(rec)


def test_export_csv_carries_media_columns(state: StateStore) -> None:
    w = CdrWriter(state)
    w.call_ended(
        FakeCall(
            invite("m1"),
            media_stats={
                "caller": leg_stats(remote_lost=5, remote_jitter_ms=7.25),
                "callee": leg_stats(packets_received=2900, lost=0, jitter_ms=0.44),
            },
        )
    )
    (row,) = read_csv(_export(state))
    media = FIELDS[len(BASE_FIELDS) : -len(LOCAL_FIELDS) - len(RECORDING_FIELDS)]
    assert {k: row[k] for k in media} == {
        "caller_codec": "PCMU",
        "caller_rtp_in": "3000",
        "caller_rtp_out": "2990",
        "caller_lost": "12",
        "caller_jitter_ms": "3.5",
        "caller_reported_lost": "5",
        "caller_reported_jitter_ms": "7.2",
        "callee_codec": "PCMU",
        "callee_rtp_in": "2900",
        "callee_rtp_out": "2990",
        "callee_lost": "0",
        "callee_jitter_ms": "0.4",
        "callee_reported_lost": "",
        "callee_reported_jitter_ms": "",
    }


# ---------------------------------------------------------------- the writer


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "state.mdb")
    yield s
    s.close()


def test_writer_stores_one_record_per_call(state: StateStore) -> None:
    w = CdrWriter(state)
    assert w.call_ended(FakeCall(invite("one"))) == 1
    assert w.call_ended(FakeCall(invite("two"), disposition="CANCELLED", answered_at=None)) == 2
    got = [(seq, rec["call_id"], rec["disposition"]) for seq, rec in state.cdrs()]
    assert got == [(1, "one", "ANSWERED"), (2, "two", "CANCELLED")]


def test_writer_rotates_oldest_out_in_batches(state: StateStore) -> None:
    w = CdrWriter(state, max_records=200)  # rotates 2 at a time
    sizes = []
    for i in range(600):
        w.write(cdr(call_id=f"c{i}"))
        if i % 7 == 0:
            sizes.append(sum(1 for _ in state.cdrs()))
    assert max(sizes) == 201 and min(sizes[30:]) >= 200
    seqs = [seq for seq, _ in state.cdrs()]
    assert seqs == list(range(seqs[0], 601)) and len(seqs) in (200, 201)  # newest, no gaps


def test_writer_counts_records_left_by_the_last_run(tmp_path: Path) -> None:
    path = tmp_path / "s.mdb"
    with StateStore(path) as s:
        w = CdrWriter(s, max_records=10)
        for i in range(10):
            w.write(cdr(call_id=f"a{i}"))
    with StateStore(path) as s:
        w = CdrWriter(s, max_records=10)
        for i in range(5):
            w.write(cdr(call_id=f"b{i}"))
        rows = [rec["call_id"] for _, rec in s.cdrs()]
    # Had the writer not counted the old ten, nothing would have rotated out yet.
    assert rows == [f"a{i}" for i in range(5, 10)] + [f"b{i}" for i in range(5)]


def test_writer_never_raises_into_the_engine(
    state: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    w = CdrWriter(state)
    caplog.set_level(logging.ERROR, logger="pbx.cdr")
    assert w.call_ended(FakeCall(invite(), disposition="WEIRD")) is None
    assert "CDR of call from 100@pbx.local not written" in caplog.text
    assert list(state.cdrs()) == []


def test_writer_rejects_silly_limits(state: StateStore) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CdrWriter(state, max_records=0)


# ---------------------------------------------------------------- CSV


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_export_csv(state: StateStore) -> None:
    w = CdrWriter(state)
    w.write(cdr(call_id="c1", did="4930555", trunk="provider"))
    w.write(cdr(call_id="c2", answer=None, disposition="BUSY", cause="486 Busy Here"))
    out = io.StringIO()
    assert export_csv(state, out) == 2
    text = out.getvalue()
    assert text.splitlines()[0] == ",".join(FIELDS)
    assert text.endswith("\r\n")
    first, second = read_csv(text)
    assert first == {
        "seq": "1",
        "call_id": "c1",
        "caller": "100@pbx.local",
        "callee": "101",
        "did": "4930555",
        "trunk": "provider",
        "source": "",
        "start": "2026-09-21T14:13:20+00:00",
        "answer": "2026-09-21T14:13:23+00:00",
        "end": "2026-09-21T14:14:20+00:00",
        "duration": "60",
        "billsec": "57",
        "disposition": "ANSWERED",
        "cause": "caller hung up",
        **dict.fromkeys(FIELDS[len(BASE_FIELDS) :], ""),  # no media figures in this record
        "start_local": "2026-09-21T14:13:20+00:00",  # no time zone with the record: UTC
        "answer_local": "2026-09-21T14:13:23+00:00",
        "end_local": "2026-09-21T14:14:20+00:00",
    }
    assert (second["answer"], second["billsec"], second["disposition"]) == ("", "0", "BUSY")
    assert second["cause"] == "486 Busy Here"


def test_export_since(state: StateStore) -> None:
    w = CdrWriter(state)
    for i in range(5):
        w.write(cdr(call_id=f"c{i}"))
    out = io.StringIO()
    assert export_csv(state, out, since=4) == 2
    assert [r["call_id"] for r in read_csv(out.getvalue())] == ["c3", "c4"]


def test_export_defuses_spreadsheet_formulas(state: StateStore) -> None:
    w = CdrWriter(state)
    w.write(cdr(caller='trunk:=HYPERLINK("http://x")', callee="=1+1", cause="@SUM(A1)"))
    w.write(cdr(caller="+4930123456", callee="-5"))
    first, second = read_csv(_export(state))
    assert first["callee"] == "'=1+1" and first["cause"] == "'@SUM(A1)"
    assert first["caller"].startswith("trunk:=")  # harmless in the middle
    assert (second["caller"], second["callee"]) == ("+4930123456", "-5")  # numbers stay


def test_export_skips_records_that_do_not_decode(
    state: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    state.add_cdr({"what": "not a call"})
    CdrWriter(state).write(cdr(call_id="good"))
    caplog.set_level(logging.WARNING, logger="pbx.cdr")
    rows = read_csv(_export(state))
    assert [r["call_id"] for r in rows] == ["good"]
    assert "CDR 1 skipped" in caplog.text


def _export(state: StateStore) -> str:
    out = io.StringIO()
    export_csv(state, out)
    return out.getvalue()


# ---------------------------------------------------------------- pbx cdr export


def _filled(path: Path, n: int = 3) -> None:
    with StateStore(path) as s:
        w = CdrWriter(s)
        for i in range(n):
            w.write(cdr(call_id=f"c{i}"))


def test_cli_export_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "state.mdb"
    _filled(db)
    assert cli.main(["cdr", "export", "--state", str(db), "--since", "2"]) == 0
    out, err = capsys.readouterr()
    assert [r["call_id"] for r in read_csv(out)] == ["c1", "c2"]
    assert "2 records" in err


def test_cli_export_default_path_and_timezone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pbx_core.paths.DATA_DIR", tmp_path)
    _filled(tmp_path / "state.mdb", 1)
    assert cli.main(["cdr", "export", "--timezone", "Europe/Berlin"]) == 0
    (row,) = read_csv(capsys.readouterr().out)
    assert row["start"] == "2026-09-21T16:13:20+02:00"


def test_cli_export_takes_a_posix_zone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _filled(tmp_path / "state.mdb", 1)
    argv = ["cdr", "export", "--state", str(tmp_path / "state.mdb"), "--timezone", "EST5EDT"]
    assert cli.main(argv) == 0
    (row,) = read_csv(capsys.readouterr().out)
    assert row["start"] == "2026-09-21T10:13:20-04:00"
    assert row["start_local"] == "2026-09-21T14:13:20+00:00"  # a record with no zone: UTC


def test_local_times_follow_the_zone_in_force_when_the_call_ended(state: StateStore) -> None:
    """The writer asks for the setting at each call's end and keeps it with the
    record: local times in CEST before the autumn change, CET after it; the UTC
    columns stay UTC; changing the setting later does not rewrite the past."""
    setting = ["CET-1CEST,M3.5.0,M10.5.0/3"]
    w = CdrWriter(state, timezone=lambda: setting[0])
    autumn = 1_792_890_000.0  # 2026-10-25 01:00 UTC: 03:00 CEST becomes 02:00 CET
    w.call_ended(FakeCall(invite("before"), wall_start=autumn - 600))
    w.call_ended(FakeCall(invite("after"), wall_start=autumn + 60))
    setting[0] = "EST5EDT,M3.2.0,M11.1.0"
    w.call_ended(FakeCall(invite("elsewhere"), wall_start=autumn))
    before, after, elsewhere = read_csv(_export(state))
    assert before["start"] == "2026-10-25T00:50:00+00:00"
    assert before["start_local"] == "2026-10-25T02:50:00+02:00"
    assert before["answer_local"] == "2026-10-25T02:50:03+02:00"
    assert before["end_local"] == "2026-10-25T02:51:03+02:00"  # 63.7 s on, as "end" cuts it
    assert before["end"] == "2026-10-25T00:51:03+00:00"
    assert after["start_local"] == "2026-10-25T02:01:00+01:00"
    assert elsewhere["start_local"] == "2026-10-24T21:00:00-04:00"
    assert [rec.get("tz") for _seq, rec in state.cdrs()] == [
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "EST5EDT,M3.2.0,M11.1.0",
    ]


def test_a_record_with_an_unreadable_zone_exports_in_utc(state: StateStore) -> None:
    CdrWriter(state).write(cdr(timezone="Mars/Olympus"))
    (row,) = read_csv(_export(state))
    assert row["start_local"] == row["start"] == "2026-09-21T14:13:20+00:00"


def test_cli_export_to_file_is_atomic(tmp_path: Path) -> None:
    db = tmp_path / "state.mdb"
    _filled(db)
    out = tmp_path / "cdr.csv"
    out.write_text("old export\n")
    assert cli.main(["cdr", "export", "--state", str(db), "--out", str(out)]) == 0
    assert len(read_csv(out.read_text())) == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".cdr")) == []


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--state", "NOPE"], 1, "no state database at"),
        (["--since", "-1"], 2, "--since must be 0 or more"),
        (["--timezone", "Mars/Olympus"], 2, "time zone 'Mars/Olympus' is not in the built-in"),
        (["--timezone", "CET-1CEST,M13.5.0,M10.5.0"], 2, "Mm.w.d needs month 1-12"),
        (["--out", "/nonexistent-dir/x.csv"], 1, "pbx cdr export: "),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    db = tmp_path / "state.mdb"
    _filled(db, 1)
    args = [a.replace("NOPE", str(tmp_path / "missing.mdb")) for a in argv]
    if "--state" not in args:
        args += ["--state", str(db)]
    assert cli.main(["cdr", "export", *args]) == code
    out, err = capsys.readouterr()
    assert message in err and "Traceback" not in err
    assert out == ""
    assert not (tmp_path / "missing.mdb").exists()  # export never creates a database


def test_replace_keeps_validation() -> None:
    with pytest.raises(ValueError, match="disposition"):
        replace(cdr(), disposition="nope")


def test_writer_stores_a_batch_in_one_commit_in_order(state: StateStore) -> None:
    w = CdrWriter(state, max_records=4)  # the batch also rotates: 3 + 3 > 4 + 1
    assert w.write_many([cdr(call_id=f"a{i}") for i in range(3)]) == [1, 2, 3]
    assert w.write_many([cdr(call_id=f"b{i}") for i in range(3)]) == [4, 5, 6]
    assert [rec["call_id"] for _, rec in state.cdrs()] == ["a2", "b0", "b1", "b2"]


def test_queue_batches_records_arriving_while_one_is_written(
    state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first record is written alone; the ones arriving while that commit syncs go
    # in the next commit together; none is lost or reordered.
    writer = CdrWriter(state)
    batches: list[int] = []
    busy, release = threading.Event(), threading.Event()
    real = writer.write_many

    def slow(records: Sequence[Cdr]) -> list[int]:
        batches.append(len(records))
        busy.set()
        release.wait(5)
        return real(records)

    monkeypatch.setattr(writer, "write_many", slow)
    queue = CdrQueue(writer)
    queue.put(cdr(call_id="c0"))
    assert busy.wait(5)
    for i in range(1, 5):
        queue.put(cdr(call_id=f"c{i}"))
    release.set()
    queue.close()
    assert batches == [1, 4]
    assert [rec["call_id"] for _, rec in state.cdrs()] == [f"c{i}" for i in range(5)]


def test_queue_logs_a_failed_commit_and_goes_on(
    state: StateStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = CdrWriter(state)
    queue = CdrQueue(writer)
    caplog.set_level(logging.ERROR, logger="pbx.cdr")
    real = writer.write_many

    def full_disk(records: Sequence[Cdr]) -> list[int]:
        monkeypatch.setattr(writer, "write_many", real)  # the next one works
        raise StoreError("disk full")

    monkeypatch.setattr(writer, "write_many", full_disk)
    queue.put(cdr(call_id="lost"))
    queue.close()
    assert "CDR of call from 100@pbx.local not written: disk full" in caplog.text
    queue = CdrQueue(writer)
    queue.put(cdr(call_id="kept"))
    queue.close()
    assert [rec["call_id"] for _, rec in state.cdrs()] == ["kept"]


def test_recordings_are_named_in_the_record_and_the_export(state: StateStore) -> None:
    names = ["20260921-141320-abc-1.wav", "20260921-141340-abc-2.wav"]
    c = Cdr.from_call(FakeCall(invite("r1"), recordings=names))
    assert c.recordings == tuple(names)
    assert Cdr.from_record(c.record()) == c
    CdrWriter(state).write(c)
    CdrWriter(state).write(Cdr.from_call(FakeCall(invite("r2"))))
    first, second = read_csv(_export(state))
    assert first["recordings"] == ";".join(names)
    assert second["recordings"] == ""
    # Bounded, whatever a damaged record holds.
    many = Cdr.from_record({**c.record(), "rec": ["x" * 500] * 100})
    assert len(many.recordings) == 16 and {len(n) for n in many.recordings} == {128}
