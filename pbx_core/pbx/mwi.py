"""Message waiting indication (RFC 3842): an unsolicited `message-summary` NOTIFY to
each registered contact of an extension, as Asterisk sends phones (which show the
lamp from it without subscribing). Out of dialog: a fresh Call-ID and From tag per
NOTIFY, fire and forget (the client transaction retransmits and times out on its
own; the answer is only logged), at most MAX_MWI_CONTACTS per extension.

A phone may also SUBSCRIBE (RFC 6665) to `message-summary` (subscriptions.py): the
`MessageSummary` package asks the features (the `message_summary` hook: voicemail)
whether the subscriber may watch the mailbox and what its counts are. A contact that
holds such a subscription to its own extension gets no unsolicited NOTIFY (as
Asterisk sends unsolicited MWI only to contacts that do not subscribe): the engine
leaves it out of `notify`'s bindings.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable

from pbx_core.features.api import Reject
from pbx_core.pbx.registrar import Binding
from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip.errors import SipError
from pbx_core.sip.message import Headers, Request, Response

log = logging.getLogger("pbx.mwi")

MAX_MWI_CONTACTS = 10  # NOTIFYs per change (the registrar bounds contacts too)
MAX_COUNT = 99_999  # a count in the body (a box holds at most vm_max_messages)
EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"
DEFAULT_EXPIRES = 3600  # RFC 3842 §4: when the SUBSCRIBE has no Expires


def summary(new: int, old: int, account: str) -> bytes:
    """The `application/simple-message-summary` body (RFC 3842 §5)."""
    new = min(max(0, int(new)), MAX_COUNT)
    old = min(max(0, int(old)), MAX_COUNT)
    lines = (
        f"Messages-Waiting: {'yes' if new else 'no'}",
        f"Message-Account: {account}",
        f"Voice-Message: {new}/{old} (0/0)",
    )
    return ("\r\n".join(lines) + "\r\n").encode()


def notify(
    stack: SipServer,
    bindings: Iterable[Binding],
    extension: str,
    domain: str,
    new: int,
    old: int,
    on_response: Callable[[Response | None], None] | None = None,
) -> int:
    """Send the summary to each binding (at most MAX_MWI_CONTACTS); how many went."""
    sent = 0
    body = summary(new, old, f"sip:{extension}@{domain}")
    for binding in list(bindings)[:MAX_MWI_CONTACTS]:
        dest = binding.dest
        h = Headers()
        h.add("Via", str(stack.via_for(dest)))
        h.add("Max-Forwards", "70")
        h.add("From", f"<sip:{extension}@{domain}>;tag={secrets.token_hex(6)}")
        h.add("To", f"<sip:{extension}@{domain}>")
        h.add("Call-ID", f"{secrets.token_hex(8)}@pbx")
        h.add("CSeq", "1 NOTIFY")
        host, port = stack.local_address(dest)
        host = f"[{host}]" if ":" in host else host
        h.add("Contact", f"<sip:{extension}@{host}:{port}>")
        h.add("Event", EVENT)
        h.add("Subscription-State", "active")
        h.add("Content-Type", CONTENT_TYPE)
        h.add("User-Agent", stack.user_agent)
        req = Request("NOTIFY", binding.uri, h, body)
        try:
            stack.request(req, dest, on_response or _answered)
        except Exception as exc:  # noqa: BLE001  # a lamp is never worth more than a line
            log.warning("MWI NOTIFY to %s not sent: %s", extension, exc)
            continue
        sent += 1
    return sent


def _answered(resp: Response | None) -> None:
    if resp is None or resp.status >= 300:
        log.debug("MWI NOTIFY: %s", "no answer" if resp is None else resp.status)


class MessageSummary:
    """The `message-summary` event package (RFC 3842) for subscriptions.py: the
    features say (`ask(extension, resource)`) the mailbox's counts, a Reject (403:
    not the subscriber's box) or None (no such mailbox: 404)."""

    event = EVENT
    content_type = CONTENT_TYPE
    default_expires = DEFAULT_EXPIRES

    def __init__(
        self,
        ask: Callable[[str, str], tuple[int, int] | Reject | None],
        domain: Callable[[], str],
    ) -> None:
        self.ask = ask
        self.domain = domain

    def state(self, username: str, resource: str) -> bytes:
        got = self.ask(username, resource)
        if got is None:
            raise SipError(f"no mailbox {resource[:16]}", 404)
        if isinstance(got, Reject):
            raise SipError(got.reason, got.status if 400 <= got.status < 700 else 403)
        new, old = got
        return summary(new, old, f"sip:{resource}@{self.domain()}")
