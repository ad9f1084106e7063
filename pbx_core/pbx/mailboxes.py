"""The voicemail index behind `Context.messages` / `set_message` (features/api.py):
each mailbox's messages (id -> metadata) in RAM, read from the state LMDB's
`voicemail` database at first use; changes are in force at once and handed to the
feature host's one writer thread (pbx/features.py), which commits them off the event
loop. Bounded: names, a message's metadata, messages per box."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgpack

from pbx_core.store.errors import StoreError

if TYPE_CHECKING:
    from pbx_core.store.state import StateStore

log = logging.getLogger("pbx.features")

MAX_NAME = 64  # a mailbox's or a message id's name
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_META = 4096  # msgpack bytes of a message's metadata
MAX_MESSAGES = 10_000  # per mailbox (the judge bounds vm_max_messages to this)


class Mailboxes:
    def __init__(self, state: StateStore | None, queue: Callable[[str, str, Any], None]) -> None:
        self.state = state
        self._queue = queue  # (mailbox, id, metadata or None) for the writer thread
        self._boxes: dict[str, dict[str, dict[str, Any]]] = {}

    def _box(self, mailbox: str) -> dict[str, dict[str, Any]]:
        if not NAME.fullmatch(mailbox):
            raise ValueError(f"mailbox {mailbox!r}: 1-{MAX_NAME} letters/digits/._-")
        box = self._boxes.get(mailbox)
        if box is None:
            box = {}
            if self.state is not None:
                try:
                    found = self.state.voicemails(mailbox)
                except StoreError as exc:
                    log.warning("mailbox %s unreadable: %s", mailbox, exc)
                    found = []
                box = {k: v for k, v in found[:MAX_MESSAGES] if isinstance(v, dict)}
            self._boxes[mailbox] = box
        return box

    def messages(self, mailbox: str) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        """A mailbox's messages in id order (copies: the caller cannot change them)."""
        box = self._box(mailbox)
        return tuple((k, dict(box[k])) for k in sorted(box))

    def set_message(self, mailbox: str, msg_id: str, meta: Mapping[str, Any] | None) -> None:
        """Keep (None: delete) a message's metadata: in RAM at once (as it reads back
        after a restart: msgpack's round trip), then queued for the writer."""
        box = self._box(mailbox)
        if not NAME.fullmatch(msg_id):
            raise ValueError(f"message id {msg_id!r}: 1-{MAX_NAME} letters/digits/._-")
        value: dict[str, Any] | None = None
        if meta is not None:
            try:
                packed = msgpack.packb(dict(meta), use_bin_type=True)
                value = msgpack.unpackb(packed, raw=False)
            except (TypeError, ValueError, OverflowError) as exc:
                raise ValueError(f"message {msg_id!r} is not msgpack-able: {exc}") from None
            if len(packed) > MAX_META:
                raise ValueError(f"message {msg_id!r}: metadata over {MAX_META} bytes")
            if msg_id not in box and len(box) >= MAX_MESSAGES:
                raise ValueError(f"mailbox {mailbox}: at most {MAX_MESSAGES} messages")
            box[msg_id] = value
        else:
            box.pop(msg_id, None)
        if self.state is not None:
            self._queue(mailbox, msg_id, value)

    @staticmethod
    def write(state: StateStore, pending: Mapping[tuple[str, str], Any]) -> None:
        """The writer thread's part: commit what was queued (one line per failure)."""
        for (mailbox, msg_id), meta in pending.items():
            try:
                if meta is None:
                    state.delete_voicemail(mailbox, msg_id)
                else:
                    state.add_voicemail(mailbox, msg_id, meta)
            except (StoreError, ValueError) as exc:
                log.error("message %s of box %s not saved: %s", msg_id, mailbox, exc)  # noqa: TRY400  # one line says it
