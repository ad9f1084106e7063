"""The one place a menu's prompt name becomes what the caller hears (the IVR's and
nothing else's): `resolve(name, kind)`.

A prompt is the name of a system recording (`sys:NAME`: recorded with *77 or pushed
with `pbx remote sysrec-push`, features/sysrec) when one of that name exists, which
also lets an office replace a built-in prompt; else a name of the built-in prompt set
(media/prompts_build.py, spoken by espeak-ng at image build). A name that is neither
(a recording not made yet, a typo) is never a silent call: the built-in "welcome,
please enter the extension" greeting (or "invalid option") plays instead and the
daemon logs one warning per name.
"""

from __future__ import annotations

import logging
import re

from pbx_core.features.api import Session

log = logging.getLogger("pbx.features.ivr")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # never a path
# The built-in prompt set's names (tests/features/ivr keeps them within
# media/prompts_build.PROMPTS).
BUILT_IN = frozenset(
    (
        "all-busy",
        "blocked",
        "blocking-added",
        "blocking-enter",
        "blocking-full",
        "blocking-no-caller",
        "blocking-not-listed",
        "blocking-remove-enter",
        "blocking-removed",
        "call-parked-at",
        "conf-enter-pin",
        "conf-joined",
        "conf-only-person",
        "digit-0",
        "digit-1",
        "digit-2",
        "digit-3",
        "digit-4",
        "digit-5",
        "digit-6",
        "digit-7",
        "digit-8",
        "digit-9",
        "digit-pound",
        "digit-star",
        "disa-enter-pin",
        "dnd-off",
        "dnd-on",
        "echo-test",
        "enter-extension",
        "feature-off",
        "feature-on",
        "followme-confirm",
        "followme-off",
        "followme-on",
        "forward-enter",
        "forward-set",
        "goodbye",
        "intercom-off",
        "intercom-on",
        "invalid-option",
        "lastcaller-callback",
        "lastcaller-none",
        "lastcaller-number",
        "lastcaller-withheld",
        "not-available",
        "number-0",
        "number-1",
        "number-10",
        "number-11",
        "number-12",
        "number-13",
        "number-14",
        "number-15",
        "number-16",
        "number-17",
        "number-18",
        "number-19",
        "number-2",
        "number-20",
        "number-3",
        "number-30",
        "number-4",
        "number-40",
        "number-5",
        "number-50",
        "number-6",
        "number-60",
        "number-7",
        "number-70",
        "number-8",
        "number-80",
        "number-9",
        "number-90",
        "number-hundred",
        "park-nobody",
        "park-slot",
        "please-hold",
        "please-try-again",
        "speeddial-enter-location",
        "speeddial-enter-number",
        "speeddial-set",
        "timecond-auto",
        "timecond-matched",
        "timecond-unmatched",
        "transfer-enter",
        "transferring",
        "vm-at",
        "vm-busy",
        "vm-enter-mailbox",
        "vm-enter-password",
        "vm-extension",
        "vm-first-message",
        "vm-greeting-menu",
        "vm-greeting-removed",
        "vm-greeting-saved",
        "vm-leave-message",
        "vm-length",
        "vm-login-incorrect",
        "vm-mailbox-full",
        "vm-main-menu",
        "vm-message-deleted",
        "vm-message-from",
        "vm-message-menu",
        "vm-message-saved",
        "vm-new-message",
        "vm-new-messages",
        "vm-next-message",
        "vm-no-messages",
        "vm-no-more-messages",
        "vm-old-messages",
        "vm-received-on",
        "vm-record-greeting",
        "vm-seconds",
        "vm-unavailable",
        "vm-unknown-caller",
        "vm-you-have",
        "welcome",
        "you-are-calling-from",
    )
)
FALLBACK = {
    "greeting": ("welcome", "enter-extension"),
    "invalid": ("invalid-option",),
}
MAX_WARNED = 256  # names warned about (a warning once per name, bounded)
_warned: set[str] = set()


def prompt_name(value: object) -> str | None:
    """A column check (`pbx db check`): a prompt's name is never a path."""
    ok = NAME.fullmatch(str(value))
    return None if ok else "a prompt name is letters, digits, . _ - (at most 64)"


def resolve(name: str, kind: str = "greeting", session: Session | None = None) -> tuple[str, ...]:
    """What `Session.play` plays for prompt `name` (`kind`: greeting or invalid):
    the system recording of that name when `session` finds one, else the built-in."""
    if session is not None and NAME.fullmatch(name) and session.has_recording(f"sys:{name}"):
        return (f"sys:{name}",)
    if name in BUILT_IN:
        return (name,)
    if name not in _warned and len(_warned) < MAX_WARNED:
        _warned.add(name)
        log.warning("IVR prompt %r is not a built-in prompt: the built-in %s instead", name, kind)
    return FALLBACK.get(kind, FALLBACK["greeting"])
