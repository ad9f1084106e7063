"""In-call blind transfer `##` (FreePBX's code) for phones that cannot REFER: the
extension presses `##` during a call, the other party hears music on hold, the PBX
asks for the number, and the other party is sent there (the extension's call class
applies; a failed transfer rings the extension back). Nothing dialled: back to the
call. REFER itself (a phone's Transfer key) is the core's. See README.md."""

from __future__ import annotations

from pbx_core.features.api import Answer, CallInfo, Context, Decision, Feature, Session

MAX_NUMBER = 32  # digits of the number to transfer to


async def _blind(session: Session) -> None:
    await session.play("transfer-enter")
    number = await session.collect(MAX_NUMBER, first_timeout=10.0, inter_timeout=4.0)
    if not number or session.hung_up:
        return  # back to the call
    await session.transfer(number)


class Transfer(Feature):
    def in_call(self, ctx: Context, call: CallInfo, extension: str, code: str) -> Decision | None:
        if code == "##":
            return Answer(_blind, "blind transfer")
        return None


FEATURE = Transfer(name="transfer", call_codes={"##": "blind transfer of the other party"})
