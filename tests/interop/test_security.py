"""Issue 5's security policy against SIPp: brute force gets the source banned (and
only that source), scanners get no answer, the answers do not tell which
extensions exist, and a flood is cut to its rate. Issue 11: replayed answers to old
nonces never ban; digest against real peers with two challenges (SIPp: MD5, pjsua:
SHA-256) and subscribers of every domain of the table (a Kamailio table as it is).

One PBX on the factory configuration (default policy: 10 failed authentications in
60 s ban a source for 15 min; 50 requests/s, burst 100). Each test speaks from its
own loopback address (127.0.0.x all reach the PBX on 127.0.0.1), so a ban in one
test cannot touch another.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pbx_core.sip.digest import compute_ha1, parse_challenge
from pbx_core.sip.digest_client import answer_challenge
from tests.conftest import FACTORY, ROOT, PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp import SCENARIOS
from tests.interop.sipp_agents import (
    PASSWORDS,
    Message,
    Run,
    Server,
    check,
    free_port,
    pbx_status,
    run,
)
from tests.media.baresip import Baresip
from tests.media.baresip import available as baresip_available

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PbxProcess, Path]]:
    tmp = tmp_path_factory.mktemp("security")
    p = start_pbx(tmp, extra=["--state", str(tmp / "state.mdb")])
    yield p, tmp
    stop_pbx(p)
    assert "Traceback" not in p.log(), p.log()


def addr(pbx: tuple[PbxProcess, Path]) -> tuple[str, int]:
    return (pbx[0].host, pbx[0].port)


def bans(pbx: tuple[PbxProcess, Path]) -> list[dict[str, object]]:
    found = pbx_status(pbx[1] / "run" / "control.sock").get("bans", [])
    assert isinstance(found, list)
    return found


def probe(
    pbx: tuple[PbxProcess, Path],
    tmp: Path,
    ip: str,
    *,
    user: str = "100",
    agent: str = "SIPp interop test",
    name: str = "probe",
) -> Run:
    """One REGISTER without credentials from `ip`: its 401, or nothing within 2 s."""
    return run(
        "register_noauth.xml",
        addr(pbx),
        tmp,
        name,
        local_ip=ip,
        keys={"user": user, "agent": agent},
    )


def test_brute_force_bans_the_source_and_only_it(
    pbx: tuple[PbxProcess, Path], tmp_path: Path
) -> None:
    attacker, bystander = "127.0.0.3", "127.0.0.4"
    # 14 guesses at 20/s: the 10th failure bans; the rest go unanswered.
    res = run(
        "register.xml",
        addr(pbx),
        tmp_path,
        "guesses",
        local_ip=attacker,
        keys={"user": "100", "contact": f"<sip:100@{attacker}:5999>", "expires": "60"},
        auth=("100", "password123"),
        calls=14,
        rate=20,
        recv_timeout=1.5,
        timeout=30,
    )
    assert res.successful == 10, res.report()  # 401, 401 ten times
    assert res.failed == 4, res.report()
    # Each of the ten got both its challenges (a slow machine may let an 11th get its
    # first one before the 10th failure lands).
    assert res.statuses().count(401) in (20, 21), res.report()
    (ban,) = [b for b in bans(pbx) if b["source"] == attacker]
    assert 800 < int(str(ban["remaining"])) <= 900
    # Banned: even a well-formed REGISTER gets no answer now, from any port...
    assert probe(pbx, tmp_path, attacker).received() == []
    # ... while another address is served as ever.
    assert [m.status for m in probe(pbx, tmp_path, bystander).received()] == [401]
    assert "banned for 900 s" in pbx[0].log() and attacker in pbx[0].log()


@pytest.mark.parametrize(
    "agent", ["friendly-scanner", "sipvicious", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "pplsip"]
)
def test_scanner_gets_no_answer(pbx: tuple[PbxProcess, Path], tmp_path: Path, agent: str) -> None:
    ip = "127.0.0.5"
    assert probe(pbx, tmp_path, ip, agent=agent).received() == []


def test_same_address_with_a_phone_user_agent_is_answered(
    pbx: tuple[PbxProcess, Path], tmp_path: Path
) -> None:
    # The User-Agent is what gets dropped, not (yet) the address: 127.0.0.9 has one
    # scanner strike, far from a ban.
    ip = "127.0.0.9"
    assert probe(pbx, tmp_path, ip, agent="friendly-scanner", name="scan").received() == []
    answered = probe(pbx, tmp_path, ip, agent="Yealink SIP-T46S", name="phone").received()
    assert [m.status for m in answered] == [401]


# Values that differ between any two answers whatever the user: our own Call-ID,
# tags and branch echoed back, and the PBX's fresh nonce and To tag.
_VOLATILE = [
    (re.compile(r'nonce="[^"]*"'), 'nonce="N"'),
    (re.compile(r"tag=[^;>\s]+"), "tag=T"),
    (re.compile(r"branch=[^;\s]+"), "branch=B"),
    (re.compile(r"rport=\d+"), "rport=P"),
    (re.compile(r"127\.0\.0\.\d+:\d+"), "ADDR"),
    (re.compile(r"sip:(100|999)@"), "sip:U@"),
]


def normalized(msg: Message, call_id: str) -> str:
    text = msg.text.replace(call_id, "CALLID")
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text.strip()


def answers(res: Run) -> list[str]:
    sent = [m for m in res.messages if m.direction == "sent"]
    call_id = sent[0].header("Call-ID") or ""
    return [normalized(m, call_id) for m in res.received()]


def test_no_extension_enumeration(pbx: tuple[PbxProcess, Path], tmp_path: Path) -> None:
    ip = "127.0.0.6"
    # The challenge to a REGISTER without credentials ...
    known = answers(probe(pbx, tmp_path, ip, user="100", name="known"))
    unknown = answers(probe(pbx, tmp_path, ip, user="999", name="unknown"))
    assert len(known) == 1 and known == unknown, (known, unknown)
    # ... and the answer to a wrong password.
    results = []
    for user in ("100", "999"):
        res = run(
            "register.xml",
            addr(pbx),
            tmp_path,
            f"wrong-{user}",
            local_ip=ip,
            keys={"user": user, "contact": f"<sip:{user}@{ip}:5999>", "expires": "60"},
            auth=(user, "not-it"),
        )
        assert res.statuses() == [401, 401], res.report()
        results.append(answers(res))
    assert results[0] == results[1], results


def test_flood_is_cut_to_the_rate(pbx: tuple[PbxProcess, Path], tmp_path: Path) -> None:
    # 400 OPTIONS as fast as SIPp sends them: the burst of 100 (plus what refills)
    # is answered, then one 503 with Retry-After, then silence.
    res = run(
        "options.xml",
        addr(pbx),
        tmp_path,
        "flood",
        local_ip="127.0.0.7",
        calls=400,
        rate=2000,
        recv_timeout=1,
        timeout=30,
    )
    ok = res.successful
    assert 100 <= ok <= 300, res.report()  # at least the burst; at least 100 unanswered
    assert res.failed == 400 - ok
    limited = [m for m in res.received() if m.status == 503]
    assert len(limited) == 1, res.statuses()
    assert limited[0].header("Retry-After") == "2"
    # A phone elsewhere is not affected.
    assert [m.status for m in probe(pbx, tmp_path, "127.0.0.8").received()] == [401]


def test_good_password_still_registers(pbx: tuple[PbxProcess, Path], tmp_path: Path) -> None:
    res = run(
        "register.xml",
        addr(pbx),
        tmp_path,
        "good",
        local_ip="127.0.0.10",
        keys={"user": "101", "contact": "<sip:101@127.0.0.10:5999>", "expires": "60"},
        auth=("101", PASSWORDS["101"]),
    )
    assert res.statuses() == [401, 200], res.report()


# ---------------------------------------------------------------- issue 11: old nonces


def challenge_of(res: Run) -> str:
    (answer,) = res.received()
    value = answer.header("WWW-Authenticate")
    assert answer.status == 401 and value is not None, res.report()
    return value


def replay(
    pbx: tuple[PbxProcess, Path], tmp: Path, ip: str, authz: str, name: str, calls: int
) -> Run:
    return run(
        "register_replay.xml",
        addr(pbx),
        tmp,
        name,
        local_ip=ip,
        keys={"user": "100", "authz": authz},
        calls=calls,
        rate=20,
        timeout=40,
    )


def test_replayed_answers_to_old_nonces_never_ban_fresh_guesses_do(
    pbx: tuple[PbxProcess, Path], tmp_path: Path
) -> None:
    """README: bans count only answers to a fresh nonce of ours (a UDP source can be
    forged, and a captured REGISTER replayed from an office's address must not get
    the office banned)."""
    ip = "127.0.0.11"
    # A right answer captured once, replayed 30 times: one 200, then stale=true 401s.
    ch = challenge_of(probe(pbx, tmp_path, ip, name="capture"))
    good = answer_challenge(
        ch, "REGISTER", "sip:pbx.local", "100", password=PASSWORDS["100"], cnonce="cafe"
    )
    res = replay(pbx, tmp_path, ip, good, "replay-good", 30)
    assert res.statuses()[0] == 200 and res.statuses()[1:] == [401] * 29, res.report()
    assert all(
        parse_challenge(m.header("WWW-Authenticate") or "").stale for m in res.received()[1:]
    )
    # A wrong answer to a nonce this PBX did not issue (another instance's: a REGISTER
    # captured before a restart), 30 times: 401 each, none counted.
    (tmp_path / "other").mkdir()
    other = start_pbx(tmp_path / "other")
    try:
        foreign = challenge_of(probe((other, tmp_path), tmp_path, ip, name="foreign"))
    finally:
        stop_pbx(other)
    wrong = answer_challenge(foreign, "REGISTER", "sip:pbx.local", "100", password="x", cnonce="c")
    res = replay(pbx, tmp_path, ip, wrong, "replay-foreign", 30)
    assert res.statuses() == [401] * 30, res.report()
    assert not [b for b in bans(pbx) if b["source"] == ip]
    assert [m.status for m in probe(pbx, tmp_path, ip, name="after").received()] == [401]
    # The control: ten wrong passwords, each answering a fresh nonce, ban the source.
    res = run(
        "register.xml",
        addr(pbx),
        tmp_path,
        "fresh-guesses",
        local_ip=ip,
        keys={"user": "100", "contact": f"<sip:100@{ip}:5999>", "expires": "60"},
        auth=("100", "password123"),
        calls=10,
        rate=20,
        timeout=30,
    )
    assert res.statuses().count(401) == 20, res.report()
    assert [b for b in bans(pbx) if b["source"] == ip]
    assert probe(pbx, tmp_path, ip, name="banned").received() == []


# ---------------------------------------------------------------- issue 11: realms, SHA-256

KAMAILIO_SUBSCRIBER = ROOT / "tests/store/vectors/kamailio/subscriber"
EXAMPLE = {"200": "pw-200", "201": "pw-201", "202": "pw-202"}


def domains_config(dest: Path, algorithms: str) -> Path:
    """The factory tables (setting `domain` pbx.local) plus subscribers of example.org:
    the Kamailio vector's rows as they are (alice: password wonderland; bob: an ha1
    only), 200 and 201 with passwords, 202 with an MD5 ha1 only."""
    shutil.copytree(FACTORY, dest)
    rows = KAMAILIO_SUBSCRIBER.read_text().splitlines()[1:]
    with (dest / "subscriber").open("a") as f:
        for n, row in enumerate(rows, 10):
            f.write(f"{n}:{row.split(':', 1)[1]}\n")
        f.write(f"20:200:example.org:{EXAMPLE['200']}::\n21:201:example.org:{EXAMPLE['201']}::\n")
        f.write(f"22:202:example.org::{compute_ha1('202', 'example.org', EXAMPLE['202'])}:\n")
    with (dest / "pbx_settings").open("a") as f:
        # Every peer here speaks from 127.0.0.1, wrong passwords included: no bans
        # (they have their own tests above).
        f.write(f"auth_algorithms:{algorithms}\nsec_ban_failures:0\n")
    return dest


@pytest.fixture(scope="module", params=["MD5,SHA-256", "SHA-256,MD5"])
def realms_pbx(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PbxProcess, str]]:
    algorithms = str(request.param)
    tmp = tmp_path_factory.mktemp("realms")
    p = start_pbx(tmp, domains_config(tmp / "cfg", algorithms))
    yield p, algorithms
    stop_pbx(p)
    assert "Traceback" not in p.log(), p.log()


def for_realm(scenario: str, realm: str, tmp: Path) -> str:
    """A copy of a scenario whose challenge check expects `realm`."""
    text = (SCENARIOS / scenario).read_text()
    assert 'realm=\\"pbx\\.local\\"' in text
    out = tmp / f"{realm}-{scenario}"
    out.write_text(text.replace("pbx\\.local", re.escape(realm)))
    return str(out)


def sipp_register(
    p: PbxProcess, tmp: Path, user: str, domain: str, password: str, *, realm: str, port: int = 0
) -> Run:
    ip = "127.0.0.1"
    port = port or free_port(ip)
    return run(
        for_realm("register.xml", realm, tmp),
        (p.host, p.port),
        tmp,
        f"register-{user}@{domain}",
        local_port=port,
        keys={
            "user": user,
            "domain": domain,
            "contact": f"<sip:{user}@{ip}:{port}>",
            "expires": "60",
        },
        auth=(user, password),
    )


def challenges(res: Run) -> list[tuple[str, str]]:
    """(realm, algorithm) of each challenge of the first 401, in order."""
    first = next(m for m in res.received() if m.status == 401)
    return [
        (c.realm, str(c.algorithm)) for c in map(parse_challenge, first.headers("WWW-Authenticate"))
    ]


def pjsua(p: PbxProcess, tmp: Path, user: str, domain: str, password: str) -> tuple[int, str]:
    """pjsua registers; its exit code and the algorithm of its Authorization."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.interop.pjsua_register",
            f"{p.host}:{p.port}",
            user,
            domain,
            password,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    (tmp / f"pjsua-{user}@{domain}.log").write_text(proc.stdout + proc.stderr)
    sent = re.findall(r"^Authorization: Digest .*algorithm=([\w-]+)", proc.stdout, re.MULTILINE)
    assert sent, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "REGSTATE" in proc.stdout, proc.stdout[-3000:]
    return proc.returncode, sent[0]


