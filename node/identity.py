"""The node's identity on disk: its key (0600) and its name, in the data dir."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from chinwag.protocol.addresses import check_node_name
from chinwag.protocol.envelope import NodeKey
from chinwag.protocol.errors import ProtocolError

KEY_FILE = "node.key"
INFO_FILE = "node.json"


class IdentityError(Exception):
    """The data directory has no usable identity, or init would overwrite one."""


@dataclass(frozen=True)
class NodeIdentity:
    key: NodeKey
    name: str

    @property
    def id(self) -> str:
        return self.key.id


def default_node_name() -> str:
    """A label from the host name, made valid (``kitchen``)."""
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in raw).strip("-._")
    return (cleaned or "chinwag")[:63]


def ensure_data_dir(data_dir: Path) -> None:
    """Create the data directory with mode 0700 (and tighten an existing one)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(data_dir, 0o700)


def init_identity(data_dir: Path, name: str | None = None) -> NodeIdentity:
    """Make a new key pair and name; refuse if a key already exists."""
    label = name or default_node_name()
    try:
        check_node_name(label)
    except ProtocolError as exc:
        raise IdentityError(exc.message) from exc
    ensure_data_dir(data_dir)
    key_path = data_dir / KEY_FILE
    key = NodeKey.generate()
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise IdentityError(f"{key_path} already exists; refusing to overwrite a node key") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(key.seed().hex() + "\n")
    info_path = data_dir / INFO_FILE
    info_path.write_text(json.dumps({"name": label}) + "\n")
    os.chmod(info_path, 0o600)
    return NodeIdentity(key=key, name=label)


def load_identity(data_dir: Path) -> NodeIdentity:
    """Read the key and name from an initialised data directory."""
    key_path = data_dir / KEY_FILE
    try:
        seed = bytes.fromhex(key_path.read_text().strip())
        key = NodeKey.from_seed(seed)
    except FileNotFoundError as exc:
        raise IdentityError(f"{data_dir} is not initialised (run 'chinwag init')") from exc
    except (ValueError, ProtocolError) as exc:
        raise IdentityError(f"{key_path} is not a valid node key") from exc
    try:
        name = json.loads((data_dir / INFO_FILE).read_text())["name"]
        check_node_name(name)
    except (OSError, ValueError, KeyError, TypeError, ProtocolError):
        name = default_node_name()
    return NodeIdentity(key=key, name=name)


def load_or_init_identity(data_dir: Path, name: str | None = None) -> NodeIdentity:
    """The identity in ``data_dir``, creating it on first run."""
    if (data_dir / KEY_FILE).exists():
        return load_identity(data_dir)
    return init_identity(data_dir, name)
