"""Two claims of the B2BUA against SIPp phones (README: calls): PRACK towards 100rel
callees (RFC 3262) and 491 on glare (RFC 3261 §14.1/14.2).

- A callee that rings reliably (Require: 100rel, RSeq) gets its PRACK with the
  matching RAck; the caller, which only supports 100rel, gets a plain 180 (the PBX
  sends no reliable provisionals of its own); a caller that requires 100rel gets 420
  with Unsupported: 100rel.
- Glare: with direct media the PBX passes re-INVITEs between the phones. The
  caller's re-INVITE crosses one from the callee: the PBX answers the callee's with
  491 (its own to the callee is pending), the callee answers the PBX's with 491,
  which reaches the caller; the caller's retry 2.2 s later goes through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.sipp_agents import check
from tests.interop.test_media_anchor import Env, media_pbx

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with media_pbx(tmp_path_factory.mktemp("prack")) as e:
        yield e


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with media_pbx(tmp_path_factory.mktemp("glare"), {"direct_media": "yes"}) as e:
        yield e


# ---------------------------------------------------------------- PRACK (RFC 3262)


def test_reliable_180_from_the_callee_is_pracked(env: Env, tmp_path: Path) -> None:
    res, b = env.phones.talk(tmp_path, "uac_call_100rel.xml", "uas_100rel.xml")
    (invite,) = b.requests("INVITE")
    (prack,) = b.requests("PRACK")
    seq = (invite.header("CSeq") or "").split()[0]
    assert prack.header("RAck") == f"1 {seq} INVITE", prack.text
    # The PRACK is a request inside the early dialog the 180 set up (§12.1.2):
    # same Call-ID, the callee's tag, a CSeq above the INVITE's.
    assert prack.header("Call-ID") == invite.header("Call-ID")
    assert ";tag=" in (prack.header("To") or ""), prack.text
    prack_seq, method = (prack.header("CSeq") or "").split()
    assert method == "PRACK" and int(prack_seq) > int(seq), prack.text
    # The callee's 200 to the PRACK is not a new final answer for the caller, and
    # the caller's 180 is an ordinary one.
    ringing = res.responses(180)
    assert ringing, res.report()
    assert all("100rel" not in (m.header("Require") or "") for m in ringing), res.report()
    assert all(m.header("RSeq") is None for m in ringing), res.report()
    assert res.statuses().count(200) == 2, res.report()  # the INVITE's and the BYE's
    assert len(b.requests("BYE")) == 1


def test_caller_requiring_100rel_gets_420(env: Env, tmp_path: Path) -> None:
    res = env.phones.call(tmp_path, "uac_require_100rel.xml", "101")
    check(res)
    (refusal,) = res.responses(420)
    assert "100rel" in (refusal.header("Unsupported") or ""), refusal.text
    assert 407 not in res.statuses(), res.report()


# ---------------------------------------------------------------- glare (491)


def test_crossing_reinvites_get_491_and_the_retry_works(direct: Env, tmp_path: Path) -> None:
    res, b = direct.phones.talk(tmp_path, "uac_glare.xml", "uas_glare.xml", timeout=20)
    # The callee's re-INVITE met the PBX's pending one: 491 (§14.2).
    assert [m.status for m in b.received() if m.status is not None] == [491], b.report()
    assert b.responses(491, "1 INVITE"), b.report()
    # The callee's 491 went back to the caller for its re-INVITE …
    assert res.responses(491, "3 INVITE"), res.report()
    # … and the caller's retry reached the callee and was answered.
    assert res.responses(200, "4 INVITE"), res.report()
    invites = b.requests("INVITE")
    assert len(invites) == 3, b.report()  # the call, the crossed re-INVITE, the retry
    assert len({m.header("Call-ID") for m in invites}) == 1
    assert len(b.requests("ACK")) == 3, b.report()  # 200, our 491, the retry's 200
    assert len(b.requests("BYE")) == 1, b.report()
    row = direct.cdr(res)
    assert row["disposition"] == "ANSWERED" and row["cause"] == "caller hung up", row
