"""Message waiting indication (RFC 3842): an unsolicited `message-summary` NOTIFY to
each registered contact of an extension, as Asterisk sends phones (which show the
lamp from it without subscribing). Out of dialog: a fresh Call-ID and From tag per
NOTIFY, fire and forget (the client transaction retransmits and times out on its
own; the answer is only logged), at most MAX_MWI_CONTACTS per extension.

SUBSCRIBE for message-summary is not served yet (the engine answers 405).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable

from pbx_core.pbx.registrar import Binding
from pbx_core.pbx.sipserver import SipServer
from pbx_core.sip.message import Headers, Request, Response

log = logging.getLogger("pbx.mwi")

MAX_MWI_CONTACTS = 10  # NOTIFYs per change (the registrar bounds contacts too)
MAX_COUNT = 99_999  # a count in the body (a box holds at most vm_max_messages)


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
        h.add("Event", "message-summary")
        h.add("Subscription-State", "active")
        h.add("Content-Type", "application/simple-message-summary")
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
