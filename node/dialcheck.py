"""The one rule for dialling out, and the dial to the checked address.

Two things dial URLs that someone else chose: federation (a gossiped address
record is signed by the node it describes, but that node can put any URL in
it) and push (a user registers any endpoint URL). Both use
:func:`resolve_for_dial`, which resolves the host at each attempt and checks
**every** address it resolves to:

* loopback, link-local (cloud metadata at 169.254.169.254 included),
  unspecified, "this network" (0.0.0.0/8), multicast and reserved addresses
  are never dialled, nor IPv4 addresses embedded in IPv6 ones (mapped, 6to4,
  NAT64) that would be;
* a private-range address (any other non-global one: RFC 1918, CGNAT,
  unique-local and deprecated site-local IPv6, documentation ranges) is
  dialled only when the caller allows it (a peer known first-hand, or the
  admin's ``--gossip-allow-private`` / ``--push-allow-private``);
* global addresses are dialled.

If any one address of the name is refused, the name is refused as a whole,
rather than dialling the first allowed one: a name that mixes public and
internal addresses is either misconfigured or aimed inward (DNS rebinding),
and one rule that never depends on the resolver's order is easier to reason
about. The connection then goes to the first address, the one that was
checked (never a second resolution), with the URL's host kept for the
``Host`` header and TLS.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

from chinwag.protocol.errors import ErrorCode, ProtocolError

from .client import ClientError, leaf_exceptions
from .client import split_url as client_split_url

REFUSED = "refused"
PRIVATE = "private"
GLOBAL = "global"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: "This network": Linux connects 0.x.y.z to the local host.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
#: Deprecated IPv6 site-local: scoped to a site, so never global (Python's
#: ``is_global`` says True for it).
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")

Resolver = Callable[..., Awaitable[list[Any]]]


def classify(text: str) -> str:
    """``refused``, ``private`` or ``global`` for one IP address (text)."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return REFUSED
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = classify(str(embedded))
            if inner != GLOBAL:
                return inner
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return REFUSED
    if ip in _THIS_NETWORK:
        return REFUSED
    if ip in _SITE_LOCAL:
        return PRIVATE
    return GLOBAL if ip.is_global else PRIVATE


async def resolve_for_dial(
    host: str,
    port: int,
    *,
    allow_private: bool,
    getaddrinfo: Resolver | None = None,
    label: str = "gossiped address",
) -> str:
    """Resolve ``host`` and check every address; return the one to connect to.

    Raises ``forbidden`` if any address is refused (or private, when that is
    not allowed), and ``OSError`` if the name does not resolve. ``label``
    names what is dialled in the error (``gossiped address``, ``push
    endpoint``).
    """
    resolve = getaddrinfo or trio.socket.getaddrinfo
    try:
        infos = await resolve(host, port, type=trio.socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise OSError(f"cannot resolve {host[:100]!r}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise OSError(f"{host[:100]!r} resolves to nothing")
    for address in addresses:
        kind = classify(address)
        if kind == REFUSED:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"not dialling {label} {host[:100]!r}: {address} is a loopback, link-local or "
                "special address, never dialled",
            )
        if kind == PRIVATE and not allow_private:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"not dialling {label} {host[:100]!r}: {address} is a private address, "
                "not allowed here",
            )
    return addresses[0]


def split_url(url: str) -> tuple[str, int, bool]:
    """:func:`chinwag.node.client.split_url`, failing with ``bad_request``."""
    try:
        return client_split_url(url)
    except ClientError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, exc.message) from exc


@asynccontextmanager
async def open_ws_at(
    url: str,
    address: str,
    resource: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: Iterable[str],
    max_message_size: int,
    connect_timeout: float,
    disconnect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket to ``url``'s host, connected to ``address`` (checked)."""
    host, port, tls = split_url(url)
    netloc = urlsplit(url).netloc
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                tcp = await trio.open_tcp_stream(address, port)
                stream: Any = tcp
                if tls:
                    context = ssl_context or ssl.create_default_context()
                    stream = trio.SSLStream(
                        tcp, context, server_hostname=host, https_compatible=True
                    )
                try:
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        netloc,
                        resource,
                        subprotocols=subprotocols,
                        max_message_size=max_message_size,
                    )
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
            try:
                yield ws
            finally:
                with trio.move_on_after(disconnect_timeout) as scope:
                    scope.shield = True
                    await ws.aclose()
                await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaves = [e for e in leaf_exceptions(group) if not isinstance(e, trio.Cancelled)]
        if len(leaves) == 1:
            # Not "from None": that would drop the leaf's own cause, where
            # trio keeps why each connection attempt failed (node/logs.py
            # reads it to say "connection refused").
            raise leaves[0]  # noqa: B904
        raise
