"""RFC 4028 session timers, sans-IO: header parsing, negotiation as UAS and UAC,
and one leg's clock (refresh at half the interval, BYE at expiry minus
min(32, interval/3))."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbx_core.pbx.session_timer import (
    LONGEST_INTERVAL,
    Accept,
    Action,
    LegTimer,
    Reject,
    SessionExpires,
    SessionTimerError,
    TimerConfig,
    negotiate_uac,
    negotiate_uas,
    parse_min_se,
    parse_session_expires,
    retry_interval,
    supports_timer,
    uac_headers,
)
from pbx_core.sip.message import Headers
from tests.fuzzing import fuzz_settings

CFG = TimerConfig(session_expires=1800, min_se=90)


def headers(*pairs: tuple[str, str]) -> Headers:
    h = Headers()
    for name, value in pairs:
        h.add(name, value)
    return h


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("1800", SessionExpires(1800)),
        ("90;refresher=uac", SessionExpires(90, "uac")),
        (" 600 ; Refresher = UAS ", SessionExpires(600, "uas")),
        ("4000;foo=bar;refresher=uas", SessionExpires(4000, "uas")),
    ],
)
def test_parse_session_expires(text: str, parsed: SessionExpires) -> None:
    assert parse_session_expires(text) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a number"),
        ("abc", "not a number"),
        ("-5", "not a number"),
        ("0", "out of range"),
        ("99999999999", "out of range"),
        ("1800;refresher=both", "refresher must be uac or uas"),
        ("\uff11\uff18\uff10\uff10", "not a number"),  # full-width digits are not DIGIT
    ],
)
def test_malformed_session_expires_is_a_400(text: str, message: str) -> None:
    with pytest.raises(SessionTimerError, match=message) as err:
        parse_session_expires(text)
    assert err.value.status == 400


def test_min_se_and_round_trip() -> None:
    assert parse_min_se("120") == 120
    assert parse_min_se("120;x=y") == 120
    assert str(SessionExpires(90, "uac")) == "90;refresher=uac"
    assert parse_session_expires(str(SessionExpires(1800))) == SessionExpires(1800)


def test_supports_timer_reads_supported_and_require() -> None:
    assert supports_timer(headers(("Supported", "100rel, Timer")))
    assert supports_timer(headers(("k", "timer")))  # compact Supported
    assert supports_timer(headers(("Require", "timer")))
    assert not supports_timer(headers(("Supported", "100rel,replaces")))


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TimerConfig(1800, 0)
    with pytest.raises(ValueError, match="below session_min_se"):
        TimerConfig(60, 90)
    assert not TimerConfig(0, 90).enabled


# ---------------------------------------------------------------- as UAS


def test_uas_too_small_interval_gets_422_with_our_min_se() -> None:
    got = negotiate_uas(headers(("Session-Expires", "30"), ("Supported", "timer")), CFG)
    assert got == Reject(90)
    assert got.headers() == [("Min-SE", "90")]


def test_uas_keeps_the_uac_refresher_and_requires_timer() -> None:
    got = negotiate_uas(
        headers(("Session-Expires", "600;refresher=uac"), ("Supported", "timer")), CFG
    )
    assert got == Accept(600, "uac")
    assert isinstance(got, Accept) and not got.we_refresh
    assert got.headers() == [("Session-Expires", "600;refresher=uac"), ("Require", "timer")]


def test_uas_shortens_a_long_interval_but_not_below_their_min_se() -> None:
    long = headers(("Session-Expires", "7200"), ("Supported", "timer"))
    assert negotiate_uas(long, CFG) == Accept(1800, "uac")
    picky = headers(("Session-Expires", "7200"), ("Min-SE", "3600"), ("Supported", "timer"))
    assert negotiate_uas(picky, CFG) == Accept(3600, "uac")


def test_uas_refreshes_for_a_uac_without_the_extension() -> None:
    # A proxy put Session-Expires in; the phone itself cannot refresh.
    got = negotiate_uas(headers(("Session-Expires", "900;refresher=uac")), CFG)
    assert got == Accept(900, "uas")
    assert isinstance(got, Accept) and got.we_refresh
    assert got.headers() == [("Session-Expires", "900;refresher=uas")]


def test_uas_adds_a_timer_when_none_was_asked() -> None:
    assert negotiate_uas(headers(), CFG) == Accept(1800, "uas")
    assert negotiate_uas(headers(("Supported", "timer")), CFG) == Accept(1800, "uac")


def test_uas_with_timers_off_ignores_them() -> None:
    got = negotiate_uas(headers(("Session-Expires", "30")), TimerConfig(0, 90))
    assert got == Accept(None)
    assert isinstance(got, Accept) and got.headers() == [] and not got.we_refresh


def test_uas_malformed_header_raises() -> None:
    with pytest.raises(SessionTimerError):
        negotiate_uas(headers(("Session-Expires", "soon")), CFG)
    with pytest.raises(SessionTimerError):
        negotiate_uas(headers(("Session-Expires", "900"), ("Min-SE", "x")), CFG)


# ---------------------------------------------------------------- as UAC


def test_uac_headers() -> None:
    assert uac_headers(CFG) == [
        ("Supported", "timer"),
        ("Session-Expires", "1800"),
        ("Min-SE", "90"),
    ]
    assert ("Session-Expires", "600;refresher=uac") in uac_headers(CFG, 600, we_refresh=True)
    assert ("Session-Expires", "600;refresher=uas") in uac_headers(CFG, 600, we_refresh=False)
    assert ("Session-Expires", "90") in uac_headers(CFG, 10)  # never below our Min-SE
    assert uac_headers(TimerConfig(0, 90)) == [("Supported", "timer")]


@pytest.mark.parametrize(
    ("value", "result"),
    [
        ("900;refresher=uac", (900, True)),
        ("900;refresher=uas", (900, False)),
        ("900", (900, True)),  # no refresher named: the UAC (we) decides
        (None, None),  # no Session-Expires in the 2xx: no timer
    ],
)
def test_uac_reads_the_2xx(value: str | None, result: tuple[int, bool] | None) -> None:
    h = headers() if value is None else headers(("Session-Expires", value))
    assert negotiate_uac(h, CFG) == result


def test_retry_after_422() -> None:
    assert retry_interval(headers(("Min-SE", "1200")), 900) == 1200
    assert retry_interval(headers(("Min-SE", "900")), 900) is None  # would loop
    assert retry_interval(headers(), 900) is None


def test_a_peer_cannot_set_a_timer_beyond_a_day() -> None:
    """Session-Expires/Min-SE are delta-seconds up to 2^31-1: from any of the three
    places a peer's value reaches a timer, the PBX keeps at most a day."""
    huge = str(2**31 - 1)
    assert negotiate_uac(headers(("Session-Expires", f"{huge};refresher=uas")), CFG) == (
        LONGEST_INTERVAL,
        False,
    )
    assert retry_interval(headers(("Min-SE", huge)), 1800) == LONGEST_INTERVAL
    accept = negotiate_uas(headers(("Session-Expires", huge), ("Min-SE", huge)), CFG)
    assert accept == Accept(LONGEST_INTERVAL, "uas")


