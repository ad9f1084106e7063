"""A feature for the platform's tests (not in the registry): it declares a table and
two settings of its own, and keeps state in its namespace, as a real feature would,
importing only features/api.py.

`registered` is the fixture body that joins its declarations to the core's for one
test and puts the registry's back afterwards (tests/conftest.py registers those)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pbx_core.features.api import (
    BOOL,
    Context,
    Feature,
    Setting,
    integer,
    pbx_table,
    text,
)
from pbx_core.features.registry import FEATURES
from pbx_core.store.feature_schema import register_features

PROBE_RULE = pbx_table(
    "pbx_probe_rule",
    "Rules of the probe feature (tests only).",
    integer("id", "row id", auto=True),
    text("name", "unique name", need=True),
    integer("hour", "hour of the day it applies", default=9, lo=0, hi=23),
    integer("enabled", "0 = ignored", default=1, **BOOL),
    text("action", "what it does", default="ring", choices=("ring", "busy")),
    text("note", "free text", null=True),
    key=("name",),
    max_rows=5,
)


class Probe(Feature):
    def status(self, ctx: Context) -> dict[str, Any]:
        return {"rules": [r["name"] for r in ctx.rows("pbx_probe_rule") if r["enabled"]]}


PROBE = Probe(
    name="probe",
    tables=(PROBE_RULE,),
    settings=(
        Setting("probe_mode", str, "off", "how the probe runs", ("off", "on", "loud")),
        Setting("probe_limit", int, 3, "how many probes at once", lo=1, hi=10),
    ),
)


def registered() -> Iterator[Feature]:
    register_features((*FEATURES, PROBE))
    try:
        yield PROBE
    finally:
        register_features(FEATURES)
