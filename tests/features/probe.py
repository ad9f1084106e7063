"""A feature for the platform's tests (not in the registry): it declares a table and
two settings of its own, a destination type (`probe`) and destination columns in its
table, and keeps state in its namespace, as a real feature would,
importing only features/api.py.

`registered` is the fixture body that joins its declarations to the core's for one
test and puts the registry's back afterwards (tests/conftest.py registers those)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pbx_core.features.api import (
    BOOL,
    Context,
    Feature,
    Setting,
    destination,
    integer,
    pbx_table,
    text,
)
from pbx_core.features.registry import FEATURES
from pbx_core.store.feature_schema import register_features


def _window(value: object) -> str | None:
    """A probe window is HH-HH, each hour 00..23."""
    m = re.fullmatch(r"([0-9]{2})-([0-9]{2})", str(value))
    if m is None or int(m[1]) > 23 or int(m[2]) > 23:
        return "expected HH-HH, hours 00..23"
    return None


def _word(value: object) -> str | None:
    if str(value) == "boom":
        raise RuntimeError("the check itself fails")
    return None if str(value).isalpha() and str(value).islower() else "expected a lowercase word"


PROBE_RULE = pbx_table(
    "pbx_probe_rule",
    "Rules of the probe feature (tests only).",
    integer("id", "row id", auto=True),
    text("name", "unique name", need=True),
    integer("hour", "hour of the day it applies", default=9, lo=0, hi=23),
    integer("enabled", "0 = ignored", default=1, **BOOL),
    text("action", "what it does", default="ring", choices=("ring", "busy")),
    text("note", "free text", null=True),
    text("window", "hours it covers, HH-HH", null=True, check=_window),
    *destination("dest", "where it sends calls", need=False),
    key=("name",),
    max_rows=5,
)


class Probe(Feature):
    def status(self, ctx: Context) -> dict[str, Any]:
        return {"rules": [r["name"] for r in ctx.rows("pbx_probe_rule") if r["enabled"]]}


PROBE = Probe(
    name="probe",
    destination_types=("probe",),
    tables=(PROBE_RULE,),
    settings=(
        Setting("probe_mode", str, "off", "how the probe runs", ("off", "on", "loud")),
        Setting("probe_limit", int, 3, "how many probes at once", lo=1, hi=10),
        Setting("probe_word", str, "ok", "a word", check=_word),
    ),
)


def registered() -> Iterator[Feature]:
    register_features((*FEATURES, PROBE))
    try:
        yield PROBE
    finally:
        register_features(FEATURES)
