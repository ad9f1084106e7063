"""Issue 5 against SIPp: registration with digest auth, calls through the B2BUA
(answer, hang-up from either side, hold, cancel, busy, no answer, unknown and offline
numbers) and the SIP trunk to a SIPp "provider" (registration, outbound, inbound DID).

One PBX serves the module, on the configuration in configs/calls (the factory tables
with 5 s ring timeouts, the trunk at the provider on 127.0.0.2 and DID 4930555 to
extension 101). Phones run on 127.0.0.1, the provider on 127.0.0.2 (the PBX trusts
the trunk's address, so nothing else may come from it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import (
    PASSWORDS,
    Phones,
    Run,
    Server,
    cdrs,
    check,
    free_port,
    pbx_status,
    run,
    wait_cdr,
)

pytestmark = pytest.mark.interop

CONFIG = Path(__file__).resolve().parent / "configs" / "calls"
PROVIDER_IP = "127.0.0.2"


def write_config(dest: Path, provider_port: int) -> Path:
    """configs/calls with the trunk pointed at the provider's port."""
    shutil.copytree(CONFIG, dest)
    trunk = dest / "pbx_trunk"
    trunk.write_text(
        trunk.read_text().replace(f"{PROVIDER_IP}:5090:", f"{PROVIDER_IP}:{provider_port}:")
    )
    assert f":{provider_port}:" in trunk.read_text()
    return dest


@dataclass
class Env:
    pbx: PbxProcess
    tmp: Path
    provider_port: int
    provider_registration: Run

    @property
    def addr(self) -> tuple[str, int]:
        return (self.pbx.host, self.pbx.port)

    @property
    def phones(self) -> Phones:
        return Phones(self.addr)

    @property
    def state(self) -> Path:
        return self.tmp / "state.mdb"

    def status(self) -> dict[str, object]:
        return pbx_status(self.tmp / "run" / "control.sock")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("calls")
    port = free_port(PROVIDER_IP)
    # The provider must listen before the PBX starts: the PBX registers at once.
    provider = Server("provider.xml", tmp, "provider-register", local_ip=PROVIDER_IP, port=port)
    pbx = start_pbx(
        tmp,
        config=write_config(tmp / "config", port),
        extra=["--state", str(tmp / "state.mdb")],
    )
    try:
        reg = provider.finish(10)
        yield Env(pbx, tmp, port, reg)
    finally:
        provider.stop()
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log(), pbx.log()


# ---------------------------------------------------------------- registration


def reg(
    env: Env,
    tmp: Path,
    name: str,
    *,
    user: str = "103",
    contact: str | None = None,
    expires: int = 3600,
    password: str | None = None,
) -> Run:
    return run(
        "register.xml",
        env.addr,
        tmp,
        name,
        keys={
            "user": user,
            "contact": contact or f"<sip:{user}@127.0.0.1:5999>",
            "expires": str(expires),
        },
        auth=(user, password or PASSWORDS[user]),
    )


def bindings(env: Env, aor: str) -> list[dict[str, object]]:
    regs = env.status()["registrations"]
    assert isinstance(regs, list)
    return [r for r in regs if r["aor"] == aor]


def test_register_with_digest_and_status(env: Env, tmp_path: Path) -> None:
    res = reg(env, tmp_path, "register", expires=300)
    check(res)
    assert res.statuses()[-2:] == [401, 200], res.report()
    challenge = res.received()[0]
    www = challenge.header("WWW-Authenticate") or ""
    assert 'realm="pbx.local"' in www and "MD5" in www
    ok = res.received()[-1]
    assert any("sip:103@127.0.0.1:5999" in c and "expires=" in c for c in ok.headers("Contact"))
    (b,) = bindings(env, "103@pbx.local")
    assert "sip:103@127.0.0.1:5999" in str(b["contact"])
    assert 290 <= int(str(b["expires"])) <= 300
    assert "127.0.0.1" in str(b["source"])
    check(reg(env, tmp_path, "unregister", expires=0))
    assert bindings(env, "103@pbx.local") == []


