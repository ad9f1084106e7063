"""Digest authentication: RFC example vectors, header grammar, nonces, server
verification and the client side."""

# Test passwords are the RFC examples' and throwaway literals, and MD5 is the
# protocol's own hash, recomputed here to check the module against hashlib:
# ruff: noqa: S324

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx_core.sip import digest
from pbx_core.sip.digest import (
    AuthStatus,
    Challenge,
    Credentials,
    DigestError,
    DigestServer,
    NonceFactory,
    NonceStatus,
    choose_challenge,
    compute_ha1,
    compute_ha1b,
    compute_response,
    parse_challenge,
    parse_credentials,
)
from pbx_core.sip.digest_client import DigestClient, answer_challenge
from pbx_core.sip.errors import ParseError
from pbx_core.sip.message import parse_message
from tests.fuzzing import fuzz_settings

SECRET = b"0123456789abcdef-test-secret"

# --- RFC 7616 §3.9.1 -------------------------------------------------------------

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def rfc7616_challenge(algorithm: str) -> str:
    # As printed in the RFC, folded onto one line.
    return (
        'Digest realm="http-auth@example.org", qop="auth, auth-int", '
        f"algorithm={algorithm}, "
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_client(algorithm: str) -> None:
    ch = parse_challenge(rfc7616_challenge(algorithm))
    assert ch.realm == "http-auth@example.org"
    assert ch.qop == ("auth", "auth-int")
    assert ch.algorithm == algorithm
    assert ch.opaque == RFC7616_OPAQUE
    value = answer_challenge(
        ch,
        "GET",
        "/dir/index.html",
        "Mufasa",
        password="Circle of Life",
        cnonce=RFC7616_CNONCE,
        nc=1,
    )
    creds = parse_credentials(value)
    assert creds.response == RFC7616_RESPONSES[algorithm]
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.cnonce == RFC7616_CNONCE
    assert creds.opaque == RFC7616_OPAQUE
    assert creds.algorithm == algorithm
    assert creds.username == "Mufasa"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_authorization_header(algorithm: str) -> None:
    text = (
        'Digest username="Mufasa",\t realm="http-auth@example.org", '
        f'uri="/dir/index.html", algorithm={algorithm}, nonce="{RFC7616_NONCE}", '
        f'nc=00000001, cnonce="{RFC7616_CNONCE}", qop=auth, '
        f'response="{RFC7616_RESPONSES[algorithm]}", opaque="{RFC7616_OPAQUE}"'
    )
    creds = parse_credentials(text)
    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    expected = compute_response(
        ha1,
        algorithm=creds.algorithm,
        nonce=creds.nonce,
        method="GET",
        uri=creds.uri,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    assert expected == creds.response
    assert creds.nc_value == 1


def test_rfc2617_example() -> None:
    # RFC 2617 §3.5 (password "Circle Of Life", capital O).
    text = (
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", '
        'qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    creds = parse_credentials(text)
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    got = compute_response(
        ha1,
        nonce=creds.nonce,
        method="GET",
        uri=creds.uri,
        qop=creds.qop,
        nc=creds.nc,
        cnonce=creds.cnonce,
    )
    assert got == "6629fae49393a05397450978507c4ef1"


def test_rfc2069_example_with_errata() -> None:
    # RFC 2069 §2.4, response as corrected by its erratum (no qop, no cnonce).
    ch = parse_challenge(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert ch.qop == ()
    value = answer_challenge(ch, "GET", "/dir/index.html", "Mufasa", password="CircleOfLife")
    creds = parse_credentials(value)
    assert creds.response == "1949323746fe6a43ef61f9606e7febea"
    assert creds.qop is None and creds.nc is None and creds.cnonce is None


def test_ha1_helpers() -> None:
    assert compute_ha1("alice", "pbx", "pw") == hashlib.md5(b"alice:pbx:pw").hexdigest()
    assert (
        compute_ha1("alice", "pbx", "pw", "sha-256") == hashlib.sha256(b"alice:pbx:pw").hexdigest()
    )
    assert compute_ha1b("alice", "example.com", "pbx", "pw") == (
        hashlib.md5(b"alice@example.com:pbx:pw").hexdigest()
    )
    with pytest.raises(DigestError):
        compute_ha1("a", "b", "c", "SHA-1")


def test_sess_and_auth_int_formulas() -> None:
    ha1 = compute_ha1("bob", "r", "pw")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    sess_ha1 = md5(f"{ha1}:n:c")
    body = b"v=0\r\n"
    ha2 = md5("INVITE:sip:x@y:" + hashlib.md5(body).hexdigest())
    assert compute_response(
        ha1,
        algorithm="MD5-sess",
        nonce="n",
        method="INVITE",
        uri="sip:x@y",
        qop="auth-int",
        nc="00000002",
        cnonce="c",
        body=body,
    ) == md5(f"{sess_ha1}:n:00000002:c:auth-int:{ha2}")
    with pytest.raises(DigestError):
        compute_response(ha1, nonce="n", method="M", uri="u", qop="bogus", nc="1", cnonce="c")


# --- Header grammar -------------------------------------------------------------


def test_parse_is_case_insensitive_and_keeps_unknown_params() -> None:
    ch = parse_challenge(
        'digest REALM="a\\"b\\\\c", Nonce=abc, STALE=TRUE, Algorithm=sha-256, '
        'qop="auth-int,auth", x-Custom="hello world", other=tok'
    )
    assert ch.realm == 'a"b\\c'
    assert ch.nonce == "abc"
    assert ch.stale is True
    assert ch.algorithm == "sha-256"
    assert ch.qop == ("auth-int", "auth")
    assert ch.extra == (("x-custom", "hello world"), ("other", "tok"))
    assert parse_challenge(str(ch)) == ch
    assert 'x-custom="hello world"' in str(ch)
    assert "other=tok" in str(ch)


def test_parse_tolerates_whitespace_empty_elements_and_quoted_tokens() -> None:
    creds = parse_credentials(
        ' Digest  username = "u" ,, realm="r",nonce="n", uri=sip:u@host;transport=udp ,'
        ' response="0123abcd", algorithm="MD5", qop="auth", nc=1, cnonce="c", '
    )
    assert creds.uri == "sip:u@host;transport=udp"
    assert creds.algorithm == "MD5"
    assert creds.qop == "auth"
    assert creds.nc == "1" and creds.nc_value == 1


def test_comma_inside_quotes_is_not_a_separator() -> None:
    ch = parse_challenge('Digest realm="IP Camera(C1234), main", nonce="x,y"')
    assert ch.realm == "IP Camera(C1234), main"
    assert ch.nonce == "x,y"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "auth scheme"),
        ('Basic realm="x"', "not Digest"),
        ('Digest nonce="n"', "lacks realm"),
        ('Digest realm="r"', "lacks nonce"),
        ('Digest realm="r", nonce="n", realm="s"', "repeats"),
        ('Digest realm="r, nonce="n"', "malformed"),
        ('Digest realm="r" nonce="n"', "malformed"),
        ('Digest realm="a\nb", nonce="n"', "malformed"),
        ('Digest realm="r", nonce=', "malformed"),
        ("Digest realm", "malformed"),
    ],
)
def test_bad_challenges(value: str, fragment: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_challenge(value)
    assert exc.value.status == 400
    assert fragment in exc.value.reason


GOOD_CREDS = 'Digest username="u", realm="r", nonce="n", uri="sip:r", response="ab12"'


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (GOOD_CREDS.replace('username="u", ', ""), "lack username"),
        (GOOD_CREDS.replace('response="ab12"', 'response="xyz"'), "not hexadecimal"),
        (GOOD_CREDS + ", qop=auth", "lack nc or cnonce"),
        (GOOD_CREDS + ', qop=auth, nc=123456789, cnonce="c"', "nc"),
        (GOOD_CREDS + ', qop=auth, nc=zz, cnonce="c"', "nc"),
    ],
)
def test_bad_credentials(value: str, fragment: str) -> None:
    with pytest.raises(ParseError) as exc:
        parse_credentials(value)
    assert exc.value.status == 400
    assert fragment in exc.value.reason


