"""An INVITE to a fork sent again: with the credentials a trunk's challenge asks for
(401/407, once), or with the Min-SE a 422 names (call_timers.py, RFC 4028 §7.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pbx_core.pbx.call_state import Fork, State, tag
from pbx_core.sip.message import Request, Response

if TYPE_CHECKING:
    from pbx_core.pbx.calls import CallManager


class CallRetries:
    """Resent INVITEs, for every call of one CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager

    def resend(self, fork: Fork, headers: list[tuple[str, str]]) -> None:
        """The fork's INVITE once more (a new CSeq) with `headers` set: after a 422 or
        a trunk's challenge."""
        old = fork.invite
        new = Request("INVITE", old.uri, old.headers.copy(), old.body)
        new.headers.remove("via")
        fork.dialog.local_cseq += 1
        new.headers.set("CSeq", f"{fork.dialog.local_cseq} INVITE")
        for name, value in headers:
            new.headers.set(name, value)
        fork.invite = new
        fork.provisional = False
        self.manager._send_invite(fork)

    def with_auth(self, fork: Fork, resp: Response) -> bool:
        """A trunk challenged our INVITE: send it again with credentials (once)."""
        from pbx_core.sip.digest_client import DigestClient  # noqa: PLC0415  # trunks only

        if (
            fork.target.credentials is None
            or fork.auth_tries >= 1
            or fork.call.state is State.ENDED
        ):
            return False
        header = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
        client = DigestClient(*fork.target.credentials)
        if not client.on_challenge(resp.headers.getall(header)):
            return False
        fork.auth_tries += 1
        creds = client.authorization("INVITE", str(fork.invite.uri), tag())
        if creds is None:
            return False
        header = "Authorization" if resp.status == 401 else "Proxy-Authorization"
        self.resend(fork, [(header, creds)])
        return True