def test_register_expiry_limits(env: Env, tmp_path: Path) -> None:
    short = reg(env, tmp_path, "short", expires=30)
    check(short)
    too_brief = short.received()[-1]
    assert too_brief.status == 423, short.report()
    assert too_brief.header("Min-Expires") == "60"
    long = reg(env, tmp_path, "long", expires=7200)
    check(long)
    granted = long.received()[-1]
    assert granted.status == 200, long.report()
    assert any("expires=3600" in c for c in granted.headers("Contact")), long.report()
    (b,) = bindings(env, "103@pbx.local")
    assert 3590 <= int(str(b["expires"])) <= 3600
    # Contact: * with Expires: 0 removes every binding (RFC 3261 10.2.2).
    star = reg(env, tmp_path, "star", contact="*", expires=0)
    check(star)
    assert star.statuses()[-1] == 200, star.report()
    assert bindings(env, "103@pbx.local") == []


def test_wrong_password_is_challenged_again(env: Env, tmp_path: Path) -> None:
    res = reg(env, tmp_path, "wrong", password="not-the-password")  # wrong on purpose
    check(res)
    assert res.statuses()[-2:] == [401, 401], res.report()
    assert bindings(env, "103@pbx.local") == []


def test_register_refusals(env: Env, tmp_path: Path) -> None:
    # Good credentials of 100 do not register 101 (RFC 3261 10.3 step 3: 403).
    other = run(
        "register.xml",
        env.addr,
        tmp_path,
        "other",
        keys={"user": "101", "contact": "<sip:101@127.0.0.1:5999>", "expires": "60"},
        auth=("100", PASSWORDS["100"]),
    )
    check(other)
    assert other.statuses()[-1] == 403, other.report()
    assert bindings(env, "101@pbx.local") == []
    # Contact: * with an expiry other than 0 is malformed (RFC 3261 10.3 step 6: 400).
    star = reg(env, tmp_path, "star", contact="*", expires=300)
    check(star)
    assert star.statuses()[-1] == 400, star.report()


# ---------------------------------------------------------------- calls between extensions