_DELTA = st.integers(1, 2**31 - 1).map(str)
_REFRESHER = st.sampled_from(["", ";refresher=uac", ";refresher=uas"])


@pytest.mark.fuzz
@fuzz_settings(300)
@given(se=st.none() | _DELTA, min_se=st.none() | _DELTA, refresher=_REFRESHER)
def test_every_negotiated_interval_is_bounded(
    se: str | None, min_se: str | None, refresher: str
) -> None:
    pairs = [("Session-Expires", se + refresher)] if se else []
    pairs += [("Min-SE", min_se)] if min_se else []
    h = headers(*pairs)
    got = negotiate_uas(h, CFG)
    if isinstance(got, Accept) and got.interval is not None:
        assert CFG.min_se <= got.interval <= LONGEST_INTERVAL
    uac = negotiate_uac(h, CFG)
    if uac is not None:
        assert 1 <= uac[0] <= LONGEST_INTERVAL
    retry = retry_interval(h, CFG.session_expires)
    assert retry is None or retry <= LONGEST_INTERVAL


# ---------------------------------------------------------------- the clock


@pytest.mark.parametrize(
    ("interval", "bye_after"),
    [(90, 60.0), (1800, 1768.0), (96, 64.0), (9, 6.0)],
)
def test_non_refresher_says_bye_before_expiry(interval: int, bye_after: float) -> None:
    t = LegTimer(interval, we_refresh=False, refreshed_at=1000.0)
    assert t.due() == (1000.0 + bye_after, Action.EXPIRE)


def test_refresher_refreshes_at_half_time() -> None:
    t = LegTimer(1800, we_refresh=True, refreshed_at=50.0)
    assert t.due() == (950.0, Action.REFRESH)


def test_start_from_either_negotiation() -> None:
    assert LegTimer.start(5.0, Accept(600, "uac")) == LegTimer(600, False, 5.0)
    assert LegTimer.start(5.0, Accept(600, "uas")) == LegTimer(600, True, 5.0)
    assert LegTimer.start(5.0, Accept(None)) is None
    assert LegTimer.start(5.0, (120, True)) == LegTimer(120, True, 5.0)
    assert LegTimer.start(5.0, None) is None
