"""In-call transfers for phones that cannot REFER (FreePBX's and Asterisk's codes):
`##` blind, `*2` attended. The extension presses the code during a call, the other
party hears music on hold, the PBX asks for the number (the extension's call class
applies). Blind: the other party is sent there (a failed transfer rings the
extension back). Attended: the extension talks to the number first, then hangs up to
join the two, or presses `*` to come back. Nothing dialled: back to the call. REFER
itself (a phone's Transfer key) is the core's. See README.md."""

from __future__ import annotations

from pbx_core.features.api import Answer, CallInfo, Context, Decision, Feature, Session

MAX_NUMBER = 32  # digits of the number to transfer to


async def _number(session: Session) -> str:
    await session.play("transfer-enter")
    number = await session.collect(MAX_NUMBER, first_timeout=10.0, inter_timeout=4.0)
    return "" if session.hung_up else number


async def _blind(session: Session) -> None:
    number = await _number(session)
    if number:
        await session.transfer(number)
    # nothing dialled: back to the call


async def _attended(session: Session) -> None:
    number = await _number(session)
    if not number:
        return  # back to the call
    status = await session.consult(number)
    if status not in (200, 487) and not session.hung_up:
        await session.play("transfer-failed")  # then back with the held party


class Transfer(Feature):
    def in_call(self, ctx: Context, call: CallInfo, extension: str, code: str) -> Decision | None:
        if code == "##":
            return Answer(_blind, "blind transfer")
        if code == "*2":
            return Answer(_attended, "attended transfer")
        return None


FEATURE = Transfer(
    name="transfer",
    call_codes={
        "##": "blind transfer of the other party",
        "*2": "attended transfer: consult a number, hang up to join (`*` comes back)",
    },
)
