"""Who may talk to the PBX at all: the per-source security policy (sans-IO).

Theory of operation. The SIP server asks `check(source_ip, msg, now)` before it
spends anything on a message and acts on the `Verdict`: ALLOW, DROP (send nothing,
so a scanner learns nothing and a flood is not amplified) or REJECT with a status.
The engine reports digest outcomes with `auth_failed` / `auth_succeeded`. Time is
an argument; nothing here touches a socket or a clock.

Four rules, in the order they are applied (the spirit of Kamailio's pike and htable
modules and of fail2ban):

1. Trusted sources (the trunk's and the administrator's addresses and networks) are
   allowed without further checks: they are never banned or rate limited.
2. A banned source is dropped until its ban ends. `ban_failures` failed
   authentications within `ban_window` seconds ban it for `ban_seconds`. A success
   does not wipe the count (otherwise an attacker holding one valid account could
   brute-force the others between two good REGISTERs); a phone with a wrong password
   fails once per refresh and never gets near the threshold.
3. A request whose User-Agent names a known scanner (friendly-scanner, sipvicious …,
   case-insensitive substring) is dropped and counts as a failed authentication, so
   a scanner that keeps going is banned and then costs even less.
4. Each source has a token bucket of `burst` requests refilled at `rate` per second.
   The first request over it is rejected with 503 and Retry-After (RFC 3261 §21.5.4)
   so a well-behaved client backs off; the rest are dropped (answering a flood would
   amplify it) until the bucket is half full again.

Memory is bounded: per-source state lives in LRU tables of at most `max_sources`
entries each, bans in a table of at most `max_bans` (when full, the ban closest to
its end gives way). A flood from spoofed addresses only recycles those tables. An
evicted bucket was as good as full, an evicted failure list costs an attacker a
fresh start at most `max_sources` addresses later.

Every verdict other than ALLOW carries a `reason` naming the source, for the caller
to log. `quiet` is set on repeats (a banned source's next packets, the drops after a
503) so a flood does not wash the log ring buffer out: log those at debug level.

Caveat for callers: over UDP a source address can be forged. Count as failures only
answers to our own fresh nonce (which the source had to receive), or anyone could
get an office's address banned.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from pbx_core.sip.message import Request, Response

# Substrings of User-Agents that only attack tools send. Legitimate test tools an
# administrator may point at the PBX (sipsak, SIPp) are deliberately absent.
SCANNER_AGENTS: tuple[str, ...] = (
    "friendly-scanner",  # SIPVicious svmap/svwar default
    "sipvicious",
    "sipcli",
    "vaxsipuseragent",
    "pplsip",
    "sip-scan",
    "sipscan",
    "sundayddr",
    "iwar",
    "sivus",
    "smap",
    "sippts",
    "nmap nse",
)


class Action(Enum):
    ALLOW = "allow"
    DROP = "drop"  # send nothing
    REJECT = "reject"  # answer with `status` (requests other than ACK only)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str = ""
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    quiet: bool = False  # a repeat of something already logged: log at debug level


ALLOW = Verdict(Action.ALLOW)


class SettingsError(ValueError):
    """A security setting has a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    ban_failures: int = 10
    ban_window: float = 60.0
    ban_seconds: float = 900.0
    rate: float = 50.0
    burst: float = 100.0
    trusted: tuple[str, ...] = ()
    scanner_agents: tuple[str, ...] = SCANNER_AGENTS
    max_sources: int = 10_000
    max_bans: int = 4_096

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> SecuritySettings:
        """Read `pbx_settings` values (sec_*); a missing or empty one is the default.

        sec_ban_failures, sec_ban_window, sec_ban_seconds, sec_rate, sec_burst and
        sec_max_sources are integers (sec_ban_failures 0 turns banning off, sec_rate 0
        turns rate limiting off); sec_trusted is a comma-separated list of addresses
        and CIDR networks; sec_scanner_agents adds comma-separated User-Agent
        substrings to the built-in list.
        """
        d = cls()

        def num(name: str, default: float, minimum: int) -> float:
            value = settings.get(name)
            if value is None or value == "":
                return default
            try:
                n = int(str(value).strip())
            except ValueError:
                raise SettingsError(f"setting {name!r} must be an integer, not {value!r}") from None
            if n < minimum:
                raise SettingsError(f"setting {name!r} must be at least {minimum}, not {n}")
            return n

        def words(name: str) -> tuple[str, ...]:
            value = settings.get(name)
            if value is None:
                return ()
            return tuple(w.strip() for w in str(value).split(",") if w.strip())

        extra = tuple(w.lower() for w in words("sec_scanner_agents"))
        return cls(
            ban_failures=int(num("sec_ban_failures", d.ban_failures, 0)),
            ban_window=num("sec_ban_window", d.ban_window, 1),
            ban_seconds=num("sec_ban_seconds", d.ban_seconds, 1),
            rate=num("sec_rate", d.rate, 0),
            burst=num("sec_burst", d.burst, 1),
            trusted=words("sec_trusted"),
            scanner_agents=SCANNER_AGENTS + extra,
            max_sources=int(num("sec_max_sources", d.max_sources, 16)),
            max_bans=d.max_bans,
        )


