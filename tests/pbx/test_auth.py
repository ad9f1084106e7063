"""The PBX's digest authentication against the subscriber table (pbx/auth.py): realms
of every domain of the table (as Kamailio serves them), the algorithms offered per
`auth_algorithms` and per row, and which failures may count towards a ban.

The snapshots are compiled from the factory tables plus rows of a second domain."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx_core.pbx.auth import Authenticator, Outcome, parse_algorithms
from pbx_core.pbx.security import Action, SecurityPolicy, SecuritySettings
from pbx_core.sip.digest import compute_ha1, parse_challenge
from pbx_core.sip.digest_client import answer_challenge
from pbx_core.sip.message import Request, parse_message
from pbx_core.store.build import check_dir
from pbx_core.store.compile import compile_dir
from pbx_core.store.model import ExtensionSettings, User, pack, unpack
from pbx_core.store.snapshot import Snapshot
from tests.conftest import FACTORY, ROOT

KAMAILIO = ROOT / "tests/store/vectors/kamailio"
PW = {"100": "change-me-100", "200": "pw-200", "201": "pw-201"}
# 201@example.org as a SER/Kamailio table may hold it: an MD5 ha1, no password.
HA1_201 = compute_ha1("201", "example.org", PW["201"])


def tables(tmp: Path, algorithms: str | None) -> Path:
    d = tmp / f"cfg-{algorithms}"
    shutil.copytree(FACTORY, d)
    with (d / "subscriber").open("a") as f:
        f.write(f"5:200:example.org:{PW['200']}::\n6:201:example.org::{HA1_201}:\n")
    if algorithms is not None:
        with (d / "pbx_settings").open("a") as f:
            f.write(f"auth_algorithms:{algorithms}\n")
    return d


@pytest.fixture(scope="module", params=["MD5", "MD5,SHA-256", "SHA-256,MD5", "SHA-256"])
def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Authenticator, Snapshot, tuple[str, ...]]]:
    algorithms = str(request.param)
    tmp = tmp_path_factory.mktemp("auth")
    compile_dir(tables(tmp, algorithms), tmp / "s.mdb")
    with Snapshot(tmp / "s.mdb") as snap:
        auth = Authenticator(b"k" * 32)
        auth.configure(snap.settings)
        yield auth, snap, tuple(algorithms.split(","))


def req(
    method: str = "REGISTER",
    user: str = "100",
    host: str = "pbx.local",
    auth: str | None = None,
    uri: str | None = None,
) -> Request:
    lines = [
        f"{method} {uri or f'sip:{host}'} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK1",
        f"From: <sip:{user}@{host}>;tag=a",
        f"To: <sip:{'101' if method == 'INVITE' else user}@{host}>",
        "Call-ID: c1",
        f"CSeq: 1 {method}",
    ]
    if auth is not None:
        lines.append(
            f"{'Authorization' if method == 'REGISTER' else 'Proxy-Authorization'}: {auth}"
        )
    msg = parse_message(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def offered(auth: Authenticator, snap: Snapshot, r: Request, now: float = 10.0) -> list[str]:
    realm = auth.realm(r, snap, "pbx.local")
    resp = auth.challenge(r, realm, now, snap=snap)
    header = "www-authenticate" if r.method == "REGISTER" else "proxy-authenticate"
    chs = [parse_challenge(v) for v in resp.headers.getall(header)]
    assert len({c.nonce for c in chs}) == 1  # one nonce shared by the challenges
    assert all(c.realm == realm for c in chs)
    return [str(c.algorithm) for c in chs]


def login(
    auth: Authenticator,
    snap: Snapshot,
    user: str,
    host: str,
    algorithm: str,
    password: str,
    *,
    method: str = "REGISTER",
    now: float = 10.0,
    answer_at: float | None = None,
) -> Outcome:
    """Challenge, answer the challenge of `algorithm` with `password`, check."""
    first = req(method, user, host)
    realm = auth.realm(first, snap, "pbx.local")
    resp = auth.challenge(first, realm, now, snap=snap)
    header = "www-authenticate" if method == "REGISTER" else "proxy-authenticate"
    ch = next(
        c for c in map(parse_challenge, resp.headers.getall(header)) if c.algorithm == algorithm
    )
    uri = f"sip:{host}"
    value = answer_challenge(ch, method, uri, user, password=password, cnonce="c0ffee")
    second = req(method, user, host, value, uri=uri)
    return auth.check(second, snap, realm, now if answer_at is None else answer_at).outcome


# ---------------------------------------------------------------- algorithms


def test_offer_follows_the_setting_in_its_order(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, algorithms = env
    assert offered(auth, snap, req()) == list(algorithms)  # a row with a password
    assert offered(auth, snap, req("INVITE")) == list(algorithms)
    # Unknown users get what a full row gets: the offer tells nothing about them.
    assert offered(auth, snap, req(user="999")) == list(algorithms)
    assert offered(auth, snap, req(user="999", host="example.org")) == list(algorithms)


def test_row_with_only_an_md5_ha1_is_offered_md5_alone(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, _algorithms = env
    assert offered(auth, snap, req(user="201", host="example.org")) == ["MD5"]
    assert login(auth, snap, "201", "example.org", "MD5", PW["201"]) is Outcome.OK


def test_each_offered_algorithm_logs_in_and_only_those(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, algorithms = env
    for algorithm in algorithms:
        for user, host in (("100", "pbx.local"), ("200", "example.org")):
            assert login(auth, snap, user, host, algorithm, PW[user]) is Outcome.OK
            assert login(auth, snap, user, host, algorithm, "wrong") is Outcome.FAILED
    # An answer in an algorithm not offered fails like a wrong password.
    other = (
        next(a for a in ("MD5", "SHA-256") if a not in algorithms) if len(algorithms) == 1 else None
    )
    if other is not None:
        challenge = auth.server.make_challenge("pbx.local", 10.0, other)
        value = answer_challenge(
            challenge, "REGISTER", "sip:pbx.local", "100", password=PW["100"], cnonce="c"
        )
        result = auth.check(req(auth=value, uri="sip:pbx.local"), snap, "pbx.local", 10.0)
        assert result.outcome is Outcome.FAILED and result.reason == "response mismatch"


def test_sha256_answer_of_an_md5_only_row_fails(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, _algorithms = env
    challenge = auth.server.make_challenge("example.org", 10.0, "SHA-256")
    value = answer_challenge(
        challenge, "REGISTER", "sip:example.org", "201", password=PW["201"], cnonce="c"
    )
    r = req(user="201", host="example.org", auth=value, uri="sip:example.org")
    assert auth.check(r, snap, "example.org", 10.0).outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("MD5", ("MD5",)),
        ("SHA-256,MD5", ("SHA-256", "MD5")),
        (" MD5 , SHA-256 ", ("MD5", "SHA-256")),
        ("", ("MD5",)),
        (None, ("MD5",)),
        ("MD5,MD5", ("MD5",)),
        ("SHA-512-256", ("MD5",)),
    ],
)
def test_parse_algorithms(text: object, want: tuple[str, ...]) -> None:
    assert parse_algorithms(text) == want


@pytest.mark.parametrize("value", ["sha-256", "MD5,", "SHA-256,SHA-256", "MD5-sess", "AKAv1-MD5"])
def test_db_check_refuses_other_algorithm_lists(tmp_path: Path, value: str) -> None:
    report = check_dir(tables(tmp_path, value))
    assert any("auth_algorithms" in str(e) for e in report.errors), report.errors


def test_db_check_warns_about_md5_only_rows_when_sha256_is_offered(tmp_path: Path) -> None:
    for algorithms, warned in (("MD5", False), ("MD5,SHA-256", True), ("SHA-256", True)):
        report = check_dir(tables(tmp_path / algorithms, algorithms))
        assert report.errors == []
        hits = [str(w) for w in report.warnings if "201@example.org" in str(w)]
        assert bool(hits) is warned, report.warnings
        if warned:
            assert "offered MD5 only" in hits[0] and "subscriber:7:" in hits[0]


# ---------------------------------------------------------------- realms and domains


def test_realm_is_the_requests_domain_when_ours(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, _algorithms = env
    assert auth.realm(req(host="example.org"), snap, "pbx.local") == "example.org"
    assert auth.realm(req(host="EXAMPLE.org"), snap, "pbx.local") == "example.org"
    assert auth.realm(req(host="pbx.local"), snap, "pbx.local") == "pbx.local"
    # Phones that put the PBX's address (or anything else) in From/To: the setting.
    for host in ("192.0.2.1", "[2001:db8::1]", "elsewhere.example", "pbx"):
        assert auth.realm(req(host=host), snap, "pbx.local") == "pbx.local"
    # REGISTER: the To domain; other requests: the From domain.
    r = req("INVITE", host="example.org")
    assert auth.realm(r, snap, "pbx.local") == "example.org"


def test_phone_registering_to_the_pbx_address_logs_in_with_the_setting_realm(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, algorithms = env
    for algorithm in algorithms:
        assert login(auth, snap, "100", "192.0.2.1", algorithm, PW["100"]) is Outcome.OK
        assert login(auth, snap, "100", "192.0.2.1", algorithm, PW["100"], method="INVITE") is (
            Outcome.OK
        )


def test_user_of_one_domain_cannot_log_in_to_the_other(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, algorithms = env
    for algorithm in algorithms:
        assert login(auth, snap, "200", "pbx.local", algorithm, PW["200"]) is Outcome.FAILED
        assert login(auth, snap, "100", "example.org", algorithm, PW["100"]) is Outcome.FAILED
    # Credentials for another realm than the request's are no credentials for us.
    challenge = auth.server.make_challenge("example.org", 10.0, "MD5")
    value = answer_challenge(
        challenge, "REGISTER", "sip:pbx.local", "200", password=PW["200"], cnonce="c"
    )
    assert (
        auth.check(req(user="200", auth=value), snap, "pbx.local", 10.0).outcome
        is Outcome.CHALLENGE
    )


def test_kamailio_table_copied_as_it_is_logs_in(tmp_path: Path) -> None:
    """tests/store/vectors/kamailio: example.org rows (alice with a password, bob with
    an ha1 only); served even when the setting names another domain."""
    for domain in ("example.org", "pbx.local"):
        d = tmp_path / domain
        shutil.copytree(KAMAILIO, d)
        (d / "pbx_settings").write_text(f"name(string) value(string,null)\ndomain:{domain}\n")
        compile_dir(d, d / "s.mdb")
        with Snapshot(d / "s.mdb") as snap:
            auth = Authenticator(b"k" * 32)
            auth.configure(snap.settings)
            assert auth.domains(snap, domain).keys() == {"example.org", domain}
            assert login(auth, snap, "alice", "example.org", "MD5", "wonderland") is Outcome.OK
            bob = snap.user("bob", "example.org")
            assert bob is not None and bob.ha1_sha256 is None
            # bob's ha1 is what Kamailio stores; the realm must be the row's domain.
            r = req(user="bob", host="example.org")
            assert auth.realm(r, snap, domain) == "example.org"


def test_kamailio_domain_table_makes_a_domain_ours(tmp_path: Path) -> None:
    d = tables(tmp_path, None)
    (d / "domain").write_text("id(int,auto) domain(string) did(string,null)\n1:voice.example::\n")
    compile_dir(d, tmp_path / "s.mdb")
    with Snapshot(tmp_path / "s.mdb") as snap:
        auth = Authenticator(b"k" * 32)
        assert "voice.example" in auth.domains(snap, "pbx.local")
        assert auth.realm(req(host="voice.example"), snap, "pbx.local") == "voice.example"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(host=st.text(st.sampled_from("abcdefgx.-0123456789"), min_size=1, max_size=20))
def test_realm_is_always_one_of_ours(tmp_path: Path, host: str) -> None:
    """Whatever the request's host, the realm is the setting or a table's domain."""
    snap_path = tmp_path / "s.mdb"
    if not snap_path.exists():
        compile_dir(tables(tmp_path, None), snap_path)
    with Snapshot(snap_path) as snap:
        auth = Authenticator(b"k" * 32)
        try:
            r = req(host=host)
        except Exception:  # noqa: BLE001  # not a host the parser takes: nothing to ask
            return
        assert auth.realm(r, snap, "pbx.local") in ("pbx.local", "example.org")


# ---------------------------------------------------------------- what counts towards a ban


def test_only_failures_answering_a_fresh_nonce_count(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, _algorithms = env
    first = req()
    resp = auth.challenge(first, "pbx.local", 10.0, snap=snap)
    ch = parse_challenge(resp.headers.getall("www-authenticate")[0])
    wrong = answer_challenge(ch, "REGISTER", "sip:pbx.local", "100", password="guess", cnonce="c")
    right = answer_challenge(ch, "REGISTER", "sip:pbx.local", "100", password=PW["100"], cnonce="c")
    r_wrong = req(auth=wrong, uri="sip:pbx.local")
    r_right = req(auth=right, uri="sip:pbx.local")
    fresh = auth.check(r_wrong, snap, "pbx.local", 20.0)
    assert fresh.outcome is Outcome.FAILED and fresh.counts
    stale = auth.check(r_wrong, snap, "pbx.local", 10.0 + 301)
    assert stale.outcome is Outcome.FAILED and not stale.counts
    # A right answer replayed: OK once, then stale (nc replay), never a failure.
    assert auth.check(r_right, snap, "pbx.local", 20.0).outcome is Outcome.OK
    again = auth.check(r_right, snap, "pbx.local", 20.0)
    assert again.outcome is Outcome.STALE and not again.counts
    old = auth.check(r_right, snap, "pbx.local", 10.0 + 301)
    assert old.outcome is Outcome.STALE and not old.counts
    # A nonce not ours (forged, another secret: a replay from before a restart).
    forged = wrong.replace(ch.nonce, ch.nonce[:-2] + ("AA" if ch.nonce[-2:] != "AA" else "QA"))
    other = auth.check(req(auth=forged, uri="sip:pbx.local"), snap, "pbx.local", 20.0)
    assert other.outcome is Outcome.FAILED and not other.counts


def feed(
    policy: SecurityPolicy, auth: Authenticator, snap: Snapshot, r: Request, now: float
) -> bool:
    """What the engine does with one request's outcome: True when it banned."""
    result = auth.check(r, snap, "pbx.local", now)
    if result.outcome is Outcome.FAILED and result.counts:
        return policy.auth_failed("203.0.113.5", now).action is not Action.ALLOW
    return False


