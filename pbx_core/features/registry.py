"""The features this build has, in the order the engine asks them: a literal tuple,
so the freezer sees every import (no entry points, no string imports). `app.py` hands
it to the engine; `app.py` and `cli.py` (`pbx db`, the console) join the features' own
tables and settings to the store's (store/feature_schema.py); nothing in the core
imports this module.

Order matters where two features answer the same hook: do-not-disturb refuses a call
before call waiting looks at it, and both before call forwarding's forward-all.
Call blocking comes first (a blocked caller is refused before anything else, and
gets no forward on busy); the last-caller memory (*69) comes last, so its
`before_ring` is asked only for calls that really ring the extension. Voicemail
comes after call forwarding: its `unanswered` answers (the PBX takes a message) only
when no forward on busy / no answer took the call.
"""

from __future__ import annotations

from pbx_core.features import (
    barge,
    blocking,
    broadcast,
    callwaiting,
    campon,
    conference,
    directory,
    disa,
    dnd,
    echo,
    followme,
    forward,
    hotline,
    intercom,
    ivr,
    paging,
    park,
    pickup,
    queue,
    recording,
    ringgroup,
    speeddial,
    sysrec,
    timecond,
    transfer,
    voicemail,
)
from pbx_core.features.api import Feature

FEATURES: tuple[Feature, ...] = (
    blocking.FEATURE,
    campon.FEATURE,  # its unanswered only notes the last busy number (or offers, if set)
    echo.FEATURE,
    dnd.FEATURE,
    callwaiting.FEATURE,
    forward.FEATURE,
    followme.FEATURE,
    ringgroup.FEATURE,
    disa.FEATURE,
    transfer.FEATURE,
    recording.FEATURE,
    pickup.FEATURE,
    timecond.FEATURE,
    ivr.FEATURE,
    intercom.FEATURE,
    paging.FEATURE,
    park.FEATURE,
    barge.FEATURE,
    speeddial.FEATURE,
    hotline.FEATURE,
    sysrec.FEATURE,
    directory.FEATURE,
    voicemail.FEATURE,  # its unanswered after forward's: a forward on busy wins
    broadcast.FEATURE,
    conference.FEATURE,
    queue.FEATURE,
    blocking.LAST_CALLER,  # last: it remembers calls no feature refused or forwarded
)
