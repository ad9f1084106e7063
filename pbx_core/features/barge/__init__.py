"""Listen, whisper, barge (FreePBX's ChanSpy-style codes): an extension with the
permission joins the call another extension is in: `*222` + extension listens (nobody
hears it), `*223` + extension whispers (only that extension hears it), `*224` +
extension barges in (everyone hears everyone). Never without a `pbx_barge` row
allowing it. See README.md."""

from __future__ import annotations

from pbx_core.features.api import (
    Barge,
    Context,
    Decision,
    Dial,
    Feature,
    Reject,
    pbx_table,
    text,
)

MODES = {"*222": "listen", "*223": "whisper", "*224": "barge"}


def _list(value: object) -> set[str]:
    return {v.strip() for v in str(value or "").split(",") if v.strip()}


def _check_modes(value: object) -> str | None:
    bad = _list(value) - set(MODES.values())
    return f"not a mode: {sorted(bad)[0]} (listen, whisper, barge)" if bad else None


TABLE = pbx_table(
    "pbx_barge",
    "Who may join others' calls (feature barge): `extension` may use `modes` on the "
    "calls of `targets`. No row: never.",
    text("extension", "the extension that may listen, whisper or barge", need=True),
    text("modes", "listen, whisper, barge (comma-separated)", default="listen", check=_check_modes),
    text(
        "targets",
        "the extensions whose calls it may join (comma-separated), * for all",
        default="*",
    ),
    key=("extension",),
    max_rows=1000,
)


class CallBarge(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        mode = MODES[dial.code]
        target = dial.arg
        if not target or ctx.extension(target) is None:
            return Reject(404, "no such extension")
        if target == dial.extension:
            return Reject(403, "not one's own call")
        row = next(
            (r for r in ctx.rows("pbx_barge") if str(r.get("extension")) == dial.extension), None
        )
        targets = _list(row.get("targets")) if row is not None else set()
        if (
            row is None
            or mode not in _list(row.get("modes"))
            or not ("*" in targets or target in targets)
        ):
            return Reject(403, f"no permission to {mode}")
        talking = [t for t in ctx.talking() if t.extension == target]
        if not talking:
            return Reject(480, "that extension is in no call")
        return Barge(talking[0].call_id, mode, target)


FEATURE = CallBarge(
    name="barge",
    codes={
        "*222": "+ extension: listen to its call",
        "*223": "+ extension: whisper to it in its call",
        "*224": "+ extension: barge into its call (three-way)",
    },
    tables=(TABLE,),
)
