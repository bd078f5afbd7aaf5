"""``/metrics`` in the Prometheus text format, read from the services' statistics.

A custom collector reads every service's ``statistics()`` when Prometheus
scrapes, so the hot paths (sends, pushes, commits) keep their plain integer
counters and pay nothing for metrics. Served on the main port to loopback
clients only, or, with ``--metrics-listen HOST:PORT``, on a listener of its
own (and then not on the main port at all).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import h11
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from chinwag.protocol.addresses import node_id_bytes

from .http_api import HttpRequest, HttpResponse, json_error_response
from .logs import event
from .version import VERSION

if TYPE_CHECKING:
    from .app import Node

log = logging.getLogger(__name__)

#: Link states a peer can be in (``chinwag_peer_link_state``).
LINK_STATES = ("linked", "connecting", "backing_off", "idle", "pending", "blocked")
#: A scrape request's head, and how long a metrics client may take to send it.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 10.0
#: Connections the metrics listener serves at once; more are closed unserved.
MAX_SCRAPERS = 16


class NodeCollector(Collector):
    """Every metric of a node, built from its services' statistics at scrape time."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def collect(self) -> Iterator[Metric]:
        node = self._node
        info = GaugeMetricFamily(
            "chinwag_node", "This node: version, id and name.", labels=["version", "id", "name"]
        )
        info.add_metric([VERSION, node.identity.id, node.identity.name], 1)
        yield info
        yield _gauge(
            "chinwag_uptime_seconds",
            "Seconds since the node started.",
            max(0.0, trio.current_time() - node.started_at) if node.started_at else 0.0,
        )
        yield from self._devices()
        yield from self._accounts()
        yield from self._store()
        yield from self._federation()
        yield from self._push()
        yield from self._signals()
        yield from self._blobs()

    def _signals(self) -> Iterator[Metric]:
        typing = self._node.typing.statistics()
        receipts = self._node.receipts.statistics()
        yield _counter(
            "chinwag_typing_received", "typing frames from this node's devices.", typing.received
        )
        yield _counter(
            "chinwag_typing_dropped",
            "typing starts over a device's rate, dropped.",
            typing.dropped,
        )
        yield _counter(
            "chinwag_typing_link_frames_sent", "typing link frames sent.", typing.link_frames_sent
        )
        yield _counter(
            "chinwag_receipts_applied",
            "Receipts shown to (and stored for) this node's senders.",
            receipts.applied,
        )

    def _blobs(self) -> Iterator[Metric]:
        blobs = self._node.blobs.statistics()
        links = self._node.blob_links.statistics()
        yield _counter("chinwag_blob_uploads", "Files uploaded and stored.", blobs.uploads)
        yield _counter(
            "chinwag_blob_upload_bytes", "Bytes of files uploaded and stored.", blobs.upload_bytes
        )
        yield _counter(
            "chinwag_blob_uploads_refused",
            "Uploads refused (file limit, quota, bad request).",
            blobs.refused,
        )
        yield _counter(
            "chinwag_blob_uploads_interrupted", "Uploads cut off midway.", blobs.interrupted
        )
        yield _counter("chinwag_blob_downloads", "Blob downloads started.", blobs.downloads)
        yield _counter("chinwag_blobs_reclaimed", "Unreferenced blobs deleted.", blobs.reclaimed)
        yield _counter("chinwag_blobs_fetched", "Blobs fetched from other nodes.", links.fetched)
        yield _counter(
            "chinwag_blob_fetch_bytes",
            "Bytes of blob chunks received from other nodes.",
            links.received_bytes,
        )
        yield _counter(
            "chinwag_blob_fetches_failed",
            "Blob fetches that failed or were refused (retried later).",
            links.failed,
        )
        yield _counter(
            "chinwag_blob_served_bytes", "Bytes of blobs served to other nodes.", links.served_bytes
        )

    def _devices(self) -> Iterator[Metric]:
        node = self._node
        hub = node.hub.statistics()
        server = node.server.statistics()
        router = node.router.statistics()
        yield _gauge(
            "chinwag_connections", "Open connections (HTTP and WebSocket).", server.connections
        )
        yield _gauge(
            "chinwag_device_sessions", "Device WebSocket sessions open now.", hub.connections
        )
        yield _gauge("chinwag_users_online", "Users with a device online.", hub.users_online)
        yield _gauge(
            "chinwag_unauthenticated_connections",
            "Connections not yet logged in.",
            server.admission.unauthenticated,
        )
        yield _counter(
            "chinwag_unauthenticated_evicted",
            "Idle unauthenticated connections dropped to make room.",
            server.admission.evicted,
        )
        yield _counter(
            "chinwag_messages_sent",
            "Messages sent by this node's devices (1:1 and group).",
            router.sent,
        )
        yield _counter(
            "chinwag_messages_send_refused",
            "Sends refused with an error (bad target, quota, full outbox, ...).",
            router.refused,
        )
        waiting = 0
        for record in node.store.list_users():
            head = node.store.queue_head(record.name)
            devices = node.store.list_devices(record.name)
            waiting += max((head - d.acked for d in devices), default=0)
        yield _gauge(
            "chinwag_messages_waiting_for_devices",
            "Messages in users' queues their furthest-behind device has not acknowledged.",
            waiting,
        )

    def _accounts(self) -> Iterator[Metric]:
        api = self._node.api.statistics()
        hasher = self._node.passwords.statistics()
        yield _counter("chinwag_signups", "Accounts created by sign-up.", api.signups)
        yield _counter("chinwag_logins", "Successful log-ins.", api.logins)
        yield _counter(
            "chinwag_login_failures",
            "Log-ins refused (wrong user or password).",
            api.login_failures,
        )
        yield _counter(
            "chinwag_login_rate_limited",
            "Log-ins refused for too many failures.",
            api.login_blocked,
        )
        yield _counter("chinwag_password_hashes", "Password hashes made.", hasher.hashes)
        yield _counter("chinwag_password_checks", "Password checks made.", hasher.verifies)
        yield _counter(
            "chinwag_password_checks_refused",
            "Password checks refused because the queue was full.",
            hasher.refused,
        )

    def _store(self) -> Iterator[Metric]:
        store = self._node.store
        stats = store.statistics()
        yield _gauge("chinwag_users", "Accounts on this node.", stats.users)
        yield _counter("chinwag_store_commits", "Store transactions committed.", stats.commits)
        yield _counter(
            "chinwag_store_operations", "Store operations committed (many per commit).", stats.ops
        )
        yield _gauge(
            "chinwag_store_pending", "Store operations waiting for the writer.", stats.pending
        )
        yield _gauge("chinwag_store_map_bytes", "LMDB map size.", stats.map_size)
        try:
            size = os.stat(store.data_dir / "db" / "data.mdb").st_size
        except OSError:
            size = 0
        yield _gauge("chinwag_store_file_bytes", "Size of the LMDB data file.", size)
        latency = store.commit_times.snapshot()
        histogram = HistogramMetricFamily(
            "chinwag_store_commit_seconds", "Time to write and sync one store commit."
        )
        histogram.add_metric(
            [],
            [("+Inf" if b == float("inf") else repr(b), c) for b, c in latency.buckets],
            latency.sum,
        )
        yield histogram

    def _federation(self) -> Iterator[Metric]:
        fed = self._node.federation
        stats = fed.statistics()
        yield _gauge("chinwag_federation_links", "Federation links up now.", stats.links)
        yield _gauge(
            "chinwag_peers_pending", "Link requests waiting for an admin.", stats.pending_requests
        )
        labels = ["peer", "name"]
        state = GaugeMetricFamily(
            "chinwag_peer_link_state",
            "1 for the state each known peer's link is in.",
            labels=[*labels, "state"],
        )
        families = {
            key: (CounterMetricFamily if kind == "c" else GaugeMetricFamily)(
                f"chinwag_peer_{key}", text, labels=labels
            )
            for key, kind, text in (
                ("entries_sent", "c", "Outbox entries pushed to the peer."),
                ("entries_received", "c", "Entries from the peer stored here."),
                ("entries_refused", "c", "Entries from the peer refused (forged, replayed, ...)."),
                ("bad_frames", "c", "Malformed or out-of-place frames from the peer."),
                ("local_failures", "c", "Links ended by a failure of this node."),
                ("frames_sent", "c", "Link frames sent to the peer."),
                ("frames_received", "c", "Link frames received from the peer."),
                ("entries_delivered", "c", "Outbox entries the peer acknowledged (its oseq)."),
                ("outbox_entries", "g", "Entries waiting in the peer's outbox."),
                ("outbox_bytes", "g", "Bytes waiting in the peer's outbox."),
            )
        }
        for peer in fed.peer_status():
            values = [peer["node_id"], peer["name"] or ""]
            for name in LINK_STATES:
                state.add_metric([*values, name], 1 if peer["link"] == name else 0)
            for key, source in (
                ("entries_sent", "sent"),
                ("entries_received", "received"),
                ("entries_refused", "refused"),
                ("bad_frames", "bad_frames"),
                ("local_failures", "local_failures"),
                ("frames_sent", "frames_sent"),
                ("frames_received", "frames_received"),
                ("outbox_entries", "outbox"),
                ("outbox_bytes", "outbox_bytes"),
            ):
                families[key].add_metric(values, peer[source])
            acked = self._node.registry.acked(node_id_bytes(peer["node_id"]))
            families["entries_delivered"].add_metric(values, acked)
        yield state
        yield from families.values()

    def _push(self) -> Iterator[Metric]:
        push = self._node.push.statistics()
        yield _counter("chinwag_push_sent", "Push notifications delivered (2xx).", push.sent)
        yield _counter("chinwag_push_failed", "Push notifications given up.", push.failed)
        yield _counter("chinwag_push_retried", "Push attempts that will be retried.", push.retried)
        yield _counter(
            "chinwag_push_dropped", "Push notifications dropped at a bound.", push.dropped
        )
        yield _gauge(
            "chinwag_push_waiting", "Push deliveries waiting for their host.", push.waiting
        )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


