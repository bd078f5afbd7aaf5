"""Conversations, history pages, read markers and search (issue 15), over real sockets."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from chinwag.node.client import ChatClient, ClientError, connect

TIMEOUT = 20


# Every test that takes ``stage`` runs with the index's rows merged from
# index_log into conv_seq and postings (search_stage_max) at every commit, every
# few rows, or never within the test.


def conv_of(node: Any, user: str) -> str:
    return f"{user}@{node.running.identity.id}"


async def walk_history(client: ChatClient, conv: str, limit: int) -> list[dict[str, Any]]:
    """Every message of ``conv``, newest first, page by page."""
    out: list[dict[str, Any]] = []
    before = None
    while True:
        page = await client.history(conv, limit=limit, before=before)
        out.extend(page["msgs"])
        if "next" not in page:
            return out
        assert page["next"] == page["msgs"][-1]["seq"]
        before = page["next"]


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_pages_walk_back_to_the_first_message_while_new_ones_arrive(
    start_node, stage: int
) -> None:
    node = await start_node(search_stage_max=stage)
    alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
    async with (
        connect(node.url, alice) as a,
        connect(node.url, bob) as b,
        connect(node.url, carol) as c,
    ):
        for n in range(30):
            await a.send("bob", f"a{n}")
            if n % 3 == 0:
                await b.send("alice", f"b{n}")
            if n % 5 == 0:
                await c.send("bob", f"c{n}")  # another conversation of bob's, interleaved
        expected = [f"a{n}" for n in range(30)] + [f"b{n}" for n in range(0, 30, 3)]
        conv = conv_of(node, "alice")
        pages: list[dict[str, Any]] = []
        before = None
        newcomers = 0
        with trio.fail_after(TIMEOUT):
            while True:
                page = await b.history(conv, limit=7, before=before)
                pages.extend(page["msgs"])
                # New messages keep arriving between pages: they sit above the
                # first page and never shift the older ones.
                await a.send("bob", f"late{newcomers}")
                newcomers += 1
                if "next" not in page:
                    break
                before = page["next"]
        seqs = [m["seq"] for m in pages]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs)
        got = [m["body"]["text"] for m in pages]
        assert sorted(got) == sorted(expected)
        assert pages[-1]["body"]["text"] == "a0"  # the very first message
        assert all(m["t"] == "msg" and "id" in m for m in pages)
        # A fresh walk now also holds the late ones, each once.
        again = await walk_history(b, conv, 50)
        assert len(again) == len(expected) + newcomers
        # The sender sees the same conversation from its side.
        mine = await walk_history(a, conv_of(node, "bob"), 200)
        assert [m["id"] for m in mine] == [m["id"] for m in again]


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_convs_are_newest_first_with_exact_unread_and_paged(start_node, stage: int) -> None:
    node = await start_node(search_stage_max=stage)
    bob = await node.user("bob")
    senders = [f"u{n}" for n in range(5)]
    tokens = {name: await node.user(name) for name in senders}
    for n, name in enumerate(senders):
        async with connect(node.url, tokens[name]) as client:
            for k in range(n + 1):
                await client.send("bob", f"{name} says {k}")
    async with connect(node.url, bob) as b:
        await b.send(senders[1], "bob writes")  # his own message: not unread
        first = await b.convs(limit=2)
        assert [c["conv"] for c in first["convs"]] == [conv_of(node, "u1"), conv_of(node, "u4")]
        assert first["convs"][0]["unread"] == 2 and first["convs"][0]["read_seq"] == 0
        assert first["convs"][0]["last"]["body"]["text"] == "bob writes"
        assert first["convs"][1]["unread"] == 5 and first["convs"][1]["kind"] == "dm"
        rest = await b.convs(before=first["next"])
        assert "next" not in rest
        assert [c["conv"] for c in rest["convs"]] == [conv_of(node, f"u{n}") for n in (3, 2, 0)]
        assert [c["unread"] for c in rest["convs"]] == [4, 3, 1]


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_read_markers_across_two_devices_and_never_backwards(start_node, stage: int) -> None:
    node = await start_node(search_stage_max=stage)
    alice = await node.user("alice")
    laptop = await node.user("bob", "laptop")
    phone = await node.user("bob", "phone")
    conv = conv_of(node, "alice")
    async with connect(node.url, alice) as a:
        acks = [await a.send("bob", f"m{n}") for n in range(6)]
    async with connect(node.url, laptop) as lap, connect(node.url, phone) as ph:
        reply = await lap.read(conv, acks[2].seq)
        assert reply == {"t": "ok", "rid": reply["rid"], "conv": conv, "read_seq": 3, "unread": 3}
        # The phone hears of it at once; the laptop (the reader) does not.
        seen = await ph.wait_read(conv, 3, timeout=TIMEOUT)
        assert seen["unread"] == 3
        assert conv not in lap.reads
        # Going back is refused silently: the marker stays.
        back = await ph.read(conv, 1)
        assert back["read_seq"] == 3 and back["unread"] == 3
        # Past the last message: the marker stops at it.
        done = await ph.read(conv, 10_000)
        assert done["read_seq"] == acks[-1].seq and done["unread"] == 0
        await lap.wait_read(conv, acks[-1].seq, timeout=TIMEOUT)
    # The phone is offline while the laptop reads; it sees the marker in convs.
    async with connect(node.url, alice) as a:
        more = [await a.send("bob", f"n{n}") for n in range(4)]
    async with connect(node.url, laptop) as lap:
        assert (await lap.convs())["convs"][0]["unread"] == 4
        await lap.read(conv, more[1].seq)
    async with connect(node.url, phone) as ph:
        (item,) = (await ph.convs())["convs"]
        assert item["read_seq"] == more[1].seq and item["unread"] == 2


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_group_unread_skips_events_and_own_messages(start_node, stage: int) -> None:
    node = await start_node(search_stage_max=stage)
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        group = f"#team@{node.running.identity.id}"
        await a.group("create", name="team", title="The team")
        await a.group("add", group=group, members=[conv_of(node, "bob")])
        await b.group("accept", group=group)
        await a.send(group, "hello team")
        await b.send(group, "hi")
        await a.send(group, "how are you")
        (item,) = [c for c in (await b.convs())["convs"] if c["conv"] == group]
        assert item["kind"] == "group" and item["title"] == "The team"
        assert item["unread"] == 2
        texts = [m["body"].get("text") for m in (await b.history(group))["msgs"]]
        assert texts[:3] == ["how are you", "hi", "hello team"]


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_search_words_accents_korean_japanese_chinese(start_node, stage: int) -> None:
    node = await start_node(search_stage_max=stage)
    alice, bob = await node.user("alice"), await node.user("bob")
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        for text in (
            "Crème brûlée for dessert",
            "안녕하세요 여러분",
            "東京の天気はどうですか",
            "我们明天见面吧",
            "plain english words here",
            "more english words",
        ):
            await a.send("bob", text)

        async def found(q: str, **kw: Any) -> list[str]:
            reply = await b.search(q, **kw)
            return [h["msg"]["body"]["text"] for h in reply["hits"]]

        assert await found("creme") == ["Crème brûlée for dessert"]
        assert await found("BRÛLÉE dessert") == ["Crème brûlée for dessert"]
        assert await found("여러분") == ["안녕하세요 여러분"]
        assert await found("안녕") == ["안녕하세요 여러분"]
        assert await found("天気") == ["東京の天気はどうですか"]
        assert await found("東") == ["東京の天気はどうですか"]
        assert await found("明天") == ["我们明天见面吧"]
        assert await found("english words") == ["more english words", "plain english words here"]
        assert await found("english plain") == ["plain english words here"]
        assert await found("english nothing") == []
        page = await b.search("english", limit=1)
        assert page["hits"][0]["conv"] == conv_of(node, "alice") and "next" in page
        older = await b.search("english", limit=1, before=page["next"])
        assert [h["msg"]["body"]["text"] for h in older["hits"]] == ["plain english words here"]
        assert await found("english", conv=conv_of(node, "alice")) != []
        # The sender finds its own messages in its own queue.
        assert [h["msg"]["body"]["text"] for h in (await a.search("creme"))["hits"]] == [
            "Crème brûlée for dessert"
        ]


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_search_respects_group_membership(start_node, stage: int) -> None:
    node = await start_node(search_stage_max=stage)
    alice, bob = await node.user("alice"), await node.user("bob")
    group = f"#club@{node.running.identity.id}"
    async with connect(node.url, alice) as a, connect(node.url, bob) as b:
        await a.group("create", name="club")
        await a.group("add", group=group, members=[conv_of(node, "bob")])
        await b.group("accept", group=group)
        await a.send(group, "secret plan one")
        assert len((await b.search("secret", conv=group))["hits"]) == 1
        await a.group("remove", group=group, members=[f"bob@{node.running.identity.id}"])
        await a.send(group, "secret plan two")
        hits = (await b.search("secret"))["hits"]
        assert [h["msg"]["body"]["text"] for h in hits] == ["secret plan one"]
        assert len((await a.search("secret"))["hits"]) == 2


async def test_bad_cursor_unknown_and_foreign_conversations(start_node) -> None:
    node = await start_node()
    alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
    async with connect(node.url, alice) as a:
        await a.send("bob", "for bob only")
    async with connect(node.url, carol) as c, connect(node.url, bob) as b:
        # Carol never talked to alice: the alice-bob conversation is not hers.
        for call in (
            c.history(conv_of(node, "alice")),
            c.read(conv_of(node, "alice"), 1),
            c.search("bob", conv=conv_of(node, "alice")),
            b.history(conv_of(node, "nobody")),
        ):
            with pytest.raises(ClientError) as info:
                await call
            assert info.value.code == "not_found"
        assert (await c.search("bob"))["hits"] == []
        for frame in (
            {"t": "history", "conv": conv_of(node, "alice"), "before": 10_000},
            {"t": "history", "conv": conv_of(node, "alice"), "before": "x"},
            {"t": "convs", "before": -1},
        ):
            with pytest.raises(ClientError) as info:
                await b.call(frame)
            assert info.value.code == "bad_request"
        for frame in (
            {"t": "history", "conv": conv_of(node, "alice"), "limit": 201},
            {"t": "search", "q": "x" * 201},
            {"t": "search", "q": "ok", "extra": 1},
            {"t": "convs", "limit": 0},
        ):
            with pytest.raises(ClientError) as info:
                await b.call(frame)
            assert info.value.code == "bad_frame"
        with pytest.raises(ClientError) as info:
            await b.search("!!! ...")
        assert info.value.code == "bad_request"
        # The session still works after all that.
        assert len((await b.history(conv_of(node, "alice")))["msgs"]) == 1


async def test_history_requests_are_rate_limited_per_device(start_node) -> None:
    node = await start_node(history_rate=0.5, history_burst=3)
    bob = await node.user("bob", "laptop")
    other = await node.user("bob", "phone")
    async with connect(node.url, bob) as b, connect(node.url, other) as o:
        replies = await b.call_many([{"t": "convs"} for _ in range(5)])
        codes = [r["t"] if r["t"] == "ok" else r["code"] for r in replies]
        assert codes == ["ok", "ok", "ok", "rate_limited", "rate_limited"]
        assert replies[3]["retry_after_ms"] > 0
        # Another device of the same user has its own bucket.
        assert (await o.convs())["convs"] == []


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_search_in_one_conversation_only(start_node, stage: int) -> None:
    node = await start_node(search_stage_max=stage)
    alice, carol, bob = [await node.user(n) for n in ("alice", "carol", "bob")]
    async with connect(node.url, alice) as a, connect(node.url, carol) as c:
        for n in range(5):
            await a.send("bob", f"lunch at noon {n}")
            await c.send("bob", f"lunch tomorrow {n}")
    async with connect(node.url, bob) as b:
        reply = await b.search("lunch", conv="carol", limit=3)
        assert [h["msg"]["body"]["text"] for h in reply["hits"]] == [
            f"lunch tomorrow {n}" for n in (4, 3, 2)
        ]
        assert {h["conv"] for h in reply["hits"]} == {conv_of(node, "carol")}
        rest = await b.search("lunch", conv="carol", before=reply["next"])
        assert [h["msg"]["body"]["text"] for h in rest["hits"]] == [
            "lunch tomorrow 1",
            "lunch tomorrow 0",
        ]
        assert len((await b.search("lunch"))["hits"]) == 10
        assert (await b.search("lunch noon", conv="carol"))["hits"] == []


@pytest.mark.parametrize("stage", [1, 3, 2048])
async def test_a_page_around_a_message_then_older_and_newer_pages(start_node, stage: int) -> None:
    """Jumping to a search hit: one page centred on it, then `next` (older) and
    `newer` (via `after`) walk out to both ends with nothing missing or twice."""
    node = await start_node(search_stage_max=stage)
    alice, bob, carol = [await node.user(n) for n in ("alice", "bob", "carol")]
    async with (
        connect(node.url, alice) as a,
        connect(node.url, bob) as b,
        connect(node.url, carol) as c,
    ):
        for n in range(20):
            await a.send("bob", f"a{n}")
            if n % 4 == 0:
                await c.send("bob", f"c{n}")  # another conversation, interleaved
        conv = conv_of(node, "alice")
        with trio.fail_after(TIMEOUT):
            everything = [m["seq"] for m in await walk_history(b, conv, 50)]
            hit = (await b.search("a11"))["hits"][0]["msg"]
            page = await b.history(conv, limit=7, around=hit["seq"])
            seqs = [m["seq"] for m in page["msgs"]]
            assert seqs == sorted(seqs, reverse=True) and hit["seq"] in seqs
            assert [m["body"]["text"] for m in page["msgs"]] == [f"a{n}" for n in range(14, 7, -1)]
            assert page["next"] == seqs[-1] and page["newer"] == seqs[0]
            older, newer = list(seqs), []
            cursor = page["next"]
            while cursor is not None:
                more = await b.history(conv, limit=4, before=cursor)
                older += [m["seq"] for m in more["msgs"]]
                cursor = more.get("next")
            cursor = page["newer"]
            while cursor is not None:
                more = await b.history(conv, limit=4, after=cursor)
                got = [m["seq"] for m in more["msgs"]]
                assert got == sorted(got, reverse=True) and "next" in more
                newer = got + newer
                cursor = more.get("newer")
            assert newer + older == everything

            # Near either end the page fills up from the other side.
            first = await b.history(conv, limit=7, around=everything[-1])
            assert [m["seq"] for m in first["msgs"]] == everything[-7:]
            assert "next" not in first and first["newer"] == everything[-7]
            last = await b.history(conv, limit=7, around=everything[0])
            assert [m["seq"] for m in last["msgs"]] == everything[:7]
            assert "newer" not in last and last["next"] == everything[6]
            assert (await b.history(conv, after=everything[0]))["msgs"] == []
            with pytest.raises(ClientError) as info:
                await b.history(conv, around=10_000)
            assert info.value.code == "bad_request"


@pytest.mark.parametrize("stage", [1, 2048])
async def test_a_removed_user_leaves_no_index_rows(tmp_path, stage: int) -> None:
    """Removing a user drops their conversations, pages and postings, merged
    or still in the index log, and leaves the other user's intact."""
    from chinwag.node import history_index as index
    from chinwag.node.store import Store
    from chinwag.protocol.addresses import UserAddress
    from chinwag.protocol.envelope import NodeKey

    key = NodeKey.generate()
    store = Store(tmp_path, key, search_stage_max=stage)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for name in ("alice", "bob"):
            await store.create_user(name, "h", 1_750_000_000_000)
        for n in range(4):
            await store.send_direct(
                "alice", "laptop", None, UserAddress("bob", key.id), f"hello {n}", 1_750_000_000_000
            )
        uids = {name: store.get_user(name).uid for name in ("alice", "bob")}  # type: ignore[union-attr]

        def index_of(uid: int) -> tuple[int, list[int]]:
            def read(view: Any) -> tuple[int, list[int]]:
                dbs = {name: view.db(name) for name in index.DB_NAMES}
                convs, _ = index.recent_convs(view.txn, dbs, uid, None, 50)
                hits = list(index.search_seqs(view.txn, dbs, uid, ["hello"], None, None, 100))
                return len(convs), hits

            return store.read(read)

        assert index_of(uids["alice"]) == (1, [4, 3, 2, 1])
        await store.remove_user("alice")
        assert index_of(uids["alice"]) == (0, [])
        assert index_of(uids["bob"]) == (1, [4, 3, 2, 1])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("stage", [1, 2048])
async def test_a_deleted_or_edited_message_leaves_no_postings_of_its_old_words(
    start_node, stage: int
) -> None:
    """Issue 17 on issue 15's index: the old words of a deleted or edited
    message go from the search index whether its entry was merged into
    ``terms`` or still waits in ``index_log``."""
    from chinwag.node import history_index as index

    node = await start_node(search_stage_max=stage)
    store = node.node.store
    async with connect(node.url, await node.user("alice")) as a:
        await node.user("bob")
        gone = await a.send("bob", "zanzibar ferry")
        fixed = await a.send("bob", "quokka typo")
        await a.delete(gone.id)
        await a.edit(fixed.id, "wombat")
    uid = store.get_user("bob").uid  # type: ignore[union-attr]

    def candidates(word: str) -> list[int]:
        def read(view: Any) -> list[int]:
            dbs = {name: view.db(name) for name in index.DB_NAMES}
            return list(index.search_seqs(view.txn, dbs, uid, [word], None, None, 100))

        return store.read(read)

    assert candidates("zanzibar") == candidates("ferry") == []
    assert candidates("quokka") == []
    assert candidates("wombat") == [2]
