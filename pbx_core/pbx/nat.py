"""NAT traversal policy: which phones are outside the LAN, which address the PBX
gives them, and where a registered phone is reached.

Theory of operation. `lan_networks` (Asterisk's local_net) says which addresses are
on the PBX's side of the router. A phone whose SIP address (where its requests come
from, or where we send ours) is outside them is told the PBX's *external* addresses:
`external_media_address` in the SDP (c= and o=) of its leg, and
`external_signaling_address` (host[:port]) in the Via and Contact of what we send
it, so its RTP and in-dialog requests reach the router that forwards them to us.
Phones on the LAN keep the PBX's own address. The media engine latches each leg's
RTP to where it really comes from (media/leg.py), which gets through the phone's
own NAT.

Registrations (`nat` setting): with `auto` a phone is reached at the source of its
REGISTER when it looks NATed, as Kamailio's nathelper `nat_uac_test` decides it:
the top Via's sent-by host or port differs from the packet's source (tests 2 and
16), or the Contact names a private address while the source is public (test 1,
narrowed so that a LAN phone registering a Contact on another port is believed).
Otherwise the Contact is used as RFC 3261 §10 means it: a phone that registers a
Contact on another port, or a third party registering someone else's Contact, is
reached there. `force_rport` always uses the source (Asterisk's force_rport); `no`
always the Contact. A Contact naming a host name cannot be compared and is not
resolved here: such a binding is reached at its source.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from pbx_core.media.latch import private
from pbx_core.memo import Memo
from pbx_core.sip.message import Request
from pbx_core.sip.uri import URI
from pbx_core.store.schema import SETTINGS
from pbx_core.store.settings import Network, parse_networks, split_host_port
from pbx_core.transport.manager import Address

log = logging.getLogger("pbx.nat")

MODES = ("auto", "force_rport", "no")
DEFAULT_LAN = str(SETTINGS["lan_networks"].default)
DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
# Asked about the same few hosts on every REGISTER: answers are kept (bounded).
_IPS: Memo[str, IP | None] = Memo(4096, 64)
_PRIVATE_HOSTS: Memo[str, bool] = Memo(4096, 64)


def parse_ip(host: str) -> IP | None:
    """The address a host names, None for a host name."""
    if host in _IPS:
        return _IPS[host]
    try:
        ip: IP | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    return _IPS.keep(host, ip, len(host))


def is_private(host: str) -> bool:
    """RFC 1918, RFC 6598, loopback, link-local or unique-local: an address that
    means nothing outside its own network. False for host names."""
    found = _PRIVATE_HOSTS.get(host)
    if found is None:
        found = _PRIVATE_HOSTS.keep(host, private(host), len(host))
    return found


def looks_natted(req: Request, source: Address) -> bool:
    """Kamailio nat_uac_test 1+2+16 (see the module docstring): the request did not
    come from where it says it was sent, or it names a private Contact from a public
    source."""
    via = req.top_via
    src_host, src_port = source[1], source[2]
    if via.host != src_host and (
        parse_ip(via.host) != parse_ip(src_host) or parse_ip(src_host) is None
    ):
        return True
    default = DEFAULT_PORTS.get(via.transport.upper(), 5060)
    if (via.port or default) != src_port:
        return True
    if is_private(src_host):
        return False
    contacts = req.contacts or []
    return any(is_private(c.uri.host) for c in contacts)


def contact_address(uri: URI, transport: str) -> Address | None:
    """Where a Contact URI is reached (RFC 3263 without DNS): its transport
    parameter (else the one the REGISTER came on; sips: TLS), host and port. None
    when the host is a name (not resolved here)."""
    ip = parse_ip(uri.host)
    if ip is None:
        return None
    param = uri.param("transport")
    proto = param.upper() if param else ("TLS" if uri.scheme == "sips" else transport)
    port = uri.port or DEFAULT_PORTS.get(proto, 5060)
    return (proto, str(ip), port)


@dataclass(frozen=True, slots=True)
class NatPolicy:
    """The NAT settings in force (see the module docstring)."""

    mode: str = "auto"
    lan: tuple[Network, ...] = parse_networks(DEFAULT_LAN)
    media_address: str = ""  # external_media_address ("" = none)
    signaling: tuple[str, int | None] | None = None  # external_signaling_address

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, object], old: NatPolicy | None = None
    ) -> NatPolicy:
        """The policy of pbx_settings; a value the store's checker would refuse is
        logged and the old one (else the default) kept for it."""
        base = old or cls()
        mode = str(settings.get("nat", "auto"))
        if mode not in MODES:
            log.error("nat %r is not one of %s, keeping %s", mode, ", ".join(MODES), base.mode)
            mode = base.mode
        try:
            lan = parse_networks(str(settings.get("lan_networks", DEFAULT_LAN)))
        except ValueError as exc:
            log.error("lan_networks rejected, keeping the old ones: %s", exc)  # noqa: TRY400  # one line says it
            lan = base.lan
        media = str(settings.get("external_media_address", "") or "").strip()
        if media and parse_ip(media) is None:
            log.error("external_media_address %r is not an IP address, ignored", media)
            media = base.media_address
        signaling = base.signaling
        text = str(settings.get("external_signaling_address", "") or "").strip()
        if not text:
            signaling = None
        else:
            try:
                signaling = split_host_port(text)
            except ValueError as exc:
                log.error("external_signaling_address rejected: %s", exc)  # noqa: TRY400  # one line says it
        return cls(mode, lan, media, signaling)

    def is_local(self, host: str) -> bool:
        """On the LAN (lan_networks). A host name is taken as local: we cannot tell
        where it is, and the PBX's own address is the safe answer."""
        ip = parse_ip(host)
        if ip is None:
            return True
        return any(ip in net for net in self.lan)

    def media_address_for(self, host: str) -> str | None:
        """The address to put in SDP for a phone at `host`: external_media_address
        when it is set and the phone is outside the LAN, else None (the engine's)."""
        if self.media_address and not self.is_local(host):
            return self.media_address
        return None

    def signaling_address_for(self, host: str, local: tuple[str, int]) -> tuple[str, int]:
        """Our SIP address for Via and Contact towards `host`: `local` (what the
        transport would say), or external_signaling_address for a phone outside the
        LAN (its port, else the local port)."""
        if self.signaling is None or self.is_local(host):
            return local
        ext_host, ext_port = self.signaling
        return (ext_host, ext_port or local[1])

    def reach(self, req: Request, source: Address, uri: URI) -> tuple[Address, bool]:
        """Where the phone that sent `req` (a REGISTER) from `source` is reached for
        its Contact `uri`, and whether it is taken as NATed."""
        if self.mode == "force_rport":
            return source, True
        contact = contact_address(uri, source[0])
        if contact is None:
            return source, True
        if self.mode == "no":
            return contact, False
        if looks_natted(req, source):
            return source, True
        if (
            source[0] in ("TCP", "TLS")
            and contact[0] == source[0]
            and parse_ip(contact[1]) == parse_ip(source[1])
        ):
            # A reliable transport, the same host: the phone's own connection (it
            # may not listen on the Contact's port at all).
            return source, False
        return contact, False
