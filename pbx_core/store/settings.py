"""System settings (`pbx_settings` rows): their type, the core's list, and the checks
of values a type and a range cannot express (networks, RTP ports, addresses, zones).

The list in use is `schema.SETTINGS`: these joined with the features' own settings
(store/feature_schema.py rebinds it at start); read that one at use.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pbx_core import tz

RFC4028_MIN_SE = 90  # RFC 4028 §4: no Min-SE below 90 seconds
RTP_RANGE_MAX = 20000  # ports in rtp_port_min..rtp_port_max (10000 pairs): bounds the sockets
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """A comma-separated list of networks (`lan_networks`): CIDRs, a bare address
    being a /32 or /128; empty items are skipped. ValueError names the first bad one."""
    out: list[Network] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network (e.g. 192.168.1.0/24)") from None
    return tuple(out)


def check_rtp_range(port_min: int, port_max: int) -> str | None:
    """What is wrong with an RTP port range (rtp_port_min, rtp_port_max), or None: the
    first port even (RTP even, RTCP odd: RFC 3550 §11), the range ordered, within
    1024-65535, at least one pair and at most RTP_RANGE_MAX ports."""
    if not (1024 <= port_min <= 65535 and 1024 <= port_max <= 65535):
        return f"the RTP port range {port_min}-{port_max} must lie in 1024-65535"
    if port_min % 2:
        return f"rtp_port_min {port_min} must be even (RTP on even ports, RTCP on odd)"
    if port_max < port_min + 1:
        return f"rtp_port_max {port_max} must be above rtp_port_min {port_min} (one pair)"
    if port_max - port_min + 1 > RTP_RANGE_MAX:
        return (
            f"the RTP port range {port_min}-{port_max} holds {port_max - port_min + 1} "
            f"ports; at most {RTP_RANGE_MAX}"
        )
    return None


def split_host_port(text: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]' or '[v6]:port' -> (host without brackets, port or
    None). ValueError when it is none of these."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ADDRESS] or [ADDRESS]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, None
    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{text!r}: the port must be 1-65535")
        port = int(port_text)
    return host, port


def check_external(name: str, text: str) -> str | None:
    """What is wrong with external_media_address (an IP address: it goes in SDP) or
    external_signaling_address (an IP address or host name, with an optional
    port), or None. Empty means unset."""
    if not text:
        return None
    if name == "external_media_address":
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return f"setting {name!r}: {text!r} is not an IP address"
        if ip.is_unspecified or ip.is_multicast:
            return f"setting {name!r}: {text} cannot receive RTP"
        return None
    try:
        host, _port = split_host_port(text)
    except ValueError as exc:
        return f"setting {name!r}: {exc}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
                            r"(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", host):  # fmt: skip
            return f"setting {name!r}: {host!r} is neither an IP address nor a host name"
        return None
    if ip.is_unspecified or ip.is_multicast:
        return f"setting {name!r}: {host} cannot receive SIP"
    return None


def _zone_problem(value: str | int) -> str | None:
    """The setting `timezone`: what pbx_core/tz.py cannot read, or None."""
    try:
        tz.zone(str(value))
    except tz.ZoneError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: str | int
    doc: str
    choices: tuple[str, ...] = ()
    future: str = ""  # the feature it belongs to, not built yet: a non-default value is an error
    # An int setting's inclusive range (a feature's must give one; the core's are in
    # judge.BOUNDS), and the feature that declared it ("": the core's).
    lo: int | None = None
    hi: int | None = None
    owner: str = ""
    # What else is wrong with a typed value (in choices and lo..hi), or None; the
    # judge calls it (db check, commit, the daemon's start and reload).
    check: Callable[[str | int], str | None] | None = None


# The core's settings. schema.SETTINGS is these joined with the features' own
# (store/feature_schema.py rebinds it at start): read that one at use.
CORE_SETTINGS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        Setting(
            "domain",
            str,
            "pbx.local",
            "SIP domain and digest realm of the extensions (and the realm of requests that "
            "name no domain of the subscriber table, such as the PBX's address)",
        ),
        Setting(
            "hostname",
            str,
            "pbx",
            "a name of the PBX a REGISTER may address (besides domain, its addresses and "
            "localhost); the system's host name is /data/etc/hostname",
        ),
        Setting(
            "sip_port",
            int,
            5060,
            "SIP port (UDP and TCP) of `pbx run`'s listeners that name no port (the image's: "
            "every IPv4 and IPv6 address); read at start, a change applies at the next restart",
        ),
        Setting(
            "user_agent",
            str,
            "Wafer PBX",
            "Server and User-Agent header of what the PBX sends (no version by default)",
        ),
        Setting(
            "rtp_port_min",
            int,
            10000,
            "first RTP port (even; RTP on even ports, RTCP on the odd one above; the range "
            f"lies in 1024-65535 and holds 2 to {RTP_RANGE_MAX} ports)",
        ),
        Setting(
            "rtp_port_max",
            int,
            20000,
            "last RTP port (the last pair is the highest even port whose odd neighbour is "
            "in the range)",
        ),
        Setting("net_mode", str, "dhcp", "dhcp or static", ("dhcp", "static")),
        Setting("net_address", str, "", "static IPv4 address/prefix, e.g. 192.168.1.2/24"),
        Setting("net_gateway", str, "", "static default gateway"),
        Setting("net_dns", str, "", "comma-separated DNS servers"),
        Setting("language", str, "en", "prompt language", future="prompt languages"),
        Setting(
            "timezone",
            str,
            "UTC",
            "the box's time zone, for time conditions and the CDRs' local times: a POSIX "
            "TZ string (CET-1CEST,M3.5.0,M10.5.0/3, EST5EDT,M3.2.0,M11.1.0, IST-5:30) or a "
            "name of pbx_core/tz.py's list (Europe/Berlin, America/New_York …); any other "
            "zone as its POSIX string, the last line of its /usr/share/zoneinfo file",
            check=_zone_problem,
        ),
        Setting(
            "operator",
            str,
            "",
            "number reached by 0 in voicemail (before or while leaving a message) and IVR; "
            "empty = 0 does nothing",
        ),
        Setting("vm_max_seconds", int, 180, "longest voicemail message (seconds)"),
        Setting(
            "vm_max_messages",
            int,
            100,
            "messages per mailbox: a full box is announced to the caller, nothing recorded",
        ),
        Setting("reg_min_expires", int, 60, "shortest registration accepted"),
        Setting("reg_max_expires", int, 3600, "longest registration granted"),
        Setting(
            "sub_max_per_extension",
            int,
            64,
            "SUBSCRIBE dialogs (lamp keys, presence, voicemail) one extension may hold",
        ),
        Setting("sub_max_total", int, 6000, "SUBSCRIBE dialogs in all (about 2 KB of RAM each)"),
        Setting("rtp_timeout", int, 60, "seconds without RTP before a call is ended"),
        Setting(
            "direct_media",
            str,
            "no",
            "yes = a call between two extensions on the LAN (lan_networks: their SIP source "
            "and SDP addresses) sends RTP phone to phone, not through the PBX; such calls get "
            "no music on hold (the held phone hears silence) and no RTP timeout (session "
            "timers still end dead calls). Calls with a trunk, *43 and delayed offers are "
            "always anchored",
            ("no", "yes"),
        ),
        Setting(
            "lan_networks",
            str,
            "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,127.0.0.0/8,fc00::/7,::1/128",
            "comma-separated networks that count as the LAN (Asterisk's local_net): for "
            "direct_media, and a phone whose SIP address is outside them is sent "
            "external_media_address and external_signaling_address; RFC 1918, loopback and "
            "IPv6 unique-local by default",
        ),
        Setting(
            "external_media_address",
            str,
            "",
            "the PBX's address as phones outside lan_networks reach it (Asterisk's "
            "external_media_address): put in the SDP offered to them, e.g. the public "
            "address of the router that forwards the RTP ports to the PBX; empty = the "
            "PBX's own address for everyone",
        ),
        Setting(
            "external_signaling_address",
            str,
            "",
            "host or host:port of the PBX as phones outside lan_networks reach its SIP "
            "port (Asterisk's external_signaling_address/port): used in our Via and "
            "Contact towards them; empty = the PBX's own address",
        ),
        Setting(
            "nat",
            str,
            "auto",
            "how phones are reached: auto = at the address their requests come from when "
            "they look NATed (Via sent-by differing from the source, or a private Contact "
            "from a public source, as Kamailio's nat_uac_test), else at their Contact; "
            "force_rport = always at the source (Asterisk's force_rport); no = always at "
            "the Contact",
            ("auto", "force_rport", "no"),
        ),
        Setting(
            "session_expires",
            int,
            1800,
            "RFC 4028 session timer: the Session-Expires the PBX asks for on each leg, "
            "seconds, 0 or at least session_min_se; a call nobody refreshes is ended after it "
            "(0 = no session timers)",
        ),
        Setting(
            "session_min_se",
            int,
            RFC4028_MIN_SE,
            "RFC 4028 Min-SE: the shortest session interval accepted (smaller requests get "
            "422); 90 is the RFC's floor, lower values are for tests only",
        ),
        Setting(
            "auth_algorithms",
            str,
            "MD5",
            "digest algorithms offered to phones, one challenge each, in this order of "
            "preference (RFC 8760). SHA-256 needs the row's password (an MD5 ha1 alone "
            "is offered MD5). MD5-only clients that read just the first challenge (SIPp "
            "3.6) need MD5 first; baresip 1.0/libre 1.1 fails whenever SHA-256 is offered",
            ("MD5", "MD5,SHA-256", "SHA-256,MD5", "SHA-256"),
        ),
        Setting("sec_ban_failures", int, 10, "failed logins that ban a source (0 = never)"),
        Setting("sec_ban_window", int, 60, "seconds in which sec_ban_failures count"),
        Setting("sec_ban_seconds", int, 900, "how long a ban lasts"),
        Setting("sec_rate", int, 50, "requests/s per source (0 = no limit)"),
        Setting("sec_burst", int, 100, "requests a source may send at once"),
        Setting("sec_trusted", str, "", "comma-separated addresses/CIDRs never banned or limited"),
        Setting("sec_scanner_agents", str, "", "extra User-Agent substrings to drop"),
        Setting("sec_max_sources", int, 10000, "sources tracked at once (memory bound)"),
        Setting(
            "admin_password",
            str,
            "",
            "console admin password, pbkdf2_sha256$iterations$salt$hash (set with the "
            "console's passwd); empty = the factory password, which must be changed at login",
        ),
    )
}
