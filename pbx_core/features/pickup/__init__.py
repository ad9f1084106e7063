"""Call pickup (FreePBX's codes): `*8` answers a call ringing an extension of the
dialling extension's pickup group (`pbx_extension.pickup_group`), the oldest first;
`**` + extension answers the call ringing that extension. See README.md."""

from __future__ import annotations

from pbx_core.features.api import Context, Decision, Dial, Feature, Pickup, Reject


class CallPickup(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        ringing = ctx.ringing()
        if dial.code == "*8":
            if dial.arg:
                return None  # *8 takes nothing after it
            me = ctx.extension(dial.extension)
            group = me.get("pickup_group") if me is not None else None
            if group is None:
                return Reject(403, "not in a pickup group")
            for r in ringing:
                row = ctx.extension(r.extension)
                mate = row.get("pickup_group") if row is not None else None
                if r.extension != dial.extension and mate == group:
                    return Pickup(r.call_id)
            return Reject(480, "nothing ringing in the pickup group")
        # ** + extension: directed pickup
        if not dial.arg or ctx.extension(dial.arg) is None:
            return Reject(404, "no such extension")
        for r in ringing:
            if r.extension == dial.arg:
                return Pickup(r.call_id)
        return Reject(480, "that extension is not ringing")


FEATURE = CallPickup(
    name="pickup",
    codes={
        "*8": "pick up a call ringing in your pickup group",
        "**": "+ extension: pick up its call",
    },
)