def test_serialization_quotes_per_rfc3261() -> None:
    creds = Credentials(
        username="al ice",
        realm="r",
        nonce="n",
        uri="sip:r",
        response="ab",
        algorithm="SHA-256",
        cnonce="c",
        qop="auth",
        nc="0000000a",
    )
    text = str(creds)
    assert text.startswith('Digest username="al ice", realm="r", nonce="n", uri="sip:r"')
    assert "algorithm=SHA-256" in text and "qop=auth" in text and "nc=0000000a" in text
    with pytest.raises(ValueError, match="CR or LF"):
        str(Challenge(realm="a\r\nb", nonce="n"))


# Printable text and a few awkward characters, never CR/LF (not representable).
_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
    max_size=20,
)
_token = st.from_regex(r"[A-Za-z0-9.!%*_+`'~-]{1,10}", fullmatch=True)
_hex = st.from_regex(r"[0-9a-f]{1,64}", fullmatch=True)
_extra_name = _token.map(str.lower).filter(
    lambda n: (
        n
        not in {
            "realm",
            "domain",
            "nonce",
            "opaque",
            "stale",
            "algorithm",
            "qop",
            "username",
            "uri",
        }
        | {"response", "cnonce", "nc"}
    )
)
_extras = st.lists(st.tuples(_extra_name, _text), max_size=3, unique_by=lambda kv: kv[0]).map(tuple)