def test_replaying_old_answers_many_times_never_bans_but_fresh_guesses_do(
    env: tuple[Authenticator, Snapshot, tuple[str, ...]],
) -> None:
    auth, snap, _algorithms = env
    policy = SecurityPolicy(SecuritySettings(ban_failures=10, ban_window=60, ban_seconds=900))
    ch = parse_challenge(
        auth.challenge(req(), "pbx.local", 0.0, snap=snap).headers.getall("www-authenticate")[0]
    )
    wrong = answer_challenge(ch, "REGISTER", "sip:pbx.local", "100", password="x", cnonce="c")
    # 200 replays of one wrong answer, its nonce expired (a captured REGISTER sent
    # from a forged address): none counts.
    for i in range(200):
        assert not feed(policy, auth, snap, req(auth=wrong, uri="sip:pbx.local"), 400.0 + i * 0.1)
    assert not policy.banned("203.0.113.5", 430.0)
    # Ten wrong passwords, each answering a fresh nonce: banned at the tenth.
    banned_at = None
    for i in range(10):
        now = 500.0 + i
        fresh = auth.challenge(req(), "pbx.local", now, snap=snap).headers.getall(
            "www-authenticate"
        )[0]
        guess = answer_challenge(
            fresh, "REGISTER", "sip:pbx.local", "100", password=f"g{i}", cnonce="c"
        )
        if feed(policy, auth, snap, req(auth=guess, uri="sip:pbx.local"), now):
            banned_at = i
    assert banned_at == 9
    assert policy.banned("203.0.113.5", 510.0)


def test_snapshot_rows_from_before_the_sha256_column_still_decode() -> None:
    """A snapshot compiled before User.ha1_sha256 existed: its rows have one field
    fewer and read as MD5-only rows; a row with more fields than we know is refused."""
    user = User("100", "pbx.local", "a" * 32, None, None, ExtensionSettings(), "b" * 64)
    packed = pack(user)
    assert unpack(User, packed) == user
    old = unpack(User, packed[:-1])
    assert old.ha1_sha256 is None and old.ha1 == "a" * 32
    with pytest.raises(ValueError, match="fields"):
        unpack(User, [*packed, None])
