"""Page groups (FreePBX's paging): dialling a page group's number makes every
member's phone answer by itself and play what the caller says (after a short tone);
members in a call are skipped; `duplex` lets the caller hear them too. See README.md."""

from __future__ import annotations

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


def _members(value: object) -> tuple[str, ...]:
    return tuple(m.strip() for m in str(value or "").split(",") if m.strip())[:MAX_MEMBERS]


def _check_members(value: object) -> str | None:
    members = [m.strip() for m in str(value or "").split(",") if m.strip()]
    if not members:
        return "at least one extension"
    if len(members) > MAX_MEMBERS:
        return f"at most {MAX_MEMBERS} extensions"
    bad = [m for m in members if not m.isdigit() or len(m) > 32]
    return f"not an extension number: {bad[0]}" if bad else None


TABLE = pbx_table(
    "pbx_page_group",
    "Page groups (feature paging): dialling `number` pages every member's phone.",
    text("name", "the group's name (a destination page + this name)", need=True),
    text("number", "the number extensions dial to page the group", null=True, dials="page"),
    text("members", "member extensions, comma-separated", need=True, check=_check_members),
    integer(
        "duplex", "1: the caller hears the members too (a talk-back page)", default=0, lo=0, hi=1
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
        return Page(members, bool(row.get("duplex")))


FEATURE = Paging(name="paging", destination_types=("page",), tables=(TABLE,))
