"""Issue 13's call blocking and last caller through `pbx run`, against SIPp phones and
a SIPp provider: *30/*31 from a phone, the installer's pbx_blacklist (a prefix: busy;
a number: the announcement, heard as the build's beep), *32 blocking the last trunk
caller, and *69 calling the last caller back through the trunk on 1 (an RFC 4733 key
sent from the phone's media socket) for a national extension, refused for one of
class internal (nothing reaches the provider).

One PBX serves the module: configs/features plus a blacklist and a DID for 103."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.features_env import (
    PROVIDER_IP,
    Ear,
    Env,
    start,
    stop,
    write_config,
)
from tests.interop.sipp_agents import Run, Server, check, free_port, run

pytestmark = [pytest.mark.interop, pytest.mark.tools("sipp")]

BLACKLIST = (
    "id(int,auto) number(string) extension(string,null) treatment(string,null) "
    "description(string,null)\n"
    "1:0900*::busy:premium numbers\n"
    "2:04930777::announce:a pest\n"
)
DID_103 = "3:4930556:provider:extension:103:the meeting room\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("blocking")
    port = free_port(PROVIDER_IP)
    config = write_config(tmp / "config", port)
    (config / "pbx_blacklist").write_text(BLACKLIST)
    did = config / "pbx_did"
    lines = did.read_text().splitlines(keepends=True)
    did.write_text("".join([*lines[:-1], DID_103, lines[-1]]))  # before the catch-all *
    env = start(tmp, port)
    try:
        yield env
    finally:
        stop(env)


def status_of(res: Run) -> int:
    statuses = [s for s in res.statuses() if s >= 200 and s != 407]
    assert statuses, res.report()
    return statuses[-1]


def provider_calls(env: Env, tmp: Path, caller: str, scenario: str, **keys: str) -> Run:
    """The provider calls the office's DID (4930555 → 101 unless `did` says) from
    `caller`."""
    return run(
        scenario,
        env.addr,
        tmp,
        f"provider-{caller}",
        local_ip=PROVIDER_IP,
        keys={"did": "4930555", "caller": caller, **keys},
    )


def ring_from_trunk(env: Env, tmp: Path, caller: str, user: str, did: str) -> None:
    """`caller` calls `user` over the trunk; the phone answers: the last caller."""
    with env.phones.callee(tmp, "uas_answer.xml", user) as phone:
        check(provider_calls(env, tmp, caller, "provider_call.xml", did=did))
        check(phone.finish())


class KeyEar(Ear):
    """An Ear that also presses keys: RFC 4733 events sent to where the PBX's RTP
    comes from (the PBX latches the phone's media to its source)."""

    def __init__(self) -> None:
        super().__init__()
        self.pbx: tuple[str, int] | None = None
        self.seq = 1

    def listen(self, timeout: float = 10.0) -> bool:
        """Wait for the PBX's first RTP packet (what it plays); note its source."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, source = self.sock.recvfrom(4096)
            except BlockingIOError:
                time.sleep(0.02)
                continue
            if len(data) > 12 and data[0] >> 6 == 2:
                self.pbx = (source[0], source[1])
                return True
        return False

    def press(self, digit: str) -> None:
        assert self.pbx is not None
        event = "0123456789*#".index(digit)
        for i, end in enumerate((False, False, True, True, True)):
            flags = 0x80 if end else 0
            payload = struct.pack("!BBH", event, flags | 10, 160 * (i + 1))
            head = struct.pack("!BBHII", 0x80, 101 | (0x80 if i == 0 else 0), self.seq, 8000, 77)
            self.sock.sendto(head + payload, self.pbx)
            self.seq += 1
            time.sleep(0.02)


def star69(env: Env, tmp: Path, user: str, press: str | None) -> tuple[Run, KeyEar]:
    """`user` dials *69 and presses `press` once the PBX speaks; its run (the PBX
    hangs up at the end) and what it heard."""
    ear = KeyEar()
    out: list[Run] = []
    caller = threading.Thread(
        target=lambda: out.append(
            env.phones.call(
                tmp,
                "feat_code_keys.xml",
                "*69",
                user=user,
                name=f"star69-{user}",
                keys={"rtp_port": str(ear.port)},
                timeout=30,
            )
        )
    )
    caller.start()
    try:
        assert ear.listen(), "the PBX said nothing"
        if press is not None:
            ear.press(press)
    finally:
        caller.join(40)
    (res,) = out
    return res, ear


# ---------------------------------------------------------------- the codes


def test_star30_blocks_and_star31_unblocks(env: Env, tmp_path: Path) -> None:
    env.dial_code(tmp_path, "101", "*30100")
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
        res = env.phones.call(tmp_path, "uac_reject.xml", "101", user="100")
        check(res)
        assert status_of(res) == 486
        phone.stop()
    assert phone.run.requests("INVITE") == [], phone.run.report()  # it never rang
    env.dial_code(tmp_path, "101", "*31100")
    env.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")


# ---------------------------------------------------------------- the blacklist


def test_a_blacklisted_prefix_gets_busy_without_ringing(env: Env, tmp_path: Path) -> None:
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
        res = provider_calls(env, tmp_path, "09001234", "provider_call_reject.xml")
        check(res)
        assert status_of(res) == 486
        phone.stop()
    assert phone.run.requests("INVITE") == [], phone.run.report()


def test_a_blacklisted_number_hears_the_announcement(env: Env, tmp_path: Path) -> None:
    ear = Ear(PROVIDER_IP)
    try:
        with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
            res = provider_calls(
                env, tmp_path, "04930777", "provider_call_hear.xml", rtp_port=str(ear.port)
            )
            check(res)  # answered by the PBX, then its BYE
            phone.stop()
        assert ear.heard_confirmation(), (len(ear.payloads), res.report())
    finally:
        ear.close()
    assert phone.run.requests("INVITE") == [], phone.run.report()


def test_star32_blocks_the_last_trunk_caller(env: Env, tmp_path: Path) -> None:
    ring_from_trunk(env, tmp_path, "04930888", "101", "4930555")
    env.dial_code(tmp_path, "101", "*32")
    res = provider_calls(env, tmp_path, "04930888", "provider_call_reject.xml")
    check(res)
    assert status_of(res) == 486
    env.dial_code(tmp_path, "101", "*3104930888")  # the module's PBX: 101 clean again


# ---------------------------------------------------------------- *69


def test_star69_calls_the_last_caller_back_through_the_trunk(env: Env, tmp_path: Path) -> None:
    ring_from_trunk(env, tmp_path, "04930999", "101", "4930555")
    provider = Server(
        "uas_bye.xml", tmp_path, "provider", local_ip=PROVIDER_IP, port=env.provider_port
    )
    try:
        res, ear = star69(env, tmp_path, "101", "1")  # 101 is national
        ear.close()
        prov = provider.finish(10)
    finally:
        provider.stop()
    check(res)  # the provider answered, then hung up: the PBX's BYE ends 101's call
    check(prov)
    (invite,) = prov.requests("INVITE")
    # The national route strips its 0; the provider is shown the office's line.
    assert invite.first_line.startswith(f"INVITE sip:4930999@{PROVIDER_IP}"), invite.text


def test_star69_is_refused_for_a_class_that_may_not_dial_it(env: Env, tmp_path: Path) -> None:
    # 103 is of class internal: the national number that called it is out of its
    # reach, by *69 as by dialling.
    ring_from_trunk(env, tmp_path, "04930999", "103", "4930556")
    provider = env.provider(tmp_path)
    try:
        res, ear = star69(env, tmp_path, "103", "1")
        ear.close()
        prov = provider.finish(0.5)
    finally:
        provider.stop()
    check(res)  # "not available", then the PBX hung up
    assert len(res.requests("BYE")) == 1, res.report()
    assert prov.requests() == [], prov.report()


def test_star69_without_a_key_hangs_up(env: Env, tmp_path: Path) -> None:
    ring_from_trunk(env, tmp_path, "04930999", "101", "4930555")
    provider = env.provider(tmp_path)
    try:
        res, ear = star69(env, tmp_path, "101", None)
        assert ear.heard_confirmation()
        ear.close()
        prov = provider.finish(0.5)
    finally:
        provider.stop()
    check(res)
    assert prov.requests() == [], prov.report()


# ---------------------------------------------------------------- anonymous


def test_anonymous_callers_blocked_by_the_toggle(env: Env, tmp_path: Path) -> None:
    env.set_toggle("101", "blocking.block_anonymous", True)
    try:
        with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
            res = provider_calls(env, tmp_path, "anonymous", "provider_call_reject.xml")
            check(res)
            assert status_of(res) == 486
            phone.stop()
        assert phone.run.requests("INVITE") == [], phone.run.report()
    finally:
        env.set_toggle("101", "blocking.block_anonymous", None)
    with env.phones.callee(tmp_path, "uas_answer.xml", "101") as phone:
        check(provider_calls(env, tmp_path, "anonymous", "provider_call.xml"))
        check(phone.finish())


# ---------------------------------------------------------------- a restart


def test_a_block_list_survives_a_restart(tmp_path: Path) -> None:
    """A PBX of its own: 101 blocks 100, the daemon stops (SIGTERM drains the state
    writer) and starts again on the same state LMDB: 100 still gets busy."""
    first = start(tmp_path / "pbx")
    try:
        first.dial_code(tmp_path, "101", "*30100")
    finally:
        stop(first)
    again = start(tmp_path / "pbx", first.provider_port)
    try:
        res = again.phones.call(tmp_path, "uac_reject.xml", "101", user="100")
        check(res)
        assert status_of(res) == 486
        again.dial_code(tmp_path, "101", "*31100")
        again.phones.talk(tmp_path, "uac_call.xml", "uas_answer.xml", "101")
    finally:
        stop(again)