def test_call_answered_caller_hangs_up(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml")
    assert res.statuses()[0] == 407, res.report()
    assert 200 in res.statuses()
    (invite,) = b.requests("INVITE")
    a_invite = [m for m in res.messages if m.direction == "sent" and m.method == "INVITE"]
    assert a_invite, res.report()
    # A new call: the B leg has its own Call-ID, and the PBX's own Via and Contact.
    a_call_id = a_invite[-1].header("Call-ID")
    assert invite.header("Call-ID") != a_call_id
    assert invite.first_line.startswith("INVITE sip:101@127.0.0.1:")
    via = invite.header("Via") or ""
    assert f"127.0.0.1:{env.pbx.port}" in via, invite.text
    assert len(invite.headers("Via")) == 1  # the caller's Via is not passed on
    assert f":{env.pbx.port}" in (invite.header("Contact") or "")
    assert "100" in (invite.header("From") or "")
    assert "m=audio" in invite.body
    assert len(b.requests("BYE")) == 1
    assert res.received()[-1].status == 200  # the BYE answered


def test_parallel_fork_first_answer_wins(env: Env, tmp_path: Path) -> None:
    """101 registered twice: both ring, the one that answers gets the call, the other
    is CANCELled (RFC 3261 16.7 step 10, as a B2BUA does it)."""
    with (
        env.phones.callee(tmp_path, "uas_ring.xml", "101") as desk,
        env.phones.callee(tmp_path, "uas_answer.xml", "101") as mobile,
    ):
        assert len(bindings(env, "101@pbx.local")) == 2
        res = env.phones.call(tmp_path, "uac_call.xml", "101")
        rang, answered = desk.finish(), mobile.finish()
    check(res)
    check(rang)
    check(answered)
    assert len(rang.requests("CANCEL")) == 1
    assert len(answered.requests("BYE")) == 1


def test_alias_reaches_its_extension(env: Env, tmp_path: Path) -> None:
    # Factory dbaliases: reception@pbx.local is 100.
    with env.phones.callee(tmp_path, "uas_answer.xml", "100") as callee:
        res = env.phones.call(tmp_path, "uac_call.xml", "reception", user="102")
        b = callee.finish()
    check(res)
    check(b)
    (invite,) = b.requests("INVITE")
    assert invite.first_line.startswith("INVITE sip:100@127.0.0.1:")


def test_ring_group_rings_its_registered_members(env: Env, tmp_path: Path) -> None:
    # Factory pbx_ring_group 600 rings 100, 101 and 102: here only 101 and 102 are
    # registered; 102 answers, 101 is CANCELled.
    with (
        env.phones.callee(tmp_path, "uas_ring.xml", "101") as ringing,
        env.phones.callee(tmp_path, "uas_answer.xml", "102") as answering,
    ):
        res = env.phones.call(tmp_path, "uac_call.xml", "600", user="103")
        rang, answered = ringing.finish(), answering.finish()
    check(res)
    check(rang)
    check(answered)
    assert len(rang.requests("CANCEL")) == 1
    assert len(answered.requests("BYE")) == 1


def test_call_from_tcp_to_udp(env: Env, tmp_path: Path) -> None:
    """The caller's leg over TCP, the callee's over UDP: the B2BUA bridges them."""
    _res, b = env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", transport="t1")
    (invite,) = b.requests("INVITE")
    assert "SIP/2.0/UDP" in (invite.header("Via") or "")
    assert len(b.requests("BYE")) == 1


def test_call_callee_hangs_up(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_call_callee_bye.xml", "uas_bye.xml")
    assert [m.method for m in res.requests()] == ["BYE"]
    assert b.statuses()[-1] == 200


def test_hold_reinvite(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_call_hold.xml", "uas_answer.xml")
    held = [
        m
        for m in res.received()
        if m.status == 200 and ("a=recvonly" in m.body or "a=inactive" in m.body)
    ]
    assert held, res.report()
    # Passed across (the callee saw a re-INVITE) or answered by the PBX's media
    # anchor (music on hold): either way the callee's leg still ends with the BYE.
    assert len(b.requests("BYE")) == 1


def test_callee_puts_the_call_on_hold(env: Env, tmp_path: Path) -> None:
    _res, b = env.phones.talk(tmp_path, "uac_call_peer_hold.xml", "uas_hold.xml")
    held = [m for m in b.received() if m.status == 200 and m.header("CSeq") == "1 INVITE"]
    assert held and ("a=recvonly" in held[0].body or "a=inactive" in held[0].body), b.report()
    assert len(b.requests("BYE")) == 1


def test_cancel_while_ringing(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_cancel.xml", "uas_ring.xml")
    assert 487 in res.statuses(), res.report()
    assert len(b.requests("CANCEL")) == 1


def test_busy(env: Env, tmp_path: Path) -> None:
    res, _b = env.phones.talk(tmp_path, "uac_reject.xml", "uas_busy.xml")
    assert res.statuses()[-1] == 486, res.report()


def test_no_answer_times_out_with_480(env: Env, tmp_path: Path) -> None:
    with env.phones.callee(tmp_path, "uas_ring.xml", "101") as callee:
        t0 = time.monotonic()
        res = env.phones.call(tmp_path, "uac_reject.xml", "101", timeout=20)
        elapsed = time.monotonic() - t0
        b = callee.finish()
    check(res)
    check(b)
    assert res.statuses()[-1] == 480, res.report()
    assert len(b.requests("CANCEL")) == 1  # the PBX gave up on the callee
    assert 4.0 < elapsed < 12.0  # ring_timeout 5 in configs/calls


def test_unknown_number_404(env: Env, tmp_path: Path) -> None:
    res = env.phones.call(tmp_path, "uac_reject.xml", "555")
    check(res)
    assert res.statuses()[-1] == 404, res.report()


def test_offline_extension_480(env: Env, tmp_path: Path) -> None:
    res = env.phones.call(tmp_path, "uac_reject.xml", "102")  # exists, never registered
    check(res)
    assert res.statuses()[-1] == 480, res.report()


# ---------------------------------------------------------------- the trunk


def test_trunk_registers_with_the_provider(env: Env) -> None:
    prov = env.provider_registration
    check(prov)
    first, second = prov.requests("REGISTER")
    assert first.header("Authorization") is None
    auth = second.header("Authorization") or ""
    assert 'username="pbxtrunk"' in auth and 'realm="provider.test"' in auth
    assert prov.statuses() == []  # nothing but requests came in
    trunks = env.status()["trunks"]
    assert isinstance(trunks, list)
    (provider,) = [t for t in trunks if t["name"] == "provider"]
    assert provider["registered"] is True, trunks


def test_outbound_call_through_the_trunk(env: Env, tmp_path: Path) -> None:
    provider = Server(
        "provider.xml", tmp_path, "provider", local_ip=PROVIDER_IP, port=env.provider_port
    )
    try:
        res = env.phones.call(tmp_path, "uac_call.xml", "04930777")
        prov = provider.finish()
    finally:
        provider.stop()
    check(res)
    check(prov)
    (invite,) = prov.requests("INVITE")
    # The 0 is stripped (factory dial plan "0." strip 1); the trunk's caller ID is
    # presented, never the phone's own From.
    assert invite.first_line.startswith(f"INVITE sip:4930777@{PROVIDER_IP}:{env.provider_port}")
    assert "4930100" in (invite.header("From") or ""), invite.text
    assert len(prov.requests("BYE")) == 1
    cdr = wait_cdr(env.state, res.call_id)
    assert (cdr["caller"], cdr["callee"], cdr["trunk"]) == ("100@pbx.local", "04930777", "provider")
    assert cdr["disposition"] == "ANSWERED" and cdr["did"] == ""


def test_outside_number_needs_authentication(env: Env, tmp_path: Path) -> None:
    """No guest route: an INVITE to an outside number without (good) credentials is
    challenged and never reaches the trunk."""
    provider = Server(
        "provider.xml", tmp_path, "provider", local_ip=PROVIDER_IP, port=env.provider_port
    )
    try:
        none = run(
            "uac_noauth.xml",
            env.addr,
            tmp_path,
            "noauth",
            keys={"user": "100", "callee": "04930777"},
        )
        wrong = run(
            "uac_reject.xml",
            env.addr,
            tmp_path,
            "wrongpw",
            keys={"user": "100", "callee": "04930777"},
            auth=("100", "guess"),
            recv_timeout=3,
        )
        prov = provider.finish(1)
    finally:
        provider.stop()
    check(none)
    assert none.statuses() == [407], none.report()
    # With a wrong password the second INVITE is challenged again (SIPp counts the
    # unexpected 407 as a failed call): what matters is where the INVITEs went.
    assert wrong.statuses()[:2] == [407, 407], wrong.report()
    assert prov.requests() == [], prov.report()


def test_inbound_did_rings_the_extension(env: Env, tmp_path: Path) -> None:
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as callee:
        res = run(
            "provider_call.xml",
            env.addr,
            tmp_path,
            "provider-call",
            local_ip=PROVIDER_IP,
            keys={"did": "4930555", "caller": "4930999888"},
        )
        b = callee.finish()
    check(res)
    check(b)
    assert res.statuses()[0] in (100, 180, 183)
    (invite,) = b.requests("INVITE")
    assert invite.first_line.startswith("INVITE sip:101@127.0.0.1:")
    assert "4930999888" in (invite.header("From") or "")
    assert len(b.requests("BYE")) == 1
    cdr = wait_cdr(env.state, res.call_id)
    assert (cdr["did"], cdr["trunk"], cdr["disposition"]) == ("4930555", "provider", "ANSWERED")
    assert "4930999888" in cdr["caller"]


# ---------------------------------------------------------------- accounting


def test_every_call_is_accounted(env: Env, tmp_path: Path) -> None:
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as callee:
        answered = env.phones.call(tmp_path, "uac_call.xml", "101", name="answered")
        callee.finish()
    with env.phones.callee(tmp_path, "uas_busy.xml", "101") as callee:
        busy = env.phones.call(tmp_path, "uac_reject.xml", "101", name="busy")
        callee.finish()
    with env.phones.callee(tmp_path, "uas_ring.xml", "101") as callee:
        cancelled = env.phones.call(tmp_path, "uac_cancel.xml", "101", name="cancelled")
        callee.finish()
    for res in (answered, busy, cancelled):
        check(res)
    # The record is written when the call ends: give the PBX a moment.
    wanted = {r.call_id: r.name for r in (answered, busy, cancelled)}
    deadline = time.monotonic() + 5
    rows: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline and len(rows) < 3:
        rows = {r["call_id"]: r for r in cdrs(env.state) if r["call_id"] in wanted}
        time.sleep(0.2)
    assert len(rows) == 3, (wanted, cdrs(env.state))
    by_name = {wanted[cid]: row for cid, row in rows.items()}
    ok = by_name["answered"]
    assert (ok["caller"], ok["callee"], ok["disposition"]) == ("100@pbx.local", "101", "ANSWERED")
    assert ok["answer"] and 0 <= int(ok["billsec"]) <= int(ok["duration"]) <= 5
    assert "127.0.0.1" in ok["source"]
    assert by_name["busy"]["disposition"] == "BUSY"
    assert by_name["busy"]["answer"] == "" and by_name["busy"]["billsec"] == "0"
    assert "486" in by_name["busy"]["cause"]
    assert by_name["cancelled"]["disposition"] == "CANCELLED"
