"""Mix rooms for applications: the callers of one feature's room hear each other
(`Session.join_room`; the conference feature's rooms, features/conference).

Theory of operation. A room is a `MixBridge` (media/bridge.py) with `level` on
(each member capped and faded in and out), named by the feature and the room's
name, made at the first join and closed when the last member leaves (the feature
keeps no bridge: it keeps its sessions). Every member hears everyone but itself
(the bridge's mix-minus), µ-law and A-law members alike (each gets the mix in its
own codec). A join plays the rising beep to the room, a leave the falling one
(`tone`); with `music`, a member alone hears the PBX's music on hold, stopped when
a second one joins and started again for the one left. A member's leg that closes
(the call ended) has left the bridge already; `leave` then only keeps the room's
books. Bounds: a room has at most `max_members` (2..MAX_ROOM_MEMBERS), the PBX at
most MAX_ROOMS rooms at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pbx_core.media.bridge import MixBridge
from pbx_core.media.errors import MediaError

if TYPE_CHECKING:
    from pbx_core.media.audio import Audio
    from pbx_core.media.leg import MediaLeg

log = logging.getLogger("pbx.features")

MAX_ROOM_MEMBERS = 64  # members of one room at most (a MixBridge's own bound)
MAX_ROOMS = 64  # rooms open at once
ROOM_NAME = 64  # characters of a room's name at most


@dataclass
class Room:
    bridge: MixBridge
    music: Audio | None
    tone: bool
    legs: list[MediaLeg] = field(default_factory=list)


class Rooms:
    """Every application's mix rooms (one per host)."""

    def __init__(self) -> None:
        self._rooms: dict[tuple[str, str], Room] = {}
        self._where: dict[MediaLeg, tuple[str, str]] = {}

    def join(
        self,
        feature: str,
        name: str,
        leg: MediaLeg,
        *,
        max_members: int,
        muted: bool = False,
        music: Audio | None = None,
        tone: bool = True,
    ) -> int:
        """Put `leg` in room (feature, name): 200, 503 full (or too many rooms), 488
        a codec the bridge cannot mix, 400 a bad name or size, 491 already in one."""
        if not name or len(name) > ROOM_NAME or not 2 <= max_members <= MAX_ROOM_MEMBERS:
            return 400
        if leg in self._where:
            return 491
        key = (feature, name)
        room = self._rooms.get(key)
        if room is None:
            if len(self._rooms) >= MAX_ROOMS:
                return 503
            bridge = MixBridge(leg.engine, max_members=max_members, level=True)
            room = self._rooms[key] = Room(bridge, music, tone)
        if len(room.legs) >= max_members:
            return 503
        try:
            room.bridge.add(leg, muted=muted)
        except MediaError as exc:
            log.info("room %s/%s: cannot join: %s", feature, name, exc.reason)
            if not room.legs:
                self._close(key)
            return exc.status if exc.status in (488, 503) else 500
        room.legs.append(leg)
        self._where[leg] = key
        if room.tone:
            room.bridge.beep()
        self._music(room)
        return 200

    def leave(self, leg: MediaLeg) -> None:
        """`leg` leaves its room (nothing when in none); the last one closes it."""
        key = self._where.pop(leg, None)
        room = self._rooms.get(key) if key is not None else None
        if key is None or room is None:
            return
        room.bridge.remove(leg)
        if leg in room.legs:
            room.legs.remove(leg)
        if not room.legs:
            self._close(key)
            return
        if room.tone:
            room.bridge.beep(leave=True)
        self._music(room)

    def mute(self, leg: MediaLeg, on: bool) -> bool:
        """Mute (or unmute) `leg` in its room; False when in none."""
        key = self._where.get(leg)
        room = self._rooms.get(key) if key is not None else None
        if room is None or leg not in room.bridge:
            return False
        room.bridge.mute(leg, on)
        return True

    def members(self, feature: str, name: str) -> int:
        room = self._rooms.get((feature, name))
        return len(room.legs) if room is not None else 0

    def bridge(self, feature: str, name: str) -> MixBridge | None:
        """The room's bridge (for tests and `pbx status`)."""
        room = self._rooms.get((feature, name))
        return room.bridge if room is not None else None

    def _music(self, room: Room) -> None:
        """Music for a member alone; none once there are two."""
        if room.music is None:
            return
        live = [leg for leg in room.legs if leg in room.bridge]
        for leg in live:
            room.bridge.stop_play(to=leg)
        if len(live) == 1:
            try:
                room.bridge.play(room.music, to=live[0], loop=True)
            except MediaError as exc:
                log.info("room music: %s", exc.reason)

    def _close(self, key: tuple[str, str]) -> None:
        room = self._rooms.pop(key, None)
        if room is None:
            return
        for leg in room.legs:
            self._where.pop(leg, None)
        room.bridge.close()

    def close(self) -> None:
        for key in list(self._rooms):
            self._close(key)

    def __len__(self) -> int:
        return len(self._rooms)
