"""The per-source security policy on a fake clock (no network, no sleeps)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pbx_core.pbx.auth import Authenticator, Outcome
from pbx_core.pbx.security import (
    Action,
    SecurityPolicy,
    SecuritySettings,
    SettingsError,
)
from pbx_core.sip.digest_client import answer_challenge
from pbx_core.sip.message import Request, Response, parse_message
from pbx_core.store.compile import compile_dir
from pbx_core.store.snapshot import Snapshot
from tests.conftest import FACTORY
from tests.fuzzing import fuzz_settings


def request(method: str = "REGISTER", agent: str | None = "Yealink SIP-T46S") -> Request:
    lines = [
        f"{method} sip:pbx.local SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK1",
        "From: <sip:100@pbx.local>;tag=a",
        "To: <sip:100@pbx.local>",
        "Call-ID: c1",
        f"CSeq: 1 {method}",
    ]
    if agent is not None:
        lines.append(f"User-Agent: {agent}")
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


REG = request()
ACK = request("ACK")
ATTACKER, OTHER = "198.51.100.66", "198.51.100.7"


def policy(**kw: object) -> SecurityPolicy:
    return SecurityPolicy(SecuritySettings(**kw))  # type: ignore[arg-type]  # test kwargs


# ---------------------------------------------------------------- failed auth and bans


def test_ten_failures_in_a_minute_ban_for_fifteen_minutes() -> None:
    p = SecurityPolicy()
    for i in range(9):
        assert p.auth_failed(ATTACKER, float(i)).action is Action.ALLOW
        assert p.check(ATTACKER, REG, float(i)).action is Action.ALLOW
    v = p.auth_failed(ATTACKER, 9.0)
    assert v.action is Action.DROP
    assert ATTACKER in v.reason and "banned for 900 s" in v.reason
    assert p.banned(ATTACKER, 9.0)
    banned = p.check(ATTACKER, REG, 10.0)
    assert banned.action is Action.DROP and banned.quiet and ATTACKER in banned.reason
    # Another source is untouched.
    assert p.check(OTHER, REG, 10.0).action is Action.ALLOW
    # Still dropped just before the end, allowed after it.
    assert p.check(ATTACKER, REG, 9.0 + 899.0).action is Action.DROP
    assert p.check(ATTACKER, REG, 9.0 + 900.0).action is Action.ALLOW
    assert not p.banned(ATTACKER, 909.0)
    assert p.bans(909.0) == []


def test_failures_spread_wider_than_the_window_never_ban() -> None:
    p = SecurityPolicy()
    for i in range(100):
        # One failure every 7 s: at most 9 inside any 60 s window.
        assert p.auth_failed(ATTACKER, i * 7.0).action is Action.ALLOW
    assert not p.banned(ATTACKER, 700.0)


def test_window_is_sliding() -> None:
    p = policy(ban_failures=3, ban_window=10.0)
    p.auth_failed(ATTACKER, 0.0)
    p.auth_failed(ATTACKER, 9.0)
    assert p.auth_failed(ATTACKER, 10.5).action is Action.ALLOW  # the one at 0 expired
    assert p.auth_failed(ATTACKER, 11.0).action is Action.DROP  # 9, 10.5, 11


def test_success_does_not_forgive_failures() -> None:
    p = policy(ban_failures=3)
    p.auth_failed(ATTACKER, 0.0)
    p.auth_failed(ATTACKER, 1.0)
    p.auth_succeeded(ATTACKER, 2.0)
    assert p.auth_failed(ATTACKER, 3.0).action is Action.DROP


def test_success_forgets_expired_failures() -> None:
    p = policy(ban_failures=3, ban_window=10.0)
    p.auth_failed(ATTACKER, 0.0)
    p.auth_succeeded(ATTACKER, 20.0)
    assert p.sizes()[1] == 0


def test_banning_can_be_turned_off() -> None:
    p = policy(ban_failures=0)
    for i in range(50):
        assert p.auth_failed(ATTACKER, i * 0.1).action is Action.ALLOW
    assert p.check(ATTACKER, REG, 5.0).action is Action.ALLOW


def test_unban() -> None:
    p = policy(ban_failures=1)
    p.auth_failed(ATTACKER, 0.0)
    assert p.banned(ATTACKER, 1.0)
    assert p.bans(1.0) == [{"source": ATTACKER, "remaining": 899, "dropped": 0}]
    assert p.unban(ATTACKER)
    assert not p.unban(ATTACKER)
    assert p.check(ATTACKER, REG, 2.0).action is Action.ALLOW


def test_banned_source_drops_responses_too() -> None:
    p = policy(ban_failures=1)
    p.auth_failed(ATTACKER, 0.0)
    resp = REG.reply(200, to_tag="x")
    assert isinstance(resp, Response)
    assert p.check(ATTACKER, resp, 1.0).action is Action.DROP
    assert p.bans(1.0)[0]["dropped"] == 1


# ---------------------------------------------------------------- scanners


@pytest.mark.parametrize(
    "agent",
    [
        "friendly-scanner",
        "Friendly-Scanner",
        "sipvicious 0.3.4",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "pplsip",
        "SIPVicious PRO",
        "Mozilla/5.0 sundayddr",
    ],
)
def test_scanner_user_agents_are_dropped(agent: str) -> None:
    p = SecurityPolicy()
    v = p.check(ATTACKER, request("OPTIONS", agent), 0.0)
    assert v.action is Action.DROP
    assert ATTACKER in v.reason and "scanner" in v.reason


@pytest.mark.parametrize(
    "agent", [None, "", "Yealink SIP-T46S 66.86.0.15", "baresip v1.0.0", "sipsak 0.9.8"]
)
def test_ordinary_user_agents_pass(agent: str | None) -> None:
    assert SecurityPolicy().check(ATTACKER, request("OPTIONS", agent), 0.0).action is Action.ALLOW


def test_scanner_keeps_going_gets_banned() -> None:
    p = policy(ban_failures=5)
    scan = request("OPTIONS", "friendly-scanner")
    reasons = [p.check(ATTACKER, scan, i * 0.01).reason for i in range(5)]
    assert "banned" in reasons[-1] and all("banned" not in r for r in reasons[:-1])
    # Now even a request with an innocent User-Agent is dropped.
    assert p.check(ATTACKER, REG, 1.0).action is Action.DROP


def test_extra_scanner_agents_from_settings() -> None:
    p = SecurityPolicy({"sec_scanner_agents": "EvilDialer, x-probe"})
    assert p.check(ATTACKER, request("OPTIONS", "evildialer 2"), 0.0).action is Action.DROP
    assert p.check(OTHER, request("OPTIONS", "X-Probe"), 0.0).action is Action.DROP
    assert p.check(OTHER, request("OPTIONS", "friendly-scanner"), 0.0).action is Action.DROP


# ---------------------------------------------------------------- rate limit


def test_burst_then_one_503_then_silence_then_recovery() -> None:
    p = policy(rate=50.0, burst=100.0)
    for _ in range(100):
        assert p.check(ATTACKER, REG, 0.0).action is Action.ALLOW
    v = p.check(ATTACKER, REG, 0.0)
    assert v.action is Action.REJECT and v.status == 503
    assert v.headers == (("Retry-After", "2"),) and ATTACKER in v.reason and not v.quiet
    for _ in range(50):
        d = p.check(ATTACKER, REG, 0.0)
        assert d.action is Action.DROP and d.quiet
    assert p.check(OTHER, REG, 0.0).action is Action.ALLOW
    # 0.1 s later five tokens are back.
    assert [p.check(ATTACKER, REG, 0.1).action for _ in range(6)] == [Action.ALLOW] * 5 + [
        Action.DROP
    ]
    # After a quiet second the bucket is well filled and a new episode gets its 503.
    for _ in range(50):
        assert p.check(ATTACKER, REG, 1.2).action is Action.ALLOW
    actions = [p.check(ATTACKER, REG, 1.2).action for _ in range(60)]
    assert Action.REJECT in actions


def test_steady_rate_under_the_limit_is_always_allowed() -> None:
    p = policy(rate=50.0, burst=100.0)
    assert all(p.check(ATTACKER, REG, i / 49.0).action is Action.ALLOW for i in range(5000))


def test_ack_and_responses_over_the_limit_are_dropped_not_answered() -> None:
    p = policy(rate=1.0, burst=1.0)
    assert p.check(ATTACKER, ACK, 0.0).action is Action.ALLOW
    assert p.check(ATTACKER, ACK, 0.0).action is Action.DROP
    assert p.check(ATTACKER, REG.reply(180), 0.0).action is Action.DROP


def test_rate_limit_can_be_turned_off() -> None:
    p = policy(rate=0.0)
    assert all(p.check(ATTACKER, REG, 0.0).action is Action.ALLOW for _ in range(1000))
    assert p.sizes()[0] == 0


# ---------------------------------------------------------------- trusted sources


def test_trusted_sources_are_never_banned_or_limited() -> None:
    p = SecurityPolicy(
        SecuritySettings(ban_failures=1, rate=1.0, burst=1.0, trusted=("10.1.0.0/16",)),
        trusted=["192.0.2.10"],
    )
    for ip in ("192.0.2.10", "10.1.200.3"):
        assert p.auth_failed(ip, 0.0).action is Action.ALLOW
        assert not p.banned(ip, 0.0)
        assert all(p.check(ip, REG, 0.0).action is Action.ALLOW for _ in range(100))
        assert p.trusted(ip)
    assert p.check("10.2.0.1", REG, 0.0).action is Action.ALLOW
    assert p.check("10.2.0.1", REG, 0.0).action is Action.REJECT


def test_ipv6_and_mapped_addresses() -> None:
    p = SecurityPolicy({"sec_trusted": "2001:db8::/32, [2001:db8:1::5], 10.0.0.0/8"})
    assert p.trusted("2001:db8:ffff::1")
    assert p.trusted("2001:db8:1::5")
    assert p.trusted("[2001:db8::9]")
    assert p.trusted("::ffff:10.9.8.7")
    assert not p.trusted("2001:db9::1")
    assert not p.trusted("not-an-address")


def test_reconfigure_keeps_bans_but_lifts_those_now_trusted() -> None:
    p = policy(ban_failures=1)
    p.auth_failed(ATTACKER, 0.0)
    p.auth_failed(OTHER, 0.0)
    p.configure(SecuritySettings(ban_failures=1), trusted=[ATTACKER])
    assert not p.banned(ATTACKER, 1.0)
    assert p.banned(OTHER, 1.0)


# ---------------------------------------------------------------- settings


def test_settings_from_pbx_settings() -> None:
    s = SecuritySettings.from_settings(
        {
            "domain": "pbx.local",
            "sec_ban_failures": "5",
            "sec_ban_window": 30,
            "sec_ban_seconds": "3600",
            "sec_rate": "20",
            "sec_burst": "40",
            "sec_trusted": "192.0.2.1, 10.0.0.0/8",
            "sec_max_sources": "100",
        }
    )
    assert (s.ban_failures, s.ban_window, s.ban_seconds) == (5, 30, 3600)
    assert (s.rate, s.burst, s.max_sources) == (20, 40, 100)
    assert s.trusted == ("192.0.2.1", "10.0.0.0/8")
    assert SecuritySettings.from_settings({}) == SecuritySettings()
    assert SecuritySettings.from_settings({"sec_rate": ""}).rate == 50


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"sec_rate": "fast"}, "'sec_rate' must be an integer"),
        ({"sec_ban_seconds": "0"}, "'sec_ban_seconds' must be at least 1"),
        ({"sec_burst": "-3"}, "'sec_burst' must be at least 1"),
    ],
)
def test_bad_settings_say_which(settings_: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        SecuritySettings.from_settings(settings_)


def test_bad_trusted_entry_says_which() -> None:
    with pytest.raises(SettingsError, match=re.escape("'10.0.0.300'")):
        SecurityPolicy({"sec_trusted": "10.0.0.1, 10.0.0.300"})


# ---------------------------------------------------------------- bounded memory


def test_spoofed_source_flood_keeps_tables_bounded() -> None:
    p = policy(max_sources=100, max_bans=10, ban_failures=2)
    for i in range(20_000):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        p.check(ip, REG, 0.0)
        p.auth_failed(ip, 0.0)
        p.auth_failed(ip, 0.0)
    buckets, failures, bans = p.sizes()
    assert buckets <= 100 and failures <= 100 and bans <= 10


def test_ban_table_full_drops_the_ban_ending_first() -> None:
    p = policy(max_bans=2, ban_failures=1, ban_seconds=100.0)
    p.auth_failed("10.0.0.1", 0.0)
    p.auth_failed("10.0.0.2", 10.0)
    p.auth_failed("10.0.0.3", 20.0)
    assert not p.banned("10.0.0.1", 21.0)
    assert p.banned("10.0.0.2", 21.0) and p.banned("10.0.0.3", 21.0)


def test_idle_sources_are_forgotten() -> None:
    p = policy(rate=10.0, burst=10.0, ban_window=60.0)
    for i in range(50):
        p.check(f"10.0.0.{i}", REG, 0.0)
        p.auth_failed(f"10.0.0.{i}", 0.0)
    # An hour later every one is refilled/expired: new traffic sweeps them out.
    for i in range(50):
        p.check(f"10.1.0.{i}", REG, 3600.0 + i)
        p.auth_failed(f"10.1.0.{i}", 3600.0 + i)
    buckets, failures, _ = p.sizes()
    assert buckets <= 50 and failures <= 50


@pytest.mark.fuzz
@fuzz_settings(200)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.floats(0, 0.5), st.sampled_from(["check", "fail", "ok"])),
        max_size=300,
    )
)
def test_model_never_over_admits(events: list[tuple[int, float, str]]) -> None:
    """However requests and failures interleave: no source gets more than burst + rate*t
    requests through, and a source is banned exactly when its failures say so."""
    p = policy(rate=5.0, burst=3.0, ban_failures=4, ban_window=2.0, ban_seconds=5.0)
    now = 0.0
    allowed: dict[int, int] = {}
    fails: dict[int, list[float]] = {}
    ban_until: dict[int, float] = {}
    for src, dt, what in events:
        now += dt
        ip = f"10.0.0.{src}"
        if what == "fail":
            v = p.auth_failed(ip, now)
            window = [t for t in fails.get(src, []) if t > now - 2.0] + [now]
            if len(window) >= 4:
                assert v.action is Action.DROP
                ban_until[src] = now + 5.0
                window = []
            else:
                assert v.action is Action.ALLOW
            fails[src] = window
        elif what == "ok":
            p.auth_succeeded(ip, now)
        else:
            v = p.check(ip, REG, now)
            if now < ban_until.get(src, -1.0):
                assert v.action is Action.DROP
            elif v.action is Action.ALLOW:
                allowed[src] = allowed.get(src, 0) + 1
                assert allowed[src] <= 3 + 5.0 * now + 1e-9


# ---------------------------------------------------------------- only fresh failures ban


@pytest.fixture(scope="module")
def factory_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshot]:
    path = tmp_path_factory.mktemp("snap") / "s.mdb"
    compile_dir(FACTORY, path)
    with Snapshot(path) as snap:
        yield snap


# Fresh wrong answers weighted up, so that bans happen in the examples.
_KINDS = ("fresh-wrong",) * 4 + ("stale-wrong", "foreign-wrong", "replayed-right", "good")


@pytest.mark.fuzz
@fuzz_settings(60)
@given(
    events=st.lists(
        st.tuples(st.sampled_from(_KINDS), st.floats(0.0, 4.0, allow_nan=False)), max_size=50
    )
)
@example(events=[("stale-wrong", 0.1)] * 30 + [("foreign-wrong", 0.1)] * 30)
@example(events=[("replayed-right", 0.1)] * 30 + [("fresh-wrong", 1.0)] * 10)
def test_only_wrong_answers_to_fresh_nonces_ever_ban(
    factory_snapshot: Snapshot, events: list[tuple[str, float]]
) -> None:
    """Any mix of wrong answers to fresh nonces, answers to expired nonces, to nonces
    of another instance, replayed right answers and good logins, fed to the policy as
    the engine does (`auth_failed` only when `counts`): the source is banned exactly
    when ten wrong answers to fresh nonces fell within a minute."""
    snap = factory_snapshot
    auth = Authenticator(b"s" * 32)
    foreign = Authenticator(b"f" * 32)
    pol = SecurityPolicy(SecuritySettings(ban_failures=10, ban_window=60, ban_seconds=900))
    ip = "203.0.113.77"
    old_nonce_at = -1000.0  # issued long before: stale (lifetime 300 s) by the first event
    captured = None
    now = 0.0
    fresh_failures: list[float] = []
    for n, (kind, gap) in enumerate(events):
        now += gap
        source = foreign if kind == "foreign-wrong" else auth
        issued = old_nonce_at if kind == "stale-wrong" else now
        value = source.challenge(REG, "pbx.local", issued).headers.getall("www-authenticate")[0]
        good = kind in ("replayed-right", "good")
        answer = answer_challenge(
            value,
            "REGISTER",
            "sip:pbx.local",
            "100",
            password="change-me-100" if good else f"guess{n}",
            cnonce="c",
        )
        if kind == "replayed-right":
            captured = captured or answer
            answer = captured
        msg = parse_message(
            bytes(REG).replace(
                b"Content-Length", f"Authorization: {answer}\r\nContent-Length".encode()
            )
        )
        assert isinstance(msg, Request)
        result = auth.check(msg, snap, "pbx.local", now)
        if kind == "fresh-wrong":
            assert result.outcome is Outcome.FAILED and result.counts
            fresh_failures.append(now)
        elif kind != "good":
            assert not result.counts, (kind, result)
        if result.outcome is Outcome.FAILED and result.counts:
            banned = pol.auth_failed(ip, now).action is not Action.ALLOW
        else:
            banned = False
        recent = [t for t in fresh_failures if t > now - 60]
        assert banned is (len(recent) >= 10), (kind, recent, now)
        if banned:
            assert pol.banned(ip, now)
            return  # from now on the gate drops the source's packets
    assert not pol.banned(ip, now)