class _Trust:
    """Exact addresses in a set, networks checked in order; answers cached."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            text = entry.strip().strip("[]")
            try:
                if "/" in text:
                    net = ipaddress.ip_network(text, strict=False)
                    if net.num_addresses == 1:
                        self.exact.add(str(net.network_address))
                    else:
                        self.nets.append(net)
                else:
                    self.exact.add(str(ipaddress.ip_address(text)))
            except ValueError:
                raise SettingsError(f"not an IP address or network: {entry!r}") from None
        self._cache: dict[str, bool] = {}

    def __contains__(self, ip: str) -> bool:
        if ip in self.exact:
            return True
        if not self.nets:
            return False
        hit = self._cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip.strip("[]"))
            except ValueError:
                return False
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            hit = any(addr in net for net in self.nets)
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[ip] = hit
        return hit


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    rejected: bool = False  # the 503 of this episode was sent


@dataclass(slots=True)
class _Ban:
    until: float
    dropped: int = 0


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)


class SecurityPolicy:
    def __init__(
        self,
        settings: SecuritySettings | Mapping[str, object] | None = None,
        trusted: Iterable[str] = (),
    ) -> None:
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        self._bans: dict[str, _Ban] = {}
        self.configure(settings, trusted)

    def configure(
        self,
        settings: SecuritySettings | Mapping[str, object] | None = None,
        trusted: Iterable[str] = (),
    ) -> None:
        """Apply (new) settings; `trusted` adds addresses such as the trunks' hosts.
        Counts and bans survive a reconfiguration; a now-trusted source is unbanned."""
        if settings is None:
            settings = SecuritySettings()
        elif not isinstance(settings, SecuritySettings):
            settings = SecuritySettings.from_settings(settings)
        self.settings = settings
        self._trust = _Trust((*settings.trusted, *trusted))
        self._ua = re.compile(
            "|".join(re.escape(a) for a in settings.scanner_agents if a) or r"(?!)", re.IGNORECASE
        )
        for ip in [ip for ip in self._bans if ip in self._trust]:
            del self._bans[ip]

    # ------------------------------------------------------------------ queries
    def trusted(self, ip: str) -> bool:
        return ip in self._trust

    def banned(self, ip: str, now: float) -> bool:
        ban = self._bans.get(ip)
        return ban is not None and now < ban.until

    def bans(self, now: float) -> list[dict[str, object]]:
        """Active bans, for `pbx status`."""
        return [
            {"source": ip, "remaining": round(b.until - now), "dropped": b.dropped}
            for ip, b in self._bans.items()
            if now < b.until
        ]

    def unban(self, ip: str) -> bool:
        """Lift a ban (administrator's command); True if there was one."""
        self._failures.pop(ip, None)
        return self._bans.pop(ip, None) is not None

    # ------------------------------------------------------------------ the check
    def check(self, source_ip: str, msg: Request | Response, now: float) -> Verdict:
        if source_ip in self._trust:
            return ALLOW
        if self._bans:
            ban = self._bans.get(source_ip)
            if ban is not None:
                if now < ban.until:
                    ban.dropped += 1
                    return Verdict(
                        Action.DROP,
                        f"{source_ip}: banned for {ban.until - now:.0f} s more",
                        quiet=True,
                    )
                del self._bans[source_ip]
        st = self.settings
        req = msg if isinstance(msg, Request) else None
        if req is not None:
            agent = req.headers.get("user-agent")
            if agent and self._ua.search(agent):
                why = self._failure(source_ip, now)
                return Verdict(Action.DROP, f"{source_ip}: scanner User-Agent {agent[:60]!r}{why}")
        if st.rate <= 0:
            return ALLOW
        b = self._buckets.get(source_ip)
        if b is None:
            self._buckets[source_ip] = _Bucket(st.burst - 1, now)
            self._trim_buckets(now)
            return ALLOW
        self._buckets.move_to_end(source_ip)
        if now > b.stamp:
            b.tokens = min(st.burst, b.tokens + (now - b.stamp) * st.rate)
            b.stamp = now
            if b.rejected and b.tokens * 2 >= st.burst:
                b.rejected = False  # half refilled: the episode is over
        if b.tokens >= 1:
            b.tokens -= 1
            return ALLOW
        if b.rejected or req is None or req.method == "ACK":
            return Verdict(Action.DROP, f"{source_ip}: over {st.rate:g} requests/s", quiet=True)
        b.rejected = True
        retry = max(1, round(st.burst / st.rate))
        return Verdict(
            Action.REJECT,
            f"{source_ip}: over {st.rate:g} requests/s (burst {st.burst:g})",
            503,
            (("Retry-After", str(retry)),),
        )

    # ------------------------------------------------------------------ auth outcomes
    def auth_failed(self, source_ip: str, now: float) -> Verdict:
        """A failed digest authentication from `source_ip`. Returns DROP with the
        reason when this failure bans the source (log it), else ALLOW."""
        if source_ip in self._trust:
            return ALLOW
        why = self._failure(source_ip, now)
        return Verdict(Action.DROP, f"{source_ip}: failed authentication{why}") if why else ALLOW

    def auth_succeeded(self, source_ip: str, now: float) -> None:
        """A good authentication. It keeps the source's rate state fresh but does not
        forgive failures (see the module docstring)."""
        b = self._buckets.get(source_ip)
        if b is not None:
            self._buckets.move_to_end(source_ip)
        f = self._failures.get(source_ip)
        if f is not None:
            self._expire_failures(f, now)
            if not f.times:
                del self._failures[source_ip]

    # ------------------------------------------------------------------ internals
    def _expire_failures(self, f: _Failures, now: float) -> None:
        horizon = now - self.settings.ban_window
        while f.times and f.times[0] <= horizon:
            f.times.popleft()

    def _failure(self, ip: str, now: float) -> str:
        """Count a failure; returns ", banned for N s" when it bans, else ""."""
        st = self.settings
        if st.ban_failures <= 0:
            return ""
        f = self._failures.get(ip)
        if f is None:
            f = self._failures[ip] = _Failures()
            f.times.append(now)
            self._trim_failures(now)
        else:
            self._failures.move_to_end(ip)
            self._expire_failures(f, now)
            f.times.append(now)
        if len(f.times) < st.ban_failures:
            return ""
        del self._failures[ip]
        if len(self._bans) >= st.max_bans:
            self._bans = {k: v for k, v in self._bans.items() if now < v.until}
            if len(self._bans) >= st.max_bans:
                del self._bans[min(self._bans, key=lambda k: self._bans[k].until)]
        self._bans[ip] = _Ban(now + st.ban_seconds)
        return (
            f", banned for {st.ban_seconds:g} s after {st.ban_failures} failures"
            f" in {st.ban_window:g} s"
        )

    # Each insert drops up to two stale entries from the cold end, so the tables
    # follow the sources that are active now, and never exceed max_sources.
    def _trim_buckets(self, now: float) -> None:
        st, table = self.settings, self._buckets
        for _ in range(2):
            if not table:
                break
            ip, b = next(iter(table.items()))
            if b.tokens + (now - b.stamp) * st.rate < st.burst:
                break
            del table[ip]  # refilled: the same as no entry
        while len(table) > st.max_sources:
            table.popitem(last=False)

    def _trim_failures(self, now: float) -> None:
        st, table = self.settings, self._failures
        for _ in range(2):
            if not table:
                break
            ip, f = next(iter(table.items()))
            if f.times and f.times[-1] > now - st.ban_window:
                break
            del table[ip]  # every failure in it has expired
        while len(table) > st.max_sources:
            table.popitem(last=False)

    def sizes(self) -> tuple[int, int, int]:
        """(buckets, failure lists, bans) held: for tests and status."""
        return len(self._buckets), len(self._failures), len(self._bans)