_challenges = st.builds(
    Challenge,
    realm=_text,
    nonce=_text,
    algorithm=st.none() | _token,
    qop=st.lists(_token, max_size=3).map(tuple),
    opaque=st.none() | _text,
    stale=st.booleans(),
    domain=st.none() | _text,
    extra=_extras,
)


@given(_challenges)
def test_challenge_round_trip(ch: Challenge) -> None:
    assert parse_challenge(str(ch)) == ch


@st.composite
def _credentials(draw: st.DrawFn) -> Credentials:
    auth = draw(st.none() | st.tuples(_token, st.from_regex(r"[0-9a-f]{8}", fullmatch=True), _text))
    qop, nc, cnonce = auth if auth is not None else (None, None, None)
    return Credentials(
        username=draw(_text),
        realm=draw(_text),
        nonce=draw(_text),
        uri=draw(_text),
        response=draw(_hex),
        algorithm=draw(st.none() | _token),
        cnonce=cnonce,
        opaque=draw(st.none() | _text),
        qop=qop,
        nc=nc,
        extra=draw(_extras),
    )


@given(_credentials())
def test_credentials_round_trip(creds: Credentials) -> None:
    assert parse_credentials(str(creds)) == creds


_fuzz_text = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "Digest",
                " ",
                ",",
                "=",
                '"',
                "\\",
                "realm",
                "nonce",
                "username",
                "uri",
                "response",
                "qop",
                "nc",
                "cnonce",
                "auth",
                "abc",
                "01",
                "\t",
                "\n",
                "\x00",
                "é",
                "\udcff",
            ]
        ),
        max_size=40,
    ).map("".join),
)


