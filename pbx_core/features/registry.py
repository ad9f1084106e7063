"""The features this build has, in the order the engine asks them: a literal tuple,
so the freezer sees every import (no entry points, no string imports). `app.py` hands
it to the engine; `app.py` and `cli.py` (`pbx db`, the console) join the features' own
tables and settings to the store's (store/feature_schema.py); nothing in the core
imports this module.

Order matters where two features answer the same hook: do-not-disturb refuses a call
before call waiting looks at it, and both before call forwarding's forward-all.
"""

from __future__ import annotations

from pbx_core.features import callwaiting, dnd, echo, forward, hotline, ringgroup, speeddial
from pbx_core.features.api import Feature

FEATURES: tuple[Feature, ...] = (
    echo.FEATURE,
    dnd.FEATURE,
    callwaiting.FEATURE,
    forward.FEATURE,
    ringgroup.FEATURE,
    speeddial.FEATURE,
    hotline.FEATURE,
)
