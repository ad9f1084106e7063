"""Register one account with pjsua2 (PJSIP 2.15, PyPI `pjsua2-python`), the SHA-256
digest client of the interop tests (RFC 8760; SIPp 3.6, baresip 1.0 and Kamailio 5.6's
uac module answer MD5 only). Run as a program, not imported by pytest: PJSIP's
threads stay out of the test process.

    python -m tests.interop.pjsua_register REGISTRAR_HOST:PORT USER DOMAIN PASSWORD

Prints PJSIP's log (level 5: every message sent and received) and then one line
`REGSTATE <status> <reason>` per registration outcome; exits 0 when one was 200.
"""

from __future__ import annotations

import sys
import time

import pjsua2 as pj  # type: ignore[import-not-found]  # test-only dependency


class _Account(pj.Account):  # type: ignore[misc]  # pjsua2 is untyped
    def __init__(self) -> None:
        super().__init__()
        self.codes: list[int] = []

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # pjsua2's name
        self.codes.append(int(prm.code))
        print(f"REGSTATE {prm.code} {prm.reason}", flush=True)


def main(argv: list[str]) -> int:
    registrar, user, domain, password = argv
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.logConfig.level = 5
    cfg.logConfig.consoleLevel = 5
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tc = pj.TransportConfig()
    tc.port = 0
    tc.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    ac = pj.AccountConfig()
    ac.idUri = f"sip:{user}@{domain}"
    ac.regConfig.registrarUri = f"sip:{registrar}"
    ac.regConfig.timeoutSec = 120
    ac.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    acc = _Account()
    acc.create(ac)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and not acc.codes:
        ep.libHandleEvents(20)
    ok = 200 in acc.codes
    acc.shutdown()
    for _ in range(10):
        ep.libHandleEvents(20)
    ep.libDestroy()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