@pytest.mark.fuzz
@fuzz_settings(300)
@given(_fuzz_text)
def test_parsers_raise_only_parse_error(value: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        try:
            parse(value)
        except ParseError as exc:
            assert exc.status == 400


def test_choose_challenge_prefers_sha256_and_skips_what_it_cannot_use() -> None:
    values = [
        'Basic realm="x"',
        "Digest garbage",
        'Digest realm="r", nonce="1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="2", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="4", algorithm=SHA-256, qop="auth-int"',
    ]
    chosen = choose_challenge(values)
    assert chosen is not None and chosen.nonce == "3"
    only_md5 = choose_challenge(values[:4])
    assert only_md5 is not None and only_md5.nonce == "2"
    assert choose_challenge(values[:3]) is None
    assert choose_challenge(['Digest realm="r", nonce="5", qop="token"']) is None


def test_answer_challenge_errors() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth"')
    with pytest.raises(ValueError, match="cnonce"):
        answer_challenge(ch, "REGISTER", "sip:r", "u", password="p")
    with pytest.raises(ValueError, match="exactly one"):
        answer_challenge(ch, "REGISTER", "sip:r", "u", cnonce="c")
    with pytest.raises(ValueError, match="nc"):
        answer_challenge(ch, "REGISTER", "sip:r", "u", password="p", cnonce="c", nc=0)
    with pytest.raises(DigestError):
        answer_challenge(
            'Digest realm="r", nonce="n", qop="weird"', "M", "u", "u", password="p", cnonce="c"
        )
    with pytest.raises(DigestError):
        answer_challenge('Digest realm="r", nonce="n", algorithm=X', "M", "u", "u", password="p")


def test_answer_challenge_auth_int_when_only_offered() -> None:
    ch = parse_challenge('Digest realm="r", nonce="n", qop="auth-int"')
    ha1 = compute_ha1("u", "r", "p")
    creds = parse_credentials(
        answer_challenge(ch, "MESSAGE", "sip:b@r", "u", ha1=ha1, cnonce="c", body=b"hi")
    )
    assert creds.qop == "auth-int"
    assert creds.response == compute_response(
        ha1,
        nonce="n",
        method="MESSAGE",
        uri="sip:b@r",
        qop="auth-int",
        nc="00000001",
        cnonce="c",
        body=b"hi",
    )


# --- Nonces ------------------------------------------------------------------------


def test_nonce_valid_then_stale() -> None:
    f = NonceFactory(SECRET, lifetime=30.0)
    n = f.make(1000.0, bind="pbx")
    assert len(n) == 38
    assert f.check(n, 1000.0, bind="pbx") is NonceStatus.VALID
    assert f.check(n, 1029.9, bind="pbx") is NonceStatus.VALID
    assert f.check(n, 1030.5, bind="pbx") is NonceStatus.STALE
    assert f.check(n, 5000.0, bind="pbx") is NonceStatus.STALE


def test_nonces_are_unique_within_one_instant() -> None:
    f = NonceFactory(SECRET, lifetime=30.0)
    assert len({f.make(5.0) for _ in range(100)}) == 100


def test_nonce_cannot_be_forged_or_moved() -> None:
    f = NonceFactory(SECRET, lifetime=30.0)
    n = f.make(100.0, bind="pbx")
    assert f.check(n, 100.0, bind="other") is NonceStatus.INVALID
    assert NonceFactory(b"another-secret-16bytes", 30.0).check(n, 100.0, bind="pbx") is (
        NonceStatus.INVALID
    )
    # Flip each character: never valid.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for i, ch in enumerate(n):
        other = alphabet[(alphabet.index(ch) + 1) % 64]
        forged = n[:i] + other + n[i + 1 :]
        assert f.check(forged, 100.0, bind="pbx") is NonceStatus.INVALID, i
    # Rewinding the timestamp to look fresh breaks the tag.
    g = NonceFactory(SECRET, lifetime=30.0)
    late = g.make(500.0, bind="pbx")
    assert f.check(late[:8] + n[8:], 500.0, bind="pbx") is NonceStatus.INVALID
    # A nonce from the future (another clock origin) is not trusted.
    assert f.check(late, 100.0, bind="pbx") is NonceStatus.INVALID


@pytest.mark.fuzz
@fuzz_settings(100)
@given(st.text(max_size=60))
def test_nonce_check_of_garbage_is_invalid(text: str) -> None:
    f = NonceFactory(SECRET, lifetime=30.0)
    assert f.check(text, 0.0) is NonceStatus.INVALID


def test_nonce_count_tracking() -> None:
    f = NonceFactory(SECRET, lifetime=300.0, nc_slots=4)
    n = f.make(0.0)
    status, counter = f.inspect(n, 1.0)
    assert status is NonceStatus.VALID
    assert f.accept_nc(counter, 1)
    assert f.accept_nc(counter, 2)
    assert not f.accept_nc(counter, 2)  # replay
    assert not f.accept_nc(counter, 1)
    assert f.accept_nc(counter, 7)  # gaps are fine (lost requests)
    # Four newer nonces take every slot: the old one is retired.
    for _ in range(4):
        f.make(2.0)
    assert not f.accept_nc(counter, 8)
    assert not f.accept_nc(-1, 1)
    untracked = NonceFactory(SECRET, lifetime=300.0, nc_slots=0)
    _, c = untracked.inspect(untracked.make(0.0), 0.0)
    assert untracked.accept_nc(c, 1) and untracked.accept_nc(c, 1)


def test_nonce_factory_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="secret"):
        NonceFactory(b"short", 30.0)
    with pytest.raises(ValueError, match="lifetime"):
        NonceFactory(SECRET, 0)
    with pytest.raises(ValueError, match="nc_slots"):
        NonceFactory(SECRET, 30.0, nc_slots=-1)


