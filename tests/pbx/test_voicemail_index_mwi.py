"""The core's two pieces for voicemail: the voicemail index behind
`Context.messages`/`set_message` (pbx/features.py: bounded names, values and counts,
RAM at once, in the state LMDB after the writer, back in a new host) and the
message-waiting NOTIFY (pbx/mwi.py: one per binding, out of dialog with a fresh
Call-ID and tag, RFC 3842 headers and body, at most MAX_MWI_CONTACTS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pbx_core.features.api import Feature
from pbx_core.pbx import mailboxes as host_module
from pbx_core.pbx.features import Facts, FeatureHost
from pbx_core.pbx.mwi import MAX_MWI_CONTACTS, notify, summary
from pbx_core.pbx.registrar import Binding
from pbx_core.sip.uri import parse_uri
from pbx_core.store.state import StateStore
from tests.harness.clock import ClockLoop
from tests.harness.stack import FakeStack


def _host(state: StateStore | None) -> FeatureHost:
    facts = Facts(
        now=lambda: 0.0,
        setting=lambda _name: None,
        extension=lambda _number: None,
        group=lambda _number: None,
        registered=lambda _number: False,
        in_call=lambda _number: False,
        may_dial=lambda _number, _by: True,
        domain=lambda: "pbx.local",
    )
    return FeatureHost((Feature(name="vm"),), facts, state)


def test_the_index_is_kept_and_read_back_after_a_restart(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.mdb")
    try:
        first = _host(state)
        ctx = first.context(first.features[0])
        ctx.set_message("101", "0002", {"folder": "new", "caller": "100"})
        ctx.set_message("101", "0001", {"folder": "old"})
        ctx.set_message("101", "0003", {"folder": "new"})
        ctx.set_message("101", "0003", None)  # deleted before the writer ran
        assert [k for k, _ in ctx.messages("101")] == ["0001", "0002"]  # RAM, id order
        first.close()  # the writer drains
        assert [k for k, _ in state.voicemails("101")] == ["0001", "0002"]
        again = _host(state)
        got = again.context(again.features[0]).messages("101")
        assert got == (("0001", {"folder": "old"}), ("0002", {"folder": "new", "caller": "100"}))
        again.close()
    finally:
        state.close()


@pytest.mark.parametrize(
    ("box", "msg_id", "meta", "says"),
    [
        ("../etc", "1", {}, "mailbox"),
        ("", "1", {}, "mailbox"),
        ("101", "a/b", {}, "message id"),
        ("101", "x" * 65, {}, "message id"),
        ("101", "1", {"blob": "x" * 5000}, "4096"),
        ("101", "1", {"bad": object()}, "msgpack"),
    ],
)
def test_bad_names_and_values_are_refused_and_nothing_is_kept(
    box: str, msg_id: str, meta: dict[str, Any], says: str
) -> None:
    host = _host(None)
    ctx = host.context(host.features[0])
    with pytest.raises(ValueError, match=says):
        ctx.set_message(box, msg_id, meta)
    assert ctx.messages("101") == ()
    host.close()


def test_a_box_holds_at_most_max_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "MAX_MESSAGES", 3)
    host = _host(None)
    ctx = host.context(host.features[0])
    for n in range(3):
        ctx.set_message("101", str(n), {"folder": "new"})
    with pytest.raises(ValueError, match="at most 3"):
        ctx.set_message("101", "9", {"folder": "new"})
    ctx.set_message("101", "0", {"folder": "old"})  # a change of one it has is fine
    assert len(ctx.messages("101")) == 3
    host.close()


def _binding(port: int) -> Binding:
    return Binding(
        aor="101@pbx.local",
        uri=parse_uri(f"sip:101@127.0.0.1:{port}"),
        expires_at=3600.0,
        q=1.0,
        call_id=f"reg{port}",
        cseq=1,
        source=("UDP", "127.0.0.1", port),
        dest=("UDP", "127.0.0.1", port),
    )


def test_one_notify_per_binding_out_of_dialog_and_bounded() -> None:
    loop = ClockLoop()
    try:
        stack = FakeStack(loop)
        bindings = [_binding(5000 + n) for n in range(MAX_MWI_CONTACTS + 5)]
        sent = notify(stack, bindings, "101", "pbx.local", 2, 1)  # type: ignore[arg-type]
        assert sent == MAX_MWI_CONTACTS
        reqs = stack.sent_requests("NOTIFY")
        assert len(reqs) == MAX_MWI_CONTACTS
        assert [d for _r, d, _cb in stack.requests] == [b.dest for b in bindings[:sent]]
        assert len({r.call_id for r in reqs}) == sent  # a fresh Call-ID each
        assert len({r.from_.tag for r in reqs}) == sent
        for req, binding in zip(reqs, bindings, strict=False):
            assert req.uri == binding.uri and req.to.tag is None  # out of dialog
            assert req.headers.get("event") == "message-summary"
            assert req.headers.get("content-type") == "application/simple-message-summary"
            assert req.body == summary(2, 1, "sip:101@pbx.local")
        assert reqs[0].body.decode() == (
            "Messages-Waiting: yes\r\nMessage-Account: sip:101@pbx.local\r\n"
            "Voice-Message: 2/1 (0/0)\r\n"
        )
        assert summary(0, 7, "sip:1@x").startswith(b"Messages-Waiting: no\r\n")
    finally:
        loop.close()


def test_a_stack_that_raises_costs_a_log_line_not_the_others() -> None:
    loop = ClockLoop()
    try:
        stack = FakeStack(loop)
        calls = {"n": 0}
        real = stack.request

        def flaky(req: Any, dest: Any, cb: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("no route")
            return real(req, dest, cb)

        stack.request = flaky  # type: ignore[method-assign]
        sent = notify(stack, [_binding(5001), _binding(5002)], "101", "pbx.local", 0, 0)  # type: ignore[arg-type]
        assert sent == 1 and len(stack.sent_requests("NOTIFY")) == 1
    finally:
        loop.close()
