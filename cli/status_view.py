"""``chinwag status`` and the link column of ``peers list``, in plain words."""

from __future__ import annotations

import time
from typing import Any


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 5 min``, ``2 days 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} day{'s' if days > 1 else ''} {hours} h" if hours else f"{days} days"


def _since(changed_ms: int, now_ms: int) -> str:
    if not changed_ms:
        return ""
    clock = time.strftime("%H:%M", time.localtime(changed_ms / 1000))
    return f" since {clock} ({duration((now_ms - changed_ms) / 1000)})"


def link_words(peer: dict[str, Any], now_ms: int | None = None) -> str:
    """One peer's link: "up since 14:02 (3 min)", "down since ..., retrying in 4 s: ..."."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    link = peer.get("link")
    if link is None:
        return "link state unknown (node not running)"
    changed = int(peer.get("link_changed_ms") or 0)
    error = peer.get("last_error") or ""
    if link == "linked":
        return "link up" + _since(changed, now_ms)
    if link == "pending":
        return "asking to link; waiting for 'chinwag peers approve'"
    if link == "blocked":
        return "blocked: its links are refused"
    if link == "connecting":
        words = "connecting"
    elif link == "backing_off":
        retry = peer.get("retry_in")
        words = "link down" + _since(changed, now_ms)
        if retry:
            words += f", retrying in {duration(float(retry))}"
    else:
        words = "link down" + _since(changed, now_ms) + ", not dialling"
    return words + (f"; last error: {error}" if error else "")


def status_lines(result: dict[str, Any], now_ms: int | None = None) -> list[str]:
    """What ``chinwag status`` prints for the admin socket's ``status`` answer."""
    lines = [
        f"node {result['name']} ({result['node_id']})",
        *([f"  fingerprint {result['fingerprint']}"] if result.get("fingerprint") else []),
        f"  running for {duration(result['uptime_s'])}"
        + (f", version {result['version']}" if result.get("version") else ""),
        f"  {result['connections']} device connection(s), "
        f"{result['users_online']} of {result['users']} user(s) online",
    ]
    waiting = [q for q in result["queues"] if q["max_unacked"] > 0]
    if waiting:
        lines.append("  messages waiting for devices (not yet seen by a user's slowest device):")
        for queue in waiting:
            lines.append(f"    {queue['user']}: {queue['max_unacked']}")
    else:
        lines.append("  no messages waiting for devices")
    store = result["store"]
    lines.append(
        f"  storage: {store['commits']} writes, {store['pending']} waiting to be written, "
        f"space reserved {store['map_size'] // (1 << 20)} MiB"
    )
    actions = result.get("actions")
    if actions and (actions.get("applied") or actions.get("refused")):
        lines.append(
            f"  edits, deletes and reactions: {actions['applied']} applied, "
            f"{actions['refused']} refused (not the sender's to make)"
        )
    peers = result["peers"]
    if not peers:
        lines.append("  no peers")
    for peer in peers:
        lines.append(f"  peer {peer['name'] or '?'} ({peer['node_id']}): {peer['state']}")
        lines.append(f"    {link_words(peer, now_ms)}")
        outbox = f"    {peer['outbox']} message(s) waiting to be sent to it"
        if peer.get("outbox_oldest_s") is not None:
            outbox += f", oldest {duration(peer['outbox_oldest_s'])}"
        lines.append(outbox)
        lines.append(
            f"    {peer['sent']} sent, {peer['received']} received, "
            f"{peer['refused']} refused (forged or misaddressed)"
        )
    return lines


__all__ = ["duration", "link_words", "status_lines"]