# --- Server ------------------------------------------------------------------------

REALM = "pbx.example.com"
URI = "sip:pbx.example.com"


def make_server(**kwargs: object) -> DigestServer:
    return DigestServer(NonceFactory(SECRET, lifetime=60.0), **kwargs)  # type: ignore[arg-type]


def client_answer(
    challenge: str,
    *,
    password: str = "secret",
    username: str = "201",
    method: str = "REGISTER",
    nc: int = 1,
    body: bytes = b"",
) -> Credentials:
    return parse_credentials(
        answer_challenge(
            challenge, method, URI, username, password=password, cnonce="cn0nce", nc=nc, body=body
        )
    )


def stored_ha1(algorithm: str, username: str = "201", password: str = "secret") -> str:
    return compute_ha1(username, REALM, password, algorithm)


def test_challenges_offer_sha256_then_md5_with_one_nonce() -> None:
    server = make_server()
    values = server.challenges(REALM, 10.0)
    chs = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in chs] == ["SHA-256", "MD5"]
    assert chs[0].nonce == chs[1].nonce
    assert all(c.qop == ("auth",) and c.realm == REALM and not c.stale for c in chs)
    stale = parse_challenge(server.make_challenge(REALM, 10.0, "MD5", stale=True, opaque="o"))
    assert stale.stale and stale.opaque == "o"
    assert make_server(auth_int=True).qop == ("auth", "auth-int")


@pytest.mark.parametrize("order", [("MD5",), ("SHA-256",), ("MD5", "SHA-256"), ("SHA-256", "MD5")])
def test_challenges_in_the_order_asked_each_answerable(order: tuple[str, ...]) -> None:
    """RFC 8760 §2.4 / RFC 7616 §3.7: one header per algorithm, in the server's order of
    preference, one nonce; an answer to any of them verifies with that algorithm's HA1
    and fails with the other's."""
    server = make_server(algorithms=["MD5", "SHA-256"])
    values = server.challenges(REALM, 10.0, algorithms=order)
    chs = [parse_challenge(v) for v in values]
    assert tuple(c.algorithm for c in chs) == order
    assert len({c.nonce for c in chs}) == 1
    for n, (value, ch) in enumerate(zip(values, chs, strict=True), 1):
        creds = client_answer(value, nc=n)  # one nonce: each answer a higher nc
        assert creds.algorithm == ch.algorithm
        other = "MD5" if ch.algorithm == "SHA-256" else "SHA-256"
        assert server.verify(creds, "REGISTER", stored_ha1(str(ch.algorithm)), 11.0, realm=REALM).ok
        wrong = server.verify(creds, "REGISTER", stored_ha1(other), 11.0, realm=REALM)
        assert wrong.status is AuthStatus.FAIL


