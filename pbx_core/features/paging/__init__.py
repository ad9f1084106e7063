"""Page groups (FreePBX's paging): dialling a page group's number makes every
member's phone answer by itself and play what the caller says (after a short tone);
members in a call are skipped; `duplex` lets the caller hear them too; `multicast`
also sends the page as RTP to a multicast group. See README.md."""

from __future__ import annotations

import ipaddress

from pbx_core.features.api import (
    CallInfo,
    Context,
    Decision,
    Destination,
    Feature,
    Page,
    Reject,
    integer,
    pbx_table,
    text,
)

MAX_MEMBERS = 64
MAX_TTL = 32  # a multicast page stays within the site (media/multicast.py's bound)
PORT_MIN, PORT_MAX = 1024, 65535
CODECS = ("PCMU", "PCMA")


def parse_group(value: object) -> tuple[str, int]:
    """`239.1.1.1:5001` or `[ff02::1]:5001` -> (address, port). ValueError saying
    why for anything else: not multicast (224.0.0.0/4, ff00::/8), a port outside
    PORT_MIN..PORT_MAX."""
    text = str(value or "").strip()[:64]
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
        if ":" in host:
            raise ValueError("an IPv6 group is written [ff02::1]:5001")
    if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError("address:port, e.g. 239.1.1.1:5001 or [ff02::1]:5001")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address: {host}") from None
    if not address.is_multicast:
        raise ValueError(f"{address} is not a multicast address (224.0.0.0/4, ff00::/8)")
    port = int(port_text)
    if not PORT_MIN <= port <= PORT_MAX:
        raise ValueError(f"port {port} outside {PORT_MIN}..{PORT_MAX}")
    return str(address), port


def _check_group(value: object) -> str | None:
    if value is None or value == "":
        return None
    try:
        parse_group(value)
    except ValueError as exc:
        return str(exc)
    return None


def _members(value: object) -> tuple[str, ...]:
    text = "" if value == "-" else str(value or "")
    return tuple(m.strip() for m in text.split(",") if m.strip())[:MAX_MEMBERS]


def _check_members(value: object) -> str | None:
    if value == "-":
        return None
    members = [m.strip() for m in str(value or "").split(",") if m.strip()]
    if not members:
        return "at least one extension (`-`: none, a multicast-only group)"
    if len(members) > MAX_MEMBERS:
        return f"at most {MAX_MEMBERS} extensions"
    bad = [m for m in members if not m.isdigit() or len(m) > 32]
    return f"not an extension number: {bad[0]}" if bad else None


TABLE = pbx_table(
    "pbx_page_group",
    "Page groups (feature paging): dialling `number` pages every member's phone.",
    text("name", "the group's name (a destination page + this name)", need=True),
    text("number", "the number extensions dial to page the group", null=True, dials="page"),
    text(
        "members",
        "member extensions, comma-separated (`-`: none, a multicast-only group)",
        need=True,
        check=_check_members,
    ),
    integer(
        "duplex", "1: the caller hears the members too (a talk-back page)", default=0, lo=0, hi=1
    ),
    text(
        "multicast",
        "also page as RTP to this multicast group, address:port (239.1.1.1:5001, "
        "[ff02::1]:5001) for phones that listen to it; NULL: SIP only",
        null=True,
        check=_check_group,
    ),
    integer(
        "multicast_ttl",
        "TTL (IPv6 hop limit) of the multicast page (1..32): 1 = this network only",
        default=1,
        lo=1,
        hi=MAX_TTL,
    ),
    text(
        "multicast_codec",
        "codec of the multicast page: PCMU (payload type 0) or PCMA (8)",
        default="PCMU",
        choices=CODECS,
    ),
    key=("name",),
    max_rows=100,
)


class Paging(Feature):
    def destination(self, ctx: Context, call: CallInfo, dest: Destination) -> Decision | None:
        row = next((r for r in ctx.rows("pbx_page_group") if r.get("name") == dest.target), None)
        if row is None:
            return Reject(404, "no such page group")
        if not call.from_extension:
            return Reject(403, "pages are for extensions")
        members = tuple(m for m in _members(row.get("members")) if m != call.caller_number)
        group: tuple[str, int] | None = None
        if row.get("multicast"):
            try:
                group = parse_group(row["multicast"])
            except ValueError as exc:  # `pbx db check` refuses it: never here
                return Reject(500, f"page group {dest.target}: {exc}")
        if not members and group is None:
            return Reject(480, "nobody to page")
        return Page(
            members,
            bool(row.get("duplex")),
            multicast=group,
            multicast_ttl=int(row.get("multicast_ttl") or 1),
            multicast_codec=str(row.get("multicast_codec") or "PCMU"),
        )


FEATURE = Paging(name="paging", destination_types=("page",), tables=(TABLE,))
