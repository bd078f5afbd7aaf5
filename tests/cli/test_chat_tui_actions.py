"""``chinwag chat``: /edit, /react, /reply, /delete against a real node process."""

from __future__ import annotations

import trio

from .tui_harness import (
    SyncNode,
    in_trio,
    make_user,
    open_app,
    run_app_test,
    send_as,
    shown,
    type_line,
    until,
    until_connected,
)

SIZE = (120, 40)


def test_edit_react_reply_delete_from_the_input_line(node: SyncNode) -> None:
    trio.run(make_user, node.url, "alice")
    bob = trio.run(make_user, node.url, "bob").token

    async def main() -> None:
        app = open_app(node.url, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await until_connected(pilot)
            await type_line(pilot, "/chat bob")
            await type_line(pilot, "/edit nothing yet")
            assert "no message of yours" in shown(app, "#notice")
            await type_line(pilot, "helo bob")
            await until(pilot, lambda: "you: helo bob  ✓" in shown(app, "#messages"), "the ok")
            await type_line(pilot, "/edit hello bob")
            await until(pilot, lambda: "hello bob (edited)" in shown(app, "#messages"), "edit")
            await in_trio(send_as, node.url, bob, "alice", "hi alice")
            await until(pilot, lambda: "hi alice" in shown(app, "#messages"), "bob's message")
            await type_line(pilot, "/react 👍")
            await until(pilot, lambda: "hi alice  👍1" in shown(app, "#messages"), "reaction")
            await type_line(pilot, "/reply good to hear")
            await until(
                pilot,
                lambda: "↳ bob@kitchen: hi alice: good to hear" in shown(app, "#messages"),
                "reply",
            )
            await type_line(pilot, "/delete")
            await until(pilot, lambda: "(deleted)" in shown(app, "#messages"), "delete")

    run_app_test(main)
