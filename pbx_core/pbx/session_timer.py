"""RFC 4028 session timers, sans-IO: header negotiation and one leg's timer.

Theory of operation. A session timer keeps a dialog alive by periodic refreshes (a
re-INVITE or an UPDATE); when none arrives in time the session is dead and the side
that notices sends a BYE. The B2BUA runs one timer per leg, negotiated on that leg
alone:

* As UAS (A's INVITE, any re-INVITE/UPDATE a phone sends us) `negotiate_uas` reads
  Session-Expires / Min-SE / Supported from the request and decides: 422 when the
  interval is below our Min-SE (§9), else the interval and the refresher, and the
  headers of our 2xx (Require: timer when the refresher is the UAC).
* As UAC (our INVITE to B, the refreshes we send) `uac_headers` gives the headers to
  send and `negotiate_uac` reads the 2xx (§7.2): its Session-Expires says the
  interval and who refreshes; a 2xx without it means no timer on that leg. A 422
  gives the interval to retry with (`retry_interval`, §7.3).
* `LegTimer` is one leg's clock: the refresher refreshes once half the interval has
  passed (§10), the other side sends BYE at expiry minus min(32, interval/3) when no
  refresh came. The caller passes `now` and reacts to `due()`.

"uac"/"uas" always name the roles in the transaction that carried the header, so the
same leg's refresher reads "uac" or "uas" depending on who sent the last refresh;
`we_refresh` turns that into what matters to us.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pbx_core.sip.message import Headers

__all__ = [
    "LONGEST_INTERVAL",
    "RFC_MIN_SE",
    "Accept",
    "Action",
    "LegTimer",
    "Reject",
    "SessionExpires",
    "SessionTimerError",
    "TimerConfig",
    "negotiate_uac",
    "negotiate_uas",
    "parse_min_se",
    "parse_session_expires",
    "retry_interval",
    "supports_timer",
    "uac_headers",
]

RFC_MIN_SE = 90  # §4: the default and the smallest Min-SE on a real network
_MAX_INTERVAL = 2**31 - 1  # delta-seconds is at most 2^31-1 in practice (RFC 3261 §25)
# The longest session interval the PBX keeps a timer for: a peer's Session-Expires or
# Min-SE above it is read as this (a timer is sized by the network; a dialog nobody
# refreshes for a day is dead), so no value from a message sets a timer years ahead.
LONGEST_INTERVAL = 86_400


class SessionTimerError(ValueError):
    """A malformed Session-Expires or Min-SE: the request gets `status` (400)."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The PBX's wishes: `session_expires` 0 turns session timers off."""

    session_expires: int = 1800
    min_se: int = RFC_MIN_SE

    def __post_init__(self) -> None:
        if self.min_se < 1:
            raise ValueError("session_min_se must be at least 1 second")
        if self.session_expires and self.session_expires < self.min_se:
            raise ValueError(
                f"session_expires ({self.session_expires}) is below session_min_se ({self.min_se})"
            )

    @property
    def enabled(self) -> bool:
        return self.session_expires > 0


@dataclass(frozen=True, slots=True)
class SessionExpires:
    """Session-Expires = delta-seconds *(SEMI se-params); se-params = refresher-param
    / generic-param; refresher-param = "refresher" EQUAL ("uas" / "uac")  (§4)."""

    interval: int
    refresher: str | None = None  # "uac", "uas" or None (not said)

    def __str__(self) -> str:
        return f"{self.interval}" + (f";refresher={self.refresher}" if self.refresher else "")


