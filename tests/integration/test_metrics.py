"""``/metrics``: the Prometheus text format, parsed by the Prometheus client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request

import trio
from prometheus_client.parser import text_string_to_metric_families

from chinwag.node.client import connect, http_json
from chinwag.node.http_api import HttpRequest
from chinwag.node.metrics import MAX_SCRAPERS

from .test_federation import TIMEOUT, drain, linked_one_way

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:  # noqa: S310 - loopback
            return answer.status, answer.headers["content-type"], answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


async def get(url: str) -> tuple[int, str, str]:
    """GET over loopback (urllib, in a thread: the node answers on this loop)."""
    return await trio.to_thread.run_sync(_get, url)


async def scrape(url: str) -> Samples:
    status, ctype, text = await get(url)
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


async def test_counters_move_with_traffic_on_a_separate_metrics_listener(start_node) -> None:
    node = await start_node(name="mx", metrics_listen=("127.0.0.1", 0))
    assert node.running.metrics_port
    metrics_url = f"http://127.0.0.1:{node.running.metrics_port}/metrics"
    # With --metrics-listen, the main port does not serve /metrics at all.
    status, _, _ = await get(node.url + "/metrics")
    assert status == 404
    before = await scrape(metrics_url)
    assert (
        value(
            before,
            "chinwag_node",
            version=node.node.status()["version"],
            id=node.running.identity.id,
            name="mx",
        )
        == 1
    )
    assert value(before, "chinwag_messages_sent_total") == 0

    alice, bob = await node.user("alice"), await node.user("bob")
    status, _ = await http_json(
        node.url, "POST", "/api/login", {"user": "alice", "password": "wrong guess"}
    )
    assert status == 401
    async with connect(node.url, alice) as client:
        await client.sync(0)
        for i in range(3):
            await client.send("bob", f"m{i}")
        await drain(client, 3)
        after = await scrape(metrics_url)
        assert value(after, "chinwag_device_sessions") == 1
        assert value(after, "chinwag_users_online") == 1
    assert value(after, "chinwag_messages_sent_total") == 3
    assert value(after, "chinwag_login_failures_total") == 1
    assert value(after, "chinwag_logins_total") == 2
    assert value(after, "chinwag_signups_total") == 2
    assert value(after, "chinwag_users") == 2
    # bob's device has seen none of the three.
    assert value(after, "chinwag_messages_waiting_for_devices") >= 3
    commits = value(after, "chinwag_store_commits_total")
    assert commits > value(before, "chinwag_store_commits_total")
    assert value(after, "chinwag_store_commit_seconds_count") == commits
    assert value(after, "chinwag_store_commit_seconds_bucket", le="+Inf") == commits
    assert value(after, "chinwag_store_file_bytes") > 0
    # A bad target is a refused send.
    async with connect(node.url, bob) as client:
        await client.sync(0)
        try:
            await client.send("nobody", "hello?")
        except Exception:  # noqa: BLE001 - the error itself is tested elsewhere
            pass
    last = await scrape(metrics_url)
    assert value(last, "chinwag_messages_send_refused_total") == 1
    # Anything but /metrics on the metrics listener is 404.
    status, _, _ = await get(f"http://127.0.0.1:{node.running.metrics_port}/api/profile")
    assert status == 404


async def test_main_port_serves_metrics_to_loopback_only(start_node) -> None:
    node = await start_node(name="lo")
    samples = await scrape(node.url + "/metrics")
    assert value(samples, "chinwag_uptime_seconds") >= 0
    # The same route asked from a LAN address: as if it did not exist.
    answer = await node.node.api.handle(
        HttpRequest("GET", "/metrics", "", {}, b"", peer="192.0.2.7")
    )
    assert answer.status == 404


async def test_peer_link_state_and_entry_counters(start_node) -> None:
    n1, n2 = await start_node(name="pm1"), await start_node(name="pm2")
    # One link that is never replaced, so the entry is pushed exactly once.
    await linked_one_way(n1, n2)
    id2 = n2.running.identity.id
    await n2.user("bob")
    async with connect(n1.url, await n1.user("alice")) as client:
        await client.sync(0)
        await client.send("bob@pm2", "over the link")
        await drain(client, 1)
    with trio.fail_after(TIMEOUT):
        while n1.node.registry.outbox_depth(n2.node.identity.key.public):  # noqa: ASYNC110
            await trio.sleep(0.02)
    samples = await scrape(n1.url + "/metrics")
    peer = {"peer": id2, "name": "pm2"}
    assert value(samples, "chinwag_peer_link_state", **peer, state="linked") == 1
    assert value(samples, "chinwag_peer_link_state", **peer, state="connecting") == 0
    assert value(samples, "chinwag_peer_entries_sent_total", **peer) == 1
    assert value(samples, "chinwag_peer_entries_delivered_total", **peer) == 1
    assert value(samples, "chinwag_peer_frames_sent_total", **peer) >= 2  # resume, push
    assert value(samples, "chinwag_peer_frames_received_total", **peer) >= 2  # resume, ack
    assert value(samples, "chinwag_peer_outbox_entries", **peer) == 0
    assert value(samples, "chinwag_federation_links") == 1
    theirs = await scrape(n2.url + "/metrics")
    other = {"peer": n1.running.identity.id, "name": "pm1"}
    assert value(theirs, "chinwag_peer_entries_received_total", **other) == 1
    assert value(theirs, "chinwag_peer_entries_refused_total", **other) == 0


async def test_metrics_listener_serves_a_bounded_number_of_connections(start_node) -> None:
    node = await start_node(name="mb", metrics_listen=("127.0.0.1", 0))
    port = node.running.metrics_port
    assert port
    idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(MAX_SCRAPERS)]
    # Each idle connection holds its slot until the request timeout; the next
    # one is closed unserved.
    with trio.fail_after(TIMEOUT):
        while True:
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            await extra.send_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = await extra.receive_some(100)
            await extra.aclose()
            if answer == b"":
                break
            # Answered: the listener had not accepted all idle ones yet.
            await trio.sleep(0.02)
    for stream in idle:
        await stream.aclose()
    with trio.fail_after(TIMEOUT):
        while True:
            try:
                samples = await scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except (AssertionError, OSError):  # slots not released yet
                await trio.sleep(0.02)
    assert value(samples, "chinwag_uptime_seconds") >= 0
