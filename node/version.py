"""The installed chinwag's version, from the package metadata (pyproject.toml)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def node_version() -> str:
    """``0.1.0``-style version of the installed distribution ("unknown" if none)."""
    try:
        return version("chinwag")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


VERSION = node_version()

__all__ = ["VERSION", "node_version"]
