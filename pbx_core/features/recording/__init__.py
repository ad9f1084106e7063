"""Call recording on demand `*1`: during an answered call an extension presses `*1`
to record both parties into one file on /data, and `*1` again to stop; the hang-up
finishes the file and the call's CDR names it. The oldest recordings are removed to
keep them within `record_quota_minutes`. The extension stays in the call: the core
does the recording (`Record`, pbx/call_record.py). See README.md."""

from __future__ import annotations

from pbx_core.features.api import CallInfo, Context, Decision, Feature, Record, Setting

CODE = "*1"
# G.711 µ-law: 480 000 bytes a minute. /data is 64 MiB (board/wafer/genimage.cfg):
# the largest quota (60 min, 28.8 MB) leaves more than half of it to the rest.
DEFAULT_QUOTA = 30  # minutes: 14.4 MB


class Recording(Feature):
    def in_call(self, ctx: Context, call: CallInfo, extension: str, code: str) -> Decision | None:
        if code != CODE:
            return None
        quota = int(ctx.setting("record_quota_minutes") or DEFAULT_QUOTA)
        return Record(quota, beep_both=ctx.setting("record_beep") != "presser")


FEATURE = Recording(
    name="recording",
    call_codes={CODE: "record the call (both parties, one file on /data); again: stop"},
    settings=(
        Setting(
            "record_quota_minutes",
            int,
            DEFAULT_QUOTA,
            "minutes of call recordings kept on /data (G.711: 480 000 bytes a minute); "
            "the oldest are removed to make room",
            lo=1,
            hi=30,
        ),
        Setting(
            "record_beep",
            str,
            "both",
            "who hears the beeps when a call recording starts and stops: both parties "
            "(the other is told it is recorded) or only the extension that pressed *1",
            choices=("both", "presser"),
        ),
    ),
)