class Metrics:
    """The node's registry, its ``/metrics`` route and its own listener."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self._scrapers = 0

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def route(self, request: HttpRequest) -> HttpResponse:
        """``GET /metrics`` on the main port: loopback clients only."""
        if not _is_loopback(request.peer):
            return json_error_response(404, "not_found", "no such path /metrics")
        try:
            body = self.render()
        except Exception:  # a bug in a collector must not look like a broken node
            log.exception("rendering /metrics failed")
            return json_error_response(500, "internal", "metrics unavailable")
        return HttpResponse(200, body, CONTENT_TYPE_LATEST)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``/metrics`` alone on ``host:port`` (``--metrics-listen``)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{bound}/metrics"
        log.info("metrics at %s", url, extra=event("metrics_listening", url=url))
        async with trio.open_nursery() as nursery:
            task_status.started(bound)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self._scrapers >= MAX_SCRAPERS:
            await stream.aclose()
            return
        self._scrapers += 1
        try:
            with trio.move_on_after(REQUEST_TIMEOUT):
                await self._answer(stream)
        except (trio.BrokenResourceError, h11.ProtocolError, OSError):
            pass  # a scraper that went away or spoke nonsense: nothing to keep
        except Exception:  # a bug here must not end the node
            log.exception("serving /metrics failed")
        finally:
            self._scrapers -= 1
            await stream.aclose()

    async def _answer(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(MAX_REQUEST_BYTES)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if isinstance(event, h11.Request):
                break
            return
        target = event.target.split(b"?")[0]
        if event.method == b"GET" and target == b"/metrics":
            status, body, ctype = 200, self.render(), CONTENT_TYPE_LATEST
        else:
            status, body, ctype = 404, b"only /metrics here\n", "text/plain"
        headers = [
            ("content-type", ctype),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))


def _is_loopback(peer: str) -> bool:
    """``peer`` is the client's address as the listener saw it (no port)."""
    try:
        return ipaddress.ip_address(peer.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


__all__ = ["Metrics", "NodeCollector"]
