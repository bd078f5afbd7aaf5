"""History over federation (issue 15): a remote sender's messages are indexed on arrival."""

from __future__ import annotations

import trio

from chinwag.node.client import connect

from .test_federation import drain, linked

TIMEOUT = 15


async def test_remote_messages_join_convs_history_and_search(start_node) -> None:
    home, away = await start_node(name="home"), await start_node(name="away")
    await linked(home, away)
    bob = await home.user("bob")
    alice = await away.user("alice")
    home_id, away_id = home.running.identity.id, away.running.identity.id
    async with connect(home.url, bob) as b, connect(away.url, alice) as a:
        await b.sync(0)
        for n in range(3):
            await a.send(f"bob@{home_id}", f"Grüße aus der Ferne {n}")
        await drain(b, 3)
        with trio.fail_after(TIMEOUT):
            (conv,) = (await b.convs())["convs"]
        assert conv["conv"] == f"alice@{away_id}" and conv["unread"] == 3
        assert conv["last"]["from"]["n"] == away_id
        page = await b.history(f"alice@{away_id}", limit=2)
        assert [m["body"]["text"][-1] for m in page["msgs"]] == ["2", "1"]
        assert len((await b.search("grusse ferne"))["hits"]) == 3
        # A node name works where a key is expected, answered canonically.
        read = await b.read("alice@away", page["msgs"][0]["seq"])
        assert read["conv"] == f"alice@{away_id}" and read["unread"] == 0
        # The sender's side: the conversation with bob, her own messages, nothing unread.
        (mine,) = (await a.convs())["convs"]
        assert mine["conv"] == f"bob@{home_id}" and mine["unread"] == 0
