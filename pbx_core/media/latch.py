"""Learning where a phone's RTP comes from (symmetric RTP latching), sans-IO.

The rule (Asterisk's strictrtp, rtpengine's strict-source): a leg learns its phone's
source once per offer/answer. Each SDP the leg takes opens the window (`reopen`).
While it is open, a packet of a negotiated payload type (the leg checks that) from
the expected address (where we send: the SDP's, the NATed phone's public one, or the
source latched before) latches at once; a packet from any other address starts a
run that latches after `PROBATION` packets from that address with one SSRC and
consecutive sequence numbers. Latching closes the window: until the next
offer/answer nothing else is heard, so a stranger spraying RTP at our ports can
neither take a stream over nor redirect it.

Also here: what counts as a private address (an SDP address that means nothing to
us when the phone is behind NAT).
"""

from __future__ import annotations

import ipaddress

__all__ = ["PRIVATE_NETWORKS", "PROBATION", "Learner", "private"]

PROBATION = 2  # packets in sequence that latch a source other than the expected one

Addr = tuple[str, int]


class Learner:
    """One leg's learning window (see the module docstring)."""

    __slots__ = ("candidate", "open", "run")

    def __init__(self) -> None:
        self.open = True
        self.candidate: tuple[Addr, int, int] | None = None  # address, SSRC, last seq
        self.run = 0  # packets in sequence from the candidate

    def reopen(self) -> None:
        """A new offer/answer: the phone may have moved."""
        self.open = True
        self.candidate = None
        self.run = 0

    def learn(self, addr: Addr, ssrc: int, seq: int, expected: bool) -> bool:
        """A packet with a negotiated payload type from `addr` (`expected`: where we
        send): True when the leg latches to `addr` now (the window closes)."""
        if not self.open:
            return False
        if not expected:
            cand = self.candidate
            if cand is None or cand[0] != addr or cand[1] != ssrc or (cand[2] + 1) & 0xFFFF != seq:
                # One packet proves little (a stray from an old call, a spoofer):
                # it starts a run that the next packets in sequence must continue.
                self.candidate = (addr, ssrc, seq)
                self.run = 1
                return False
            self.run += 1
            if self.run < PROBATION:
                self.candidate = (addr, ssrc, seq)
                return False
        self.open = False
        self.candidate = None
        self.run = 0
        return True


# Not Python's is_private: that counts the documentation ranges too.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def private(address: str) -> bool:
    """RFC 1918, RFC 6598, loopback, link-local or unique-local: an address that
    means nothing outside its own network. False for a host name."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in PRIVATE_NETWORKS)
