"""What the trunk promises, against a SIPp "provider" (README: trunk, dial plan and
toll-fraud guard): every outgoing call carries the PBX's P-Asserted-Identity
(RFC 3325), a caller withholding its identity (RFC 3323 Privacy: id) goes out with an
anonymous From and Privacy: id, and each extension's call class decides which routes
it may use (internal < local < national < international; emergency always allowed):
a refused call gets 403 and no INVITE reaches the provider.

One PBX on configs/calls with the trunk on IP authentication (no REGISTER, so the
provider sees nothing but calls), extensions 100-103 of classes internal, local,
national, international, and one route of each class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PbxProcess, start_pbx, stop_pbx
from tests.interop.sipp_agents import Phones, Run, Server, check, free_port, wait_cdr
from tests.interop.test_calls_sipp import PROVIDER_IP, write_config

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

CLASS_OF = {"100": "internal", "101": "local", "102": "national", "103": "international"}
RANK = {"internal": 0, "local": 1, "national": 2, "international": 3}
# dialled number -> (route class, the number the provider must be asked for)
ROUTES = {
    "112": ("emergency", "112"),
    "5551234": ("local", "5551234"),
    "04930777": ("national", "4930777"),
    "0004930777": ("international", "004930777"),
}
TRUNK_CID = "4930100"  # configs/calls pbx_trunk caller_id


def _tables(dest: Path, provider_port: int) -> Path:
    config = write_config(dest, provider_port)
    trunk = config / "pbx_trunk"
    # register 1 -> 0: IP authentication, the provider sees only calls.
    trunk.write_text(trunk.read_text().replace(":trunk-secret:1:", ":trunk-secret:0:"))
    assert ":trunk-secret:0:" in trunk.read_text()
    (config / "pbx_extension").write_text(
        "id(int,auto) username(string) domain(string,null) display_name(string,null) "
        "voicemail(int) ring_timeout(int) pickup_group(int,null) call_class(string)\n"
        + "".join(
            f"{i}:{user}::Class {cls}:0:5::{cls}\n"
            for i, (user, cls) in enumerate(CLASS_OF.items(), 1)
        )
    )
    (config / "pbx_dialplan").write_text(
        "id(int,auto) priority(int) pattern(string) action(string) trunk(string,null) "
        "strip(int) prepend(string,null) description(string,null) call_class(string)\n"
        "1:0:112:trunk:provider:0::emergency:emergency\n"
        "2:5:000.:trunk:provider:1::international:international\n"
        "3:10:0.:trunk:provider:1::national:national\n"
        "4:20:N.:trunk:provider:0::local:local\n"
    )
    return config


@dataclass
class Env:
    pbx: PbxProcess
    tmp: Path
    provider_port: int

    @property
    def phones(self) -> Phones:
        return Phones((self.pbx.host, self.pbx.port))

    def provider(self, tmp: Path) -> Server:
        return Server(
            "provider.xml", tmp, "provider", local_ip=PROVIDER_IP, port=self.provider_port
        )

    def call_out(
        self, tmp: Path, scenario: str, number: str, user: str, wait: float = 15
    ) -> tuple[Run, Run]:
        """`user` dials `number`; the caller's run and the provider's (given `wait`
        seconds to see its call)."""
        provider = self.provider(tmp)
        try:
            res = self.phones.call(tmp, scenario, number, user=user)
            prov = provider.finish(wait)
        finally:
            provider.stop()
        return res, prov


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("trunk-policy")
    port = free_port(PROVIDER_IP)
    pbx = start_pbx(
        tmp, config=_tables(tmp / "config", port), extra=["--state", str(tmp / "state.mdb")]
    )
    try:
        yield Env(pbx, tmp, port)
    finally:
        stop_pbx(pbx)
    assert "Traceback" not in pbx.log(), pbx.log()


# ---------------------------------------------------------------- identity (RFC 3325/3323)


def _name_addr(header: str | None) -> str:
    """A From/To value without its parameters (the random tag)."""
    text = header or ""
    end = text.find(">")
    return text[: end + 1] if end >= 0 else text.split(";", 1)[0]


def test_outgoing_call_asserts_the_pbx_identity(env: Env, tmp_path: Path) -> None:
    res, prov = env.call_out(tmp_path, "uac_call.xml", "04930777", "103")
    check(res)
    check(prov)
    (invite,) = prov.requests("INVITE")
    pai = invite.headers("P-Asserted-Identity")
    assert pai == [f"<sip:{TRUNK_CID}@{PROVIDER_IP}>"], invite.text
    assert TRUNK_CID in (invite.header("From") or ""), invite.text
    assert invite.header("Privacy") is None, invite.text
    # The phone's own From ("Caller 103") is not what the provider sees (the
    # tag is random hex and may hold "103": only the name-addr is looked at).
    assert "103" not in _name_addr(invite.header("From")), invite.text


def test_anonymous_call_hides_the_caller(env: Env, tmp_path: Path) -> None:
    res, prov = env.call_out(tmp_path, "uac_call_private.xml", "04930777", "103")
    check(res)
    check(prov)
    (invite,) = prov.requests("INVITE")
    sender = _name_addr(invite.header("From"))
    assert "sip:anonymous@anonymous.invalid" in sender, invite.text
    assert TRUNK_CID not in sender and "103" not in sender, invite.text
    assert invite.header("Privacy") == "id", invite.text
    # The trusted provider still learns who pays for the call (RFC 3325 §7).
    assert invite.headers("P-Asserted-Identity") == [f"<sip:{TRUNK_CID}@{PROVIDER_IP}>"]
    row = wait_cdr(env.tmp / "state.mdb", res.call_id)
    assert row["caller"] == "103@pbx.local" and row["trunk"] == "provider", row


# ---------------------------------------------------------------- call classes


@pytest.mark.parametrize("number", list(ROUTES))
@pytest.mark.parametrize("user", list(CLASS_OF))
def test_call_class_matrix(env: Env, tmp_path: Path, user: str, number: str) -> None:
    route_class, sent_as = ROUTES[number]
    allowed = route_class == "emergency" or RANK[CLASS_OF[user]] >= RANK[route_class]
    if allowed:
        res, prov = env.call_out(tmp_path, "uac_call.xml", number, user)
        check(res)
        check(prov)
        (invite,) = prov.requests("INVITE")
        assert invite.first_line.startswith(f"INVITE sip:{sent_as}@{PROVIDER_IP}"), invite.text
        return
    # Refused: 403 to the caller, and the provider hears nothing (the 403 is sent
    # before any INVITE could leave, so a short wait after it is enough).
    res, prov = env.call_out(tmp_path, "uac_reject.xml", number, user, wait=0.5)
    check(res)
    assert res.statuses()[-1] == 403, res.report()
    assert prov.requests() == [], prov.report()
