"""Echo test `*43` (FreePBX's code): the PBX answers and sends back what the caller
says, until the caller hangs up. See README.md."""

from __future__ import annotations

from pbx_core.features.api import Answer, Context, Decision, Dial, Feature, Session


async def _echo(session: Session) -> None:
    session.echo()
    await session.wait(3600.0)  # the RTP timeout or the caller's BYE ends it earlier


class Echo(Feature):
    def dial(self, ctx: Context, dial: Dial) -> Decision | None:
        if dial.arg:
            return None  # *43 takes nothing after it: *431 is not the echo test
        return Answer(_echo, "echo")


FEATURE = Echo(name="echo", codes={"*43": "echo test: hear yourself back"})
