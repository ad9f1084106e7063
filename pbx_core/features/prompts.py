"""Small applications shared by features: confirm a change with a prompt and hang up."""

from __future__ import annotations

from pbx_core.features.api import App, Session


def confirm(*prompts: str) -> App:
    """An app that plays `prompts` (then a short pause) and hangs up: what a phone
    hears after dialling a code that changes a setting."""

    async def app(session: Session) -> None:
        await session.play(*prompts)
        await session.wait(0.5)
        session.hangup()

    return app