@settings(max_examples=100)
@given(
    order=st.permutations(["MD5", "SHA-256"]).map(tuple)
    | st.sampled_from([("MD5",), ("SHA-256",)]),
    password=st.text(min_size=1, max_size=20),
    username=st.text(st.characters(blacklist_characters='"\\\r\n\x00'), min_size=1, max_size=12),
)
def test_any_offer_answered_with_the_password_verifies(
    order: tuple[str, ...], password: str, username: str
) -> None:
    server = make_server(algorithms=["MD5", "SHA-256"])
    for n, value in enumerate(server.challenges(REALM, 10.0, algorithms=order), 1):
        ch = parse_challenge(value)
        answer = answer_challenge(
            ch, "REGISTER", "sip:pbx.local", username, password=password, cnonce="abc", nc=n
        )
        creds = parse_credentials(answer)
        ha1 = compute_ha1(username, REALM, password, str(ch.algorithm))
        assert server.verify(creds, "REGISTER", ha1, 10.5, realm=REALM).ok
        bad = compute_ha1(username, REALM, password + "x", str(ch.algorithm))
        assert not server.verify(creds, "REGISTER", bad, 10.5, realm=REALM).ok


@settings(max_examples=200)
@given(
    realm=_text | st.sampled_from(['a", nonce="x', 'nonce=""', "back\\slash", 'q"uote']),
    nonce=_text | st.from_regex(r"[A-Za-z0-9_-]{38}", fullmatch=True),
    algorithm=st.sampled_from(["MD5", "SHA-256", "MD5-sess"]),
    stale=st.booleans(),
    opaque=st.none() | _text,
)
def test_challenge_text_is_the_challenge_written_out(
    realm: str, nonce: str, algorithm: str, stale: bool, opaque: str | None
) -> None:
    # make_challenge writes the text around the nonce once per realm and reuses it:
    # the result must be exactly what the Challenge itself writes, every time.
    server = make_server(algorithms=("SHA-256", "MD5", "MD5-sess"))
    expected = str(Challenge(realm, nonce, algorithm, server.qop, opaque=opaque, stale=stale))
    for _ in range(2):
        text = server.make_challenge(realm, 1.0, algorithm, stale=stale, opaque=opaque, nonce=nonce)
        assert text == expected
        assert parse_challenge(text).nonce == nonce


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_verify_ok_for_each_algorithm(algorithm: str) -> None:
    server = make_server(algorithms=[algorithm])
    creds = client_answer(server.make_challenge(REALM, 0.0, algorithm))
    result = server.verify(creds, "REGISTER", stored_ha1(algorithm), 1.0, realm=REALM)
    assert result.ok, result
    assert result.status is AuthStatus.OK


def test_verify_wrong_password_and_unknown_user_look_the_same() -> None:
    server = make_server()
    ch = server.make_challenge(REALM, 0.0, "SHA-256")
    wrong = server.verify(
        client_answer(ch, password="guess"), "REGISTER", stored_ha1("SHA-256"), 1.0, realm=REALM
    )
    unknown = server.verify(client_answer(ch, username="999"), "REGISTER", None, 1.0, realm=REALM)
    assert wrong.status is AuthStatus.FAIL
    assert wrong == unknown


def test_unknown_user_costs_the_same_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_sha256 = hashlib.sha256

    class CountingHashlib:
        @staticmethod
        def sha256(data: bytes = b"") -> object:
            calls.append("sha256")
            return real_sha256(data)

        md5 = staticmethod(hashlib.md5)

    server = make_server()
    ch = server.make_challenge(REALM, 0.0, "SHA-256")
    creds_known = client_answer(ch, password="guess")
    creds_unknown = client_answer(ch, username="999")
    ha1 = stored_ha1("SHA-256")
    monkeypatch.setattr(digest, "hashlib", CountingHashlib)
    server.verify(creds_known, "REGISTER", ha1, 1.0, realm=REALM)
    known_calls = len(calls)
    calls.clear()
    server.verify(creds_unknown, "REGISTER", None, 1.0, realm=REALM)
    assert known_calls == len(calls) == 2  # HA2 and the response: nothing more


def test_verify_stale_only_with_right_password() -> None:
    server = make_server()
    ch = server.make_challenge(REALM, 0.0, "MD5")
    good = client_answer(ch)
    late = 61.0
    assert server.verify(good, "REGISTER", stored_ha1("MD5"), late, realm=REALM).status is (
        AuthStatus.STALE
    )
    bad = client_answer(ch, password="guess")
    assert server.verify(bad, "REGISTER", stored_ha1("MD5"), late, realm=REALM).status is (
        AuthStatus.FAIL
    )