def test_sipp_registers_with_md5_when_md5_comes_first(
    realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    p, algorithms = realms_pbx
    res = sipp_register(p, tmp_path, "100", "pbx.local", PASSWORDS["100"], realm="pbx.local")
    assert challenges(res) == [("pbx.local", a) for a in algorithms.split(",")], res.report()
    if algorithms.startswith("MD5"):
        assert res.statuses() == [401, 200], res.report()
        (authz,) = [m.header("Authorization") for m in res.sent("REGISTER")[1:]]
        assert authz is not None and "algorithm=MD5" in authz
    else:
        # SIPp 3.6 answers only the topmost challenge and knows no SHA-256: it gives
        # up. This is why MD5 must come first while such phones are about.
        assert res.statuses() == [401], res.report()
        assert "must use MD5" in (res.dir / "errors.log").read_text()


def test_pjsua_answers_the_topmost_algorithm_it_supports(
    realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    p, algorithms = realms_pbx
    for user, domain, password in (
        ("100", "pbx.local", PASSWORDS["100"]),
        ("200", "example.org", EXAMPLE["200"]),
    ):
        code, algorithm = pjsua(p, tmp_path, user, domain, password)
        assert code == 0
        assert algorithm == algorithms.split(",")[0]  # SHA-256 first: SHA-256 it is
    # A wrong password fails with either algorithm.
    code, _algorithm = pjsua(p, tmp_path, "100", "pbx.local", "wrong")
    assert code == 1


def test_row_with_only_an_md5_ha1_is_challenged_with_md5_alone(
    realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    p, _algorithms = realms_pbx
    res = sipp_register(p, tmp_path, "202", "example.org", EXAMPLE["202"], realm="example.org")
    assert challenges(res) == [("example.org", "MD5")], res.report()
    assert res.statuses() == [401, 200], res.report()
    code, algorithm = pjsua(p, tmp_path, "202", "example.org", EXAMPLE["202"])
    assert (code, algorithm) == (0, "MD5")


def test_kamailio_subscriber_rows_of_another_domain_log_in(
    realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    """tests/store/vectors/kamailio/subscriber copied as it is (example.org, while the
    setting `domain` is pbx.local): realm example.org, alice logs in."""
    p, algorithms = realms_pbx
    # pjsua answers the first algorithm (alice's row has her password: SHA-256 too).
    assert pjsua(p, tmp_path, "alice", "example.org", "wonderland") == (0, algorithms.split(",")[0])
    assert pjsua(p, tmp_path, "alice", "example.org", "not-it")[0] == 1
    # The same user under the setting's domain is nobody.
    assert pjsua(p, tmp_path, "alice", "pbx.local", "wonderland")[0] == 1
    if algorithms.startswith("MD5"):  # SIPp: MD5 only, see above
        res = sipp_register(p, tmp_path, "alice", "example.org", "wonderland", realm="example.org")
        assert res.statuses() == [401, 200], res.report()
        assert {r for r, _a in challenges(res)} == {"example.org"}
        res = sipp_register(p, tmp_path, "alice", "example.org", "not-it", realm="example.org")
        assert res.statuses() == [401, 401], res.report()


def test_phone_with_the_pbx_address_as_its_domain_uses_the_setting_realm(
    realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    """Yealink and others put the server's address in From/To: realm pbx.local."""
    p, algorithms = realms_pbx
    code, algorithm = pjsua(p, tmp_path, "101", p.host, PASSWORDS["101"])
    assert (code, algorithm) == (0, algorithms.split(",")[0])
    if algorithms.startswith("MD5"):  # SIPp: MD5 only, see above
        res = sipp_register(p, tmp_path, "101", p.host, PASSWORDS["101"], realm="pbx.local")
        assert res.statuses() == [401, 200], res.report()


@pytest.mark.parametrize("realms_pbx", ["MD5,SHA-256"], indirect=True)  # SIPp: MD5 first
def test_second_domain_subscriber_calls_its_domain_and_the_pbx(
    realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    """200@example.org calls 201@example.org (registered from a SIPp callee) and
    extension 101 of the setting's domain; the 407 is in realm example.org."""
    p, _algorithms = realms_pbx
    for callee, domain, password in (
        ("201", "example.org", EXAMPLE["201"]),
        ("101", "pbx.local", PASSWORDS["101"]),
    ):
        port = free_port("127.0.0.1")
        reg = sipp_register(p, tmp_path, callee, domain, password, realm=domain, port=port)
        assert reg.statuses() == [401, 200], reg.report()
        server = Server("uas_answer.xml", tmp_path, f"callee-{callee}", port=port)
        try:
            res = run(
                for_realm("uac_call.xml", "example.org", tmp_path),
                (p.host, p.port),
                tmp_path,
                f"call-{callee}",
                keys={"user": "200", "callee": callee, "domain": "example.org"},
                auth=("200", EXAMPLE["200"]),
                timeout=15,
            )
            answered = server.finish()
        finally:
            server.stop()
        check(res)
        check(answered)
        invite = answered.requests("INVITE")[0]
        assert f"sip:{callee}@{domain}" in (invite.header("To") or ""), invite.text


def test_baresip_registers_only_when_md5_alone_is_offered(
    pbx: tuple[PbxProcess, Path], realms_pbx: tuple[PbxProcess, str], tmp_path: Path
) -> None:
    """Why `auth_algorithms` defaults to MD5: baresip 1.0 (libre 1.1, Debian 12) gives
    up on a 401 that carries any SHA-256 challenge, whatever the order ("Function not
    implemented"), and registers against the factory configuration."""
    if not baresip_available():
        pytest.fail("baresip is not installed (apt install baresip-core)")
    md5_only, both = pbx[0], realms_pbx[0]
    for server, ok in ((md5_only, True), (both, False)):
        phone = Baresip(
            tmp_path / f"baresip-{server.port}",
            "102",
            tone_hz=None,
            registrar=f"{server.host}:{server.port}",
            password=PASSWORDS["102"],
        )
        phone.start()
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                log = phone.log()
                if "200 OK" in log or "Function not implemented" in log:
                    break
                time.sleep(0.1)
        finally:
            phone.stop()
        log = phone.log()
        if ok:
            assert "200 OK" in log and "Function not implemented" not in log, log
        else:
            assert "Function not implemented" in log and "200 OK" not in log, log
