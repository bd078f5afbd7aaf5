"""The web client's files: served by the node itself, nothing from elsewhere."""

from __future__ import annotations

import re
from importlib import resources

import h11
import pytest
import trio

from chinwag.node.webclient import STATIC_FILES


async def http_get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, _, port = url.removeprefix("http://").rpartition(":")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="GET", target=path, headers=[("host", host), ("connection", "close")]
            )
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, headers, body = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return status, headers, bytes(body)


@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        ("/", "text/html", b'<form id="login-form"'),
        ("/app.js", "text/javascript", b"chinwag.json.v1"),
        ("/app.css", "text/css", b"@media (max-width: 700px)"),
    ],
)
async def test_node_serves_the_client(start_node, path, content_type, marker) -> None:
    node = await start_node()
    status, headers, body = await http_get(node.url, path)
    assert status == 200
    assert headers["content-type"].startswith(content_type)
    assert "script-src 'self'" in headers["content-security-policy"]
    assert marker in body


async def test_unknown_static_path_is_404(start_node) -> None:
    node = await start_node()
    status, _, _ = await http_get(node.url, "/app.min.js")
    assert status == 404


def test_client_loads_nothing_from_other_origins() -> None:
    """No CDN: a LAN without internet gets the whole client from the node."""
    static = resources.files("chinwag.node").joinpath("static")
    external = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//|@import|url\(\s*["']?https?:""")
    for name, _ in set(STATIC_FILES.values()):
        text = static.joinpath(name).read_text("utf-8")
        assert not external.search(text), f"{name} refers to another origin"
        assert 'fetch("http' not in text and 'new WebSocket("ws' not in text