def test_verify_nonce_from_previous_secret_is_stale_not_fail() -> None:
    old = make_server()
    creds = client_answer(old.make_challenge(REALM, 0.0, "MD5"))
    restarted = DigestServer(NonceFactory(b"a-brand-new-secret!!", lifetime=60.0))
    result = restarted.verify(creds, "REGISTER", stored_ha1("MD5"), 1.0, realm=REALM)
    assert result.status is AuthStatus.STALE
    assert result.reason == "nonce invalid"


def test_verify_replay_is_refused_and_nc_advances() -> None:
    server = make_server()
    ch = server.make_challenge(REALM, 0.0, "MD5")
    ha1 = stored_ha1("MD5")
    first = client_answer(ch, nc=1)
    assert server.verify(first, "REGISTER", ha1, 1.0, realm=REALM).ok
    replay = server.verify(first, "REGISTER", ha1, 2.0, realm=REALM)
    assert replay.status is AuthStatus.STALE
    assert server.verify(client_answer(ch, nc=2), "REGISTER", ha1, 3.0, realm=REALM).ok
    # A forged request with a huge nc must not burn the genuine client's nonce.
    forged = client_answer(ch, nc=0xFFFFFFFF, password="guess")
    assert server.verify(forged, "REGISTER", ha1, 4.0, realm=REALM).status is AuthStatus.FAIL
    assert server.verify(client_answer(ch, nc=3), "REGISTER", ha1, 5.0, realm=REALM).ok


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"realm": "other"}, "realm mismatch"),
        ({"algorithm": "SHA-256-sess"}, "algorithm not accepted"),
        ({"algorithm": "SHA-1"}, "algorithm not accepted"),
        ({"qop": "auth-int"}, "qop not offered"),
    ],
)
def test_verify_rejects_credentials_not_for_us(change: dict[str, str], reason: str) -> None:
    server = make_server()
    creds = client_answer(server.make_challenge(REALM, 0.0, "MD5"))
    fields = {f: getattr(creds, f) for f in Credentials.__dataclass_fields__}
    fields.update(change)
    result = server.verify(Credentials(**fields), "REGISTER", stored_ha1("MD5"), 1.0, realm=REALM)
    assert result.status is AuthStatus.FAIL
    assert result.reason == reason


def test_verify_checks_method_uri_and_request_uri() -> None:
    server = make_server()
    creds = client_answer(server.make_challenge(REALM, 0.0, "MD5"))
    ha1 = stored_ha1("MD5")
    assert server.verify(creds, "INVITE", ha1, 1.0, realm=REALM).status is AuthStatus.FAIL
    assert server.verify(creds, "REGISTER", ha1, 1.0, realm=REALM, request_uri="sip:x").reason == (
        "uri mismatch"
    )
    assert server.verify(creds, "REGISTER", ha1, 1.0, realm=REALM, request_uri=URI).ok


def test_verify_rfc2069_policy() -> None:
    lenient = make_server()
    nonce = lenient.nonces.make(0.0, bind=REALM)
    ha1 = stored_ha1("MD5")
    old_phone = Credentials(
        username="201",
        realm=REALM,
        nonce=nonce,
        uri=URI,
        response=compute_response(ha1, nonce=nonce, method="REGISTER", uri=URI),
    )
    assert lenient.verify(old_phone, "REGISTER", ha1, 1.0, realm=REALM).ok
    strict = DigestServer(lenient.nonces, allow_rfc2069=False)
    assert strict.verify(old_phone, "REGISTER", ha1, 1.0, realm=REALM).reason == "qop required"


