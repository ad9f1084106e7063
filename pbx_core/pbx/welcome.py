"""A DID's welcome message (`pbx_did.welcome`, docs/architecture.md): the PBX
answers a trunk's call, plays the prompt, then routes the call to the DID's
destination as the application's `Session.goto`."""

from __future__ import annotations

import logging

from pbx_core.features.api import App, Session
from pbx_core.features.api import Destination as FeatureDestination
from pbx_core.store.model import Destination

log = logging.getLogger("pbx.routing")


def welcome(prompt: str, dest: Destination) -> App:
    """A DID's welcome (`pbx_did.welcome`): the PBX answers, plays the prompt (a
    missing one is a confirmation tone: never silence), then sends the call to the
    DID's destination (`Session.goto`); when that fails the caller hears why, and
    the PBX hangs up."""

    async def app(session: Session) -> None:
        # A system recording of that name (features/sysrec), else a built-in prompt.
        sys_prompt = f"sys:{prompt}"
        await session.play(sys_prompt if session.has_recording(sys_prompt) else prompt)
        if session.hung_up:
            return
        status = await session.goto(FeatureDestination(dest.type, dest.target))
        if status != 200 and not session.hung_up:
            log.info("DID welcome: destination %s %s gave %d", dest.type, dest.target, status)
            if dest.type != "hangup":
                await session.play("not-available")
            session.hangup()

    return app
