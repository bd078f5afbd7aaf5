"""One frozen NodeConfig: every limit and timeout of a node, with its default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 7600


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/chinwag`` (``~/.local/share/chinwag`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "chinwag"


#: Federation links tick this many times slower than devices (see NodeConfig).
LINK_HEARTBEAT_FACTOR = 3.0


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one running node. Times are seconds unless named ``_ms``."""

    data_dir: Path = field(default_factory=default_data_dir)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    signup: str = "open"  # "open" or "closed" (admin creates accounts)

    # Connections
    handshake_timeout: float = 10.0
    heartbeat_interval: float = 10.0
    #: A device silent for this long (no frame at all) is dropped.
    heartbeat_deadline: float = 30.0
    #: Federation links tick (keep-alive ping, gossip rounds) this often, and
    #: end after this long without a frame; None: LINK_HEARTBEAT_FACTOR times
    #: the device values (30 s and 90 s by default). Links are few and
    #: long-lived, and an idle full mesh pays a ping and a pong per link per
    #: tick on every node (docs/performance.md, federation at scale); a peer
    #: that vanishes without a TCP reset is noticed after the longer deadline.
    link_heartbeat_interval: float | None = None
    link_heartbeat_deadline: float | None = None
    #: A send to a device that does not drain within this long drops it.
    send_timeout: float = 10.0
    #: Frames waiting to go out on one connection before it counts as slow.
    send_queue_frames: int = 1024
    #: Sends of one device awaiting their commit at once (pipelining depth).
    max_inflight_sends: int = 256
    #: Device acks are soft cursors: written with the next commit, or after
    #: at most this many seconds when none comes (never a commit per ack).
    ack_flush_delay: float = 1.0
    max_connections_per_address: int = 64
    max_connections: int = 10_000
    http_idle_timeout: float = 15.0
    max_http_body: int = 64 * 1024
    #: Connections not yet authenticated (HTTP, WebSockets before ``auth`` or
    #: the federation handshake), node-wide. When full, the oldest one idle
    #: (waiting for bytes) is dropped to make room, so a flood of idle
    #: connections cannot lock out log-ins or authenticated sessions.
    max_unauthenticated: int = 1024
    #: WebSocket frames one message may be split into (more: close 1009).
    max_message_fragments: int = 64

    # Abuse limits
    #: Messages per second per device (token bucket) and its burst.
    send_rate: float = 100.0
    send_burst: int = 200
    #: Decoding work read per account per second, in cost units of about a
    #: microsecond (see node/readbudget.py), and its burst. An account over it
    #: is read more slowly (TCP back-pressure), never refused.
    read_rate: float = 50_000.0
    read_burst: int = 200_000
    #: ``convs``/``history``/``read``/``search`` requests per second per device
    #: (token bucket) and its burst; past it ``rate_limited`` with retry_after_ms.
    history_rate: float = 20.0
    history_burst: int = 60
    #: Seconds after sending within which a user may delete a message for
    #: everyone (node/actions.py); 0 = no limit. Edits have no window.
    delete_window: float = 48 * 3600.0
    #: Queue entries whose pages and search postings wait in ``index_log``
    #: before the store merges them in one batch (node/history_index.py):
    #: more makes appends cheaper and a search's scan of the waiting ones longer.
    search_stage_max: int = 2048
    #: Failed log-ins allowed per account / per address within the window.
    login_failures_per_account: int = 10
    login_failures_per_address: int = 30
    login_window: float = 300.0
    #: Sign-ups allowed per address (IPv6: per /64) and node-wide within
    #: ``signup_window``; each costs one password hash.
    signups_per_address: int = 10
    signups_per_node: int = 100
    signup_window: float = 3600.0
    #: Shortest new password accepted (sign-up, ``user add``, ``user passwd``),
    #: in characters; very common passwords are refused whatever their length
    #: (node/password_policy.py).
    min_password_length: int = 8
    #: Password hashes/checks (Argon2id, ~64 MiB and ~0.1 s each) running at
    #: once, each in a worker thread; ``kdf_reserved`` of them only for
    #: log-ins to accounts that logged in before (a returning user gets in
    #: during a flood of sign-ups or made-up names; at most threads - 1).
    kdf_threads: int = 2
    kdf_reserved: int = 1
    #: Password checks waiting for a thread, per lane (general / returning);
    #: beyond it a request gets 429 ``rate_limited`` with Retry-After.
    kdf_queue: int = 32
    #: Live WebSocket sessions one token may hold at once; the next ``auth``
    #: with that token is refused (``rate_limited``).
    max_sessions_per_token: int = 8
    #: Stored sessions (tokens) and devices per user: a log-in beyond them
    #: drops the user's oldest session / oldest device (with its sessions).
    max_sessions_per_user: int = 256
    max_devices_per_user: int = 256

    # Storage
    map_size: int = 64 << 20
    sync_page: int = 256
    #: Bytes one user's sends and group changes may make the node store per
    #: ``user_quota_window`` (every queue and outbox copy counts; a leaky
    #: bucket, see node/quota.py); past it ``quota_exceeded``. 0: no quota.
    user_quota_bytes: int = 256 << 20
    user_quota_window: float = 24 * 3600.0
    #: Free space kept on the data directory's file system: below it, sends
    #: and group changes get ``unavailable`` before the disk is full. 0: none.
    min_free_bytes: int = 256 << 20

    # Files (node/blobs.py)
    #: Bytes of one uploaded file; a larger upload gets 413 ``file_too_large``
    #: before its body is read. Blobs fetched from other nodes are bounded by it too.
    max_file_bytes: int = 25 << 20
    #: Bytes of files one user may upload per ``file_quota_window`` (a leaky
    #: bucket like ``user_quota_bytes``); past it 413 ``quota_exceeded``. 0: none.
    file_quota_bytes: int = 1 << 30
    file_quota_window: float = 24 * 3600.0
    #: Keep EXIF (camera, GPS position...) in uploaded photos; off by default:
    #: the metadata is removed before the blob is stored.
    keep_exif: bool = False
    #: Longest side of an image's preview, in pixels.
    preview_max_side: int = 320
    #: Pixels of an image the node decodes at most (a decompression bomb is refused).
    max_image_pixels: int = 64_000_000
    #: An uploaded blob no message references is kept this long for the send
    #: that uses it, then reclaimed, as is every blob no message references any
    #: more; the sweep runs every ``blob_sweep_interval``.
    blob_grace: float = 3600.0
    blob_sweep_interval: float = 300.0
    #: Blobs fetched from one peer at once (each in chunks over the link).
    blob_fetch_per_peer: int = 4
    #: Uploads received at once, node-wide (each holds a temporary file and
    #: up to 256 KiB of body in memory); one more gets 429 ``rate_limited``.
    max_uploads: int = 64

    # Federation
    #: Seed peers: (url, node id text) pairs, trusted with their pinned key.
    seeds: tuple[tuple[str, str], ...] = ()
    #: Envelopes per second accepted from one peer (token bucket) and burst.
    peer_rate: float = 20_000.0
    peer_burst: int = 40_000
    #: Push frames from one peer waiting to be committed once their
    #: signatures were checked (in a worker thread); those waiting commit in
    #: one transaction. A quarter as many more wait for their check, plus the
    #: few in hand: a link holds about 1.25 x this + 3 frames of at most
    #: 1 MiB; past it the link stops reading (back-pressure on the peer).
    link_inbound_frames: int = 8
    #: URLs to advertise in this node's gossiped address record (e.g. behind
    #: a proxy or NAT). Empty: derived from ``host`` (see app.advertised_urls).
    public_urls: tuple[str, ...] = ()
    #: ``/metrics`` on a listener of its own (``--metrics-listen HOST:PORT``);
    #: None: on the main port, to loopback clients only.
    metrics_listen: tuple[str, int] | None = None
    #: PEM certificate chain and key: serve HTTPS and WSS on the one port.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert is not None else "http"

    #: How often a link re-sends the address records it knows.
    gossip_interval: float = 30.0
    #: Outbox entries older than this are withdrawn and reported to their
    #: sender as ``delivery_failed`` (code ``timeout``); default 7 days.
    outbox_max_age: float = 7 * 24 * 3600.0
    #: The bound of one peer's outbox, in entries and in bytes (as stored):
    #: every writer (1:1 sends, group sends to the host, the host's group
    #: records) checks both, and a send past either gets ``unavailable``
    #: before any ``ok``.
    outbox_max_entries: int = 200_000
    outbox_max_bytes: int = 256 << 20
    #: How often outboxes of unlinked peers are checked for expired entries
    #: (they are also checked at every link attempt).
    outbox_prune_interval: float = 60.0
    #: A message to a trusted node with no route (not linked, no URL of its
    #: own from a seed, an admin or mDNS, no relay) is withdrawn after this
    #: long and reported as ``delivery_failed`` code ``no_route`` (5 minutes).
    route_timeout: float = 300.0
    #: Pass 1:1 messages between trusted peers that cannot link to each
    #: other (one relay hop, node/relay.py).
    relay: bool = True
    backoff_min: float = 0.5
    backoff_max: float = 60.0
    #: Link requests from unknown (proven) keys kept in memory for an admin's
    #: ``peers approve``; past this the oldest is forgotten. Never stored.
    max_pending_peers: int = 256
    #: Invitations (``chinwag invite``) kept, open, used or expired; a used or
    #: expired one is forgotten 7 days after its expiry (node/invitations.py).
    max_invitations: int = 1024
    #: Discovery: announce and browse with mDNS; trust what it finds?
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    trust_lan: bool = False
    #: Dial private-range addresses learned only by gossip (loopback,
    #: link-local, multicast and unspecified ones never are). ``trust_lan``
    #: allows them too; a peer known first-hand (seed, admin, mDNS) always may.
    gossip_allow_private: bool = False

    # Groups
    group_cap: int = 256

    # Push
    #: Allow push endpoints on private LAN addresses (RFC 1918, unique-local,
    #: ...). Loopback, link-local (cloud metadata) and other special
    #: addresses stay refused (node/dialcheck.py).
    push_allow_private: bool = False
    #: Seconds a burst of messages is gathered into one notification.
    push_coalesce: float = 1.0
    #: POSTs per second to one destination host, node-wide over every endpoint
    #: and user (token bucket), and its burst (node/push_hosts.py).
    push_host_rate: float = 10.0
    push_host_burst: int = 50
    #: Notifications waiting for one host's turn; past it the oldest is dropped.
    push_host_pending: int = 1000
    #: POSTs to one host at once.
    push_host_concurrency: int = 4
    #: After a failed POST the host backs off, doubling from min to max.
    push_backoff_min: float = 1.0
    push_backoff_max: float = 300.0

    # Presence
    presence_timeout: float = 30.0
    presence_grace: float = 2.0
    #: A remote user's presence asked on demand (``presence_query``, a group
    #: opened) is followed through a short subscription of this node to theirs
    #: for this long (seconds) after the last ask: one per (node, user), however
    #: many viewers ask (node/presence.py).
    presence_query_ttl: float = 60.0
    #: Remote users followed on demand at once; past it a query answers with
    #: what is known and asks nothing.
    presence_query_max: int = 10_000

    # Live signals and blocks (issue 17; node/typing.py, receipts.py, blocks.py)
    #: A typing ``start`` holds this long unless renewed; then it counts as
    #: stopped (clients expire it too). Never stored.
    typing_expiry: float = 6.0
    #: One ``typing start`` per device per this long is forwarded (after a
    #: burst of 2); more are dropped silently and counted (``typing.dropped``).
    typing_min_interval: float = 2.0
    #: Typing changes bound for one peer node wait this long to share one
    #: link frame per conversation (coalescing).
    typing_flush: float = 0.2
    #: Addresses one user may block.
    max_blocks_per_user: int = 1000
    #: Read receipts waiting for a peer node's link to come up (soft state,
    #: coalesced per conversation and reader); past it the oldest is dropped.
    receipts_pending_max: int = 10_000

    @property
    def link_interval(self) -> float:
        """How often a federation link ticks (keep-alive and gossip rounds)."""
        if self.link_heartbeat_interval is not None:
            return self.link_heartbeat_interval
        return self.heartbeat_interval * LINK_HEARTBEAT_FACTOR

    @property
    def link_deadline(self) -> float:
        """A federation link silent this long (no frame at all) ends."""
        if self.link_heartbeat_deadline is not None:
            return self.link_heartbeat_deadline
        return self.heartbeat_deadline * LINK_HEARTBEAT_FACTOR
