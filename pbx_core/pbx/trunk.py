"""SIP trunks: outbound registration to the provider (digest, refresh, back-off),
recognising the provider's requests by source address, and building the B leg of
outgoing calls (caller ID set by the PBX, never taken from the phone)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from pbx_core.pbx.calls import Target, name_addr
from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip.digest_client import DigestClient
from pbx_core.sip.message import Headers, Request, Response
from pbx_core.sip.uri import parse_uri
from pbx_core.store.model import Trunk, User

# A caller number we may put in a From user part as it is (RFC 3261 user unreserved).
_PRESENTABLE = re.compile(r"[0-9A-Za-z+*#._-]{1,32}")

log = logging.getLogger("pbx.trunk")

RETRY_MIN, RETRY_MAX = 30.0, 600.0


@dataclass
class TrunkState:
    trunk: Trunk
    address: str | None = None  # resolved IP of trunk.host
    registered: bool = False
    state: str = "idle"
    last_status: int | None = None
    failures: int = 0
    expires: int = 0
    call_id: str = field(default_factory=lambda: f"{secrets.token_hex(8)}@pbx")
    cseq: int = 0
    tag: str = field(default_factory=lambda: secrets.token_hex(6))
    timer: asyncio.TimerHandle | None = None
    auth: DigestClient | None = None
    authed_once: bool = False

    @property
    def transport(self) -> str:
        return self.trunk.transport.upper()


class TrunkManager:
    def __init__(self, stack: SipServer) -> None:
        self.stack = stack
        self.loop = stack.loop
        self.trunks: dict[str, TrunkState] = {}

    # ------------------------------------------------------------ configuration
    def configure(self, trunks: list[Trunk]) -> None:
        wanted = {t.name: t for t in trunks if t.enabled}
        for name in list(self.trunks):
            if name not in wanted or wanted[name] != self.trunks[name].trunk:
                self._drop(name)
        for name, trunk in wanted.items():
            if name in self.trunks:
                continue
            st = TrunkState(trunk)
            self.trunks[name] = st
            self._resolve(st)

    def _drop(self, name: str) -> None:
        st = self.trunks.pop(name)
        if st.timer is not None:
            st.timer.cancel()

    def _resolve(self, st: TrunkState) -> None:
        host = st.trunk.host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            tasks = self.stack.transports.tasks
            if tasks is None:
                st.state = "unresolved"
                return
            tasks.create_task(self._lookup(st))
            return
        st.address = host
        self._start(st)

    async def _lookup(self, st: TrunkState) -> None:
        try:
            infos = await self.loop.getaddrinfo(
                st.trunk.host, st.trunk.port, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            st.state = f"DNS failed: {exc}"
            log.warning("trunk %s: cannot resolve %s: %s", st.trunk.name, st.trunk.host, exc)
            self._retry(st, lambda: self._resolve(st))
            return
        st.address = str(infos[0][4][0])
        self._start(st)

    def _start(self, st: TrunkState) -> None:
        if st.trunk.register:
            self._register(st)
        else:
            st.state = "ip-auth"

    def close(self) -> None:
        for name in list(self.trunks):
            self._drop(name)

    # ------------------------------------------------------------ registration
    def _register(self, st: TrunkState) -> None:
        if st.address is None or self.trunks.get(st.trunk.name) is not st:
            return
        t = st.trunk
        dest = (st.transport, st.address, t.port)
        user = t.username or ""
        host, port = self.stack.local_address(dest)
        st.cseq += 1
        h = Headers()
        h.add("Via", str(self.stack.via_for(dest)))
        h.add("Max-Forwards", "70")
        domain = t.from_domain or t.host
        h.add("From", f"<sip:{user}@{domain}>;tag={st.tag}")
        h.add("To", f"<sip:{user}@{domain}>")
        h.add("Call-ID", st.call_id)
        h.add("CSeq", f"{st.cseq} REGISTER")
        host = f"[{host}]" if ":" in host else host
        h.add("Contact", f"<sip:{user}@{host}:{port}>")
        h.add("Expires", str(t.register_expires))
        h.add("User-Agent", self.stack.user_agent)
        uri = f"sip:{domain}" if t.port == 5060 else f"sip:{domain}:{t.port}"
        if st.auth is not None and st.auth.challenge is not None:
            creds = st.auth.authorization("REGISTER", uri, secrets.token_hex(8))
            if creds is not None:
                hdr = "Authorization" if st.last_status != 407 else "Proxy-Authorization"
                h.add(hdr, creds)
        req = Request("REGISTER", parse_uri(uri), h)
        st.state = "registering"
        try:
            self.stack.request(req, dest, lambda r: self._registered(st, r))
        except Exception:
            log.exception("trunk %s: REGISTER not sent", t.name)
            self._retry(st, lambda: self._register(st))

    def _registered(self, st: TrunkState, resp: Response | None) -> None:
        if self.trunks.get(st.trunk.name) is not st:
            return
        status = 408 if resp is None else resp.status
        if status < 200:
            return
        st.last_status = status
        if status in (401, 407) and resp is not None and not st.authed_once:
            header = "www-authenticate" if status == 401 else "proxy-authenticate"
            if st.auth is None:
                st.auth = DigestClient(
                    st.trunk.auth_username or st.trunk.username or "", st.trunk.password or ""
                )
            if st.auth.on_challenge(resp.headers.getall(header)):
                st.authed_once = True
                self._register(st)
                return
        st.authed_once = False
        if 200 <= status < 300 and resp is not None:
            expires = _granted(resp, st.trunk.register_expires)
            st.registered, st.failures, st.expires = True, 0, expires
            st.state = "registered"
            log.info("trunk %s registered for %s s", st.trunk.name, expires)
            refresh = max(20.0, expires * 0.8 if expires > 60 else expires - 10)
            st.timer = self.loop.call_later(refresh, self._register, st)
            return
        st.registered = False
        st.state = f"failed ({status})"
        log.warning("trunk %s: registration failed with %s", st.trunk.name, status)
        self._retry(st, lambda: self._register(st))

    def _retry(self, st: TrunkState, again: Any) -> None:
        st.failures += 1
        delay = min(RETRY_MAX, RETRY_MIN * 2 ** min(st.failures - 1, 5))
        st.timer = self.loop.call_later(delay, again)

    # ------------------------------------------------------------ calls
    def trusted(self, ip: str) -> str | None:
        """The trunk whose provider sends from `ip`, if any (no auth asked)."""
        for name, st in self.trunks.items():
            if st.address == ip:
                return name
        return None

    def target(
        self, name: str, number: str, caller: User, req: Request, presented: str | None = None
    ) -> Target | None:
        """Where a call to `number` over trunk `name` goes. `caller` is the extension
        whose identity the provider is asserted (P-Asserted-Identity); `presented`, a
        forwarded call's original caller number, is the From the provider sees."""
        st = self.trunks.get(name)
        if st is None or st.address is None:
            return None
        t = st.trunk
        domain = t.from_domain or t.host
        cid = (
            caller.settings.outbound_cid
            or t.caller_id
            or t.username
            or caller.username
            or "anonymous"  # an application's own class (DISA) names no extension
        )
        identity = name_addr(None, f"sip:{cid}@{domain}")
        privacy = (req.headers.get("privacy") or "").lower()
        anonymous = "id" in privacy or (req.from_.uri.user or "").lower() == "anonymous"
        extra = [("P-Asserted-Identity", identity)]
        from_value = identity
        if presented is not None and _PRESENTABLE.fullmatch(presented):
            from_value = name_addr(None, f"sip:{presented}@{domain}")
        if anonymous:
            from_value = name_addr("Anonymous", "sip:anonymous@anonymous.invalid")
            extra.append(("Privacy", "id"))
        port = "" if t.port == 5060 else f":{t.port}"
        uri = parse_uri(f"sip:{number}@{t.host}{port}")
        to_value = name_addr(None, f"sip:{number}@{t.host}{port}")
        creds = None
        if t.password:
            creds = (t.auth_username or t.username or "", t.password)
        return Target(
            uri, (st.transport, st.address, t.port), name, from_value, to_value, extra, creds
        )

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "name": name,
                "host": f"{st.trunk.host}:{st.trunk.port}",
                "state": st.state,
                "registered": st.registered,
                "last_status": st.last_status,
            }
            for name, st in sorted(self.trunks.items())
        ]


def _granted(resp: Response, asked: int) -> int:
    """The registration's lifetime from the provider's 200: never more than we asked
    (a registrar may shorten it, not lengthen it: RFC 3261 §10.2.4), so a 200 saying
    years does not stop the refreshes."""
    try:
        for contact in resp.contacts or []:
            value = contact.param("expires")
            if value and value.isascii() and value.isdigit() and len(value) <= 10:
                return min(int(value), asked)
        if resp.expires is not None:
            return min(resp.expires, asked)
    except Exception:  # noqa: BLE001  # a provider's odd 200 must not stop refreshes
        log.debug("odd 200 to REGISTER")
    return asked