def _delta(text: str, what: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        raise SessionTimerError(f"{what} is not a number of seconds: {text[:40]!r}")
    value = int(text)
    if value < 1 or value > _MAX_INTERVAL:
        raise SessionTimerError(f"{what} out of range: {value}")
    return value


def parse_session_expires(value: str) -> SessionExpires:
    """Parse a Session-Expires value; SessionTimerError (400) when malformed."""
    head, *params = value.split(";")
    interval = _delta(head, "Session-Expires")
    refresher = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "refresher":
            refresher = val.strip().lower()
            if refresher not in ("uac", "uas"):
                raise SessionTimerError(f"refresher must be uac or uas, not {val.strip()!r}")
    return SessionExpires(interval, refresher)


def parse_min_se(value: str) -> int:
    """Min-SE = delta-seconds *(SEMI generic-param)  (§5)."""
    return _delta(value.split(";", 1)[0], "Min-SE")


def _tokens(headers: Headers, name: str) -> set[str]:
    return {t.strip().lower() for v in headers.getall(name) for t in v.split(",") if t.strip()}


def supports_timer(headers: Headers) -> bool:
    """The message says it knows the extension (Supported or Require: timer)."""
    return "timer" in _tokens(headers, "supported") | _tokens(headers, "require")


def _session_expires(headers: Headers) -> SessionExpires | None:
    value = headers.get("session-expires")
    if value is None:
        return None
    se = parse_session_expires(value)
    if se.interval > LONGEST_INTERVAL:
        return SessionExpires(LONGEST_INTERVAL, se.refresher)
    return se


def _min_se(headers: Headers) -> int | None:
    value = headers.get("min-se")
    return None if value is None else min(parse_min_se(value), LONGEST_INTERVAL)


# ------------------------------------------------------------------ as UAS


@dataclass(frozen=True, slots=True)
class Reject:
    """422 Session Interval Too Small, with our Min-SE (§9)."""

    min_se: int
    status: int = 422

    def headers(self) -> list[tuple[str, str]]:
        return [("Min-SE", str(self.min_se))]


@dataclass(frozen=True, slots=True)
class Accept:
    """The session timer of the dialog once our 2xx is sent: `interval` None means
    none. `refresher` is in the request's terms (we are its UAS)."""

    interval: int | None
    refresher: str = "uas"

    @property
    def we_refresh(self) -> bool:
        return self.interval is not None and self.refresher == "uas"

    def headers(self) -> list[tuple[str, str]]:
        """Headers of our 2xx: Session-Expires, and Require: timer when the UAC is
        to refresh (§9; it must know the extension then)."""
        if self.interval is None:
            return []
        out = [("Session-Expires", str(SessionExpires(self.interval, self.refresher)))]
        if self.refresher == "uac":
            out.append(("Require", "timer"))
        return out


def negotiate_uas(headers: Headers, config: TimerConfig) -> Accept | Reject:
    """Our answer to an INVITE or UPDATE (initial or refresh), from its headers.
    SessionTimerError (400) for malformed Session-Expires or Min-SE."""
    se = _session_expires(headers)
    their_min = _min_se(headers)
    if not config.enabled:
        return Accept(None)
    uac_knows = supports_timer(headers)
    if se is None:
        # §9: the UAS may still ask for a timer; a UAC without the extension
        # cannot refresh, so we do.
        return Accept(max(config.session_expires, their_min or 0), "uac" if uac_knows else "uas")
    if se.interval < config.min_se:
        return Reject(max(config.min_se, their_min or 0))
    # We may shorten the interval, never below either side's Min-SE (§9).
    floor = max(config.min_se, their_min or 0)
    interval = min(se.interval, max(config.session_expires, floor))
    refresher = se.refresher or ("uac" if uac_knows else "uas")
    if refresher == "uac" and not uac_knows:
        refresher = "uas"  # §9: a UAC without the extension cannot be the refresher
    return Accept(interval, refresher)


# ------------------------------------------------------------------ as UAC


def uac_headers(
    config: TimerConfig, interval: int | None = None, we_refresh: bool | None = None
) -> list[tuple[str, str]]:
    """Headers of an INVITE or UPDATE we send: Supported: timer, and with timers on
    Session-Expires (`interval`, default ours) and Min-SE. `we_refresh` True/False
    asks for refresher=uac/uas; None leaves the choice to the UAS."""
    out = [("Supported", "timer")]
    if not config.enabled:
        return out
    refresher = None if we_refresh is None else ("uac" if we_refresh else "uas")
    value = SessionExpires(max(interval or config.session_expires, config.min_se), refresher)
    out.append(("Session-Expires", str(value)))
    out.append(("Min-SE", str(config.min_se)))
    return out


def negotiate_uac(headers: Headers, config: TimerConfig) -> tuple[int, bool] | None:
    """The session timer a 2xx to our INVITE or UPDATE sets (§7.2): (interval,
    whether we refresh), or None when it has no Session-Expires (no timer on that
    leg). A 2xx that names no refresher leaves it to us, the UAC (§7.2)."""
    se = _session_expires(headers)
    if not config.enabled or se is None:
        return None
    return se.interval, se.refresher in (None, "uac")


def retry_interval(headers: Headers, asked: int) -> int | None:
    """After a 422 (§7.3): the interval to ask for next, or None when the 422 gives
    no larger Min-SE (retrying would loop)."""
    their_min = _min_se(headers)
    if their_min is None or their_min <= asked:
        return None
    return their_min


# ------------------------------------------------------------------ one leg's clock


class Action(enum.Enum):
    REFRESH = "refresh"  # we are the refresher: send a re-INVITE or UPDATE now
    EXPIRE = "expire"  # no refresh came: send BYE now


@dataclass(slots=True)
class LegTimer:
    """One leg's session timer, restarted by every successful refresh."""

    interval: int
    we_refresh: bool
    refreshed_at: float

    def due(self) -> tuple[float, Action]:
        """When the next thing happens and what it is (§10)."""
        if self.we_refresh:
            return self.refreshed_at + self.interval / 2, Action.REFRESH
        return self.expires_at(), Action.EXPIRE

    def expires_at(self) -> float:
        """Where the non-refresher gives up: expiry minus min(32, interval/3) (§10)."""
        return self.refreshed_at + self.interval - min(32.0, self.interval / 3)

    @classmethod
    def start(cls, now: float, negotiated: Accept | tuple[int, bool] | None) -> LegTimer | None:
        """The leg's timer after a successful INVITE or refresh, from what was
        negotiated (as UAS: an Accept; as UAC: negotiate_uac's answer); None when the
        leg has no timer now."""
        if isinstance(negotiated, Accept):
            if negotiated.interval is None:
                return None
            return cls(negotiated.interval, negotiated.we_refresh, now)
        if negotiated is None:
            return None
        return cls(negotiated[0], negotiated[1], now)