def test_verify_auth_int_covers_the_body() -> None:
    server = make_server(auth_int=True)
    ch = parse_challenge(server.make_challenge(REALM, 0.0, "MD5"))
    ch = Challenge(ch.realm, ch.nonce, ch.algorithm, ("auth-int",))
    creds = client_answer(str(ch), method="MESSAGE", body=b"hello")
    ha1 = stored_ha1("MD5")
    assert server.verify(creds, "MESSAGE", ha1, 1.0, realm=REALM, body=b"hello").ok
    assert not server.verify(creds, "MESSAGE", ha1, 2.0, realm=REALM, body=b"hellO").ok


def test_verify_ha1b_for_user_at_domain() -> None:
    server = make_server(algorithms=["MD5"])
    creds = client_answer(server.make_challenge(REALM, 0.0), username="201@example.com")
    ha1b = compute_ha1b("201", "example.com", REALM, "secret")
    assert server.verify(creds, "REGISTER", ha1b, 1.0, realm=REALM).ok


def test_verify_stored_ha1_of_wrong_length_fails_clearly() -> None:
    server = make_server()
    creds = client_answer(server.make_challenge(REALM, 0.0, "SHA-256"))
    result = server.verify(creds, "REGISTER", stored_ha1("MD5"), 1.0, realm=REALM)
    assert result.status is AuthStatus.FAIL
    assert "length" in result.reason


def test_verify_accepts_uppercase_hex_response() -> None:
    server = make_server()
    creds = client_answer(server.make_challenge(REALM, 0.0, "MD5"))
    fields = {f: getattr(creds, f) for f in Credentials.__dataclass_fields__}
    fields["response"] = creds.response.upper()
    assert server.verify(Credentials(**fields), "REGISTER", stored_ha1("MD5"), 1.0, realm=REALM).ok


def test_server_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="algorithm"):
        make_server(algorithms=[])
    with pytest.raises(DigestError):
        make_server(algorithms=["SHA-1"])


# --- Client session ------------------------------------------------------------------


def test_digest_client_against_server() -> None:
    server = make_server()
    client = DigestClient("201", "secret")
    assert client.authorization("REGISTER", URI, "c0") is None
    assert client.on_challenge(server.challenges(REALM, 0.0))
    assert client.challenge is not None and client.challenge.algorithm == "SHA-256"
    ha1 = stored_ha1("SHA-256")
    for i, now in enumerate((1.0, 2.0, 3.0), start=1):
        value = client.authorization("REGISTER", URI, f"c{i}")
        assert value is not None
        creds = parse_credentials(value)
        assert creds.nc_value == i
        assert server.verify(creds, "REGISTER", ha1, now, realm=REALM).ok
    # The nonce goes stale: the server says so, the client starts again at nc=1.
    value = client.authorization("REGISTER", URI, "c9")
    assert value is not None
    result = server.verify(parse_credentials(value), "REGISTER", ha1, 100.0, realm=REALM)
    assert result.status is AuthStatus.STALE
    assert client.on_challenge(server.challenges(REALM, 100.0, stale=True))
    value = client.authorization("REGISTER", URI, "c10")
    assert value is not None
    creds = parse_credentials(value)
    assert creds.nc_value == 1
    assert server.verify(creds, "REGISTER", ha1, 101.0, realm=REALM).ok
    assert not client.on_challenge(['Basic realm="x"'])


def test_register_through_the_message_parser() -> None:
    server = make_server()
    client = DigestClient("201", "secret")
    assert client.on_challenge(server.challenges(REALM, 0.0))
    value = client.authorization("REGISTER", URI, "x1")
    assert value is not None
    raw = (
        f"REGISTER {URI} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1\r\n"
        f"From: <sip:201@{REALM}>;tag=1\r\nTo: <sip:201@{REALM}>\r\nCall-ID: a@b\r\n"
        f"CSeq: 2 REGISTER\r\nMax-Forwards: 70\r\nAuthorization: {value}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(raw)
    header = msg.headers.get("Authorization")
    assert header is not None
    assert msg.headers.getall("Authorization") == [header]  # not split at its commas
    creds = parse_credentials(header)
    result = server.verify(
        creds, "REGISTER", stored_ha1("SHA-256"), 1.0, realm=REALM, request_uri=str(msg.uri)
    )
    assert result.ok
