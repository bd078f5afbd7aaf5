"""Seed peers: ``URL#NODEID`` from the command line and from ``DATA/peers``."""

from __future__ import annotations

from pathlib import Path

from chinwag.protocol.addresses import is_node_id_text
from chinwag.protocol.errors import ErrorCode, ProtocolError

PEERS_FILE = "peers"


def parse_seed(text: str) -> tuple[str, str]:
    """``http://host:port#nodeid`` -> (url, node id); raise ``bad_request``."""
    url, sep, node_id = text.strip().partition("#")
    if not sep or not is_node_id_text(node_id):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"a peer is URL#NODEID (52-char node id), got {text[:100]!r}"
        )
    if not url.startswith(("http://", "https://")):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"a peer URL is http(s)://host:port: {url!r}")
    return url.rstrip("/"), node_id


def read_peers_file(data_dir: Path) -> list[tuple[str, str]]:
    """Seeds from ``DATA/peers``: one ``URL#NODEID`` per line, ``#`` comments."""
    path = data_dir / PEERS_FILE
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    seeds = []
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            seeds.append(parse_seed(stripped))
    return seeds
