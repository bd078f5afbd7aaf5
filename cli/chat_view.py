"""How ``chinwag chat`` draws the model: rich ``Text``, never markup.

Message text comes from other people, so it is never parsed as markup and
control characters are replaced (:func:`clean`) before it reaches the
terminal; so are titles, names and labels (:meth:`ChatModel.title`,
:meth:`ChatModel.display`).
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from chinwag.node.history import file_label

from .chat_model import (
    EVENT,
    FAILED,
    NOTE,
    PENDING,
    ChatModel,
    Contact,
    Conversation,
    Entry,
    clean,
)

__all__ = [
    "clean",
    "contacts_text",
    "conversation_prompt",
    "conversation_title",
    "message_log",
    "typing_text",
    "when",
]

PREVIEW_CHARS = 32


def when(ms: int | None, now_ms: int) -> str:
    """``14:03`` today, ``12 Mar 14:03`` before."""
    if not ms:
        return ""
    moment = datetime.fromtimestamp(ms / 1000)
    if moment.date() == datetime.fromtimestamp(now_ms / 1000).date():
        return moment.strftime("%H:%M")
    return moment.strftime("%d %b %H:%M")


def conversation_prompt(model: ChatModel, conv: Conversation) -> Text:
    """Two lines of the conversation list: title (+ unread), last message."""
    out = Text(model.title(conv), style="bold" if conv.unread else "")
    if conv.unread:
        out.append(f" ({conv.unread})", style="bold reverse")
    if conv.left:
        out.append(" (left)", style="dim")
    last = conv.last_message()
    if last is None:
        preview = "no messages yet"
    elif last.deleted:
        preview = "(deleted)"
    else:
        files = " ".join(file_label(f) for f in last.files)
        preview = clean(" ".join(p for p in (last.text, files) if p)).replace("\n", " ")
    if len(preview) > PREVIEW_CHARS:
        preview = preview[: PREVIEW_CHARS - 1] + "…"
    out.append("\n  " + preview, style="dim")
    return out


def _status(model: ChatModel, conv: Conversation, entry: Entry) -> Text:
    if entry.state == PENDING:
        return Text("  sending…", style="yellow")
    if entry.state == FAILED:
        return Text(f"  ✗ failed: {clean(entry.error)} (/retry)", style="bold red")
    # ✓ stored, ✓✓ delivered, ✓✓ read / ✓ read by n (receipts, issue 17).
    tick = model.tick(conv, entry)
    return Text(f"  {tick}", style="bold green" if "read" in tick else "green")


def typing_text(model: ChatModel, conv: Conversation | None, now: float) -> Text:
    """The line under the messages: ``alice is typing…`` (empty if nobody)."""
    if conv is None:
        return Text("")
    return Text(model.typing_line(conv.key, now), style="italic dim")


def message_log(
    model: ChatModel, conv: Conversation | None, now_ms: int, *, marked: int = 0
) -> Text:
    """The open conversation, oldest first; the entry with seq ``marked`` (a
    search hit jumped to) stands out."""
    if conv is None:
        return Text("No conversation open. Type /chat ADDRESS, or /help.", style="dim")
    out = Text()
    if not conv.entries:
        out.append("No messages yet.", style="dim")
    for entry in conv.entries:
        if out:
            out.append("\n")
        if entry.state in (EVENT, NOTE):
            out.append(f"· {clean(entry.text)}", style="italic dim")
            continue
        if marked and entry.seq == marked:
            out.append("▶ ", style="bold yellow")
        stamp = when(entry.ts, now_ms)
        if stamp:
            out.append(stamp + " ", style="dim")
        sender = "you" if entry.mine else model.person(entry.sender)
        out.append(sender, style="bold cyan" if entry.mine else "bold")
        if entry.reply:
            who, _, excerpt = entry.reply.partition(": ")
            quoted = clean(excerpt).replace("\n", " ") or "(deleted)"
            out.append(f" ↳ {model.display(who)}: {quoted[:60]}", style="dim")
        if entry.deleted:
            out.append(": ")
            out.append("(deleted)", style="italic dim")
        else:
            out.append(": " + clean(entry.text))
            for number, item in enumerate(entry.files):
                space = " " if entry.text or number else ""
                out.append(space + clean(file_label(item)), style="bold magenta")
        if entry.edited and not entry.deleted:
            out.append(" (edited)", style="dim")
        if entry.reactions:
            chips = " ".join(f"{clean(e)}{len(u)}" for e, u in entry.reactions.items() if u)
            out.append("  " + chips, style="yellow")
        if entry.mine:
            out.append_text(_status(model, conv, entry))
    return out


def _contact_line(contact: Contact, now_ms: int) -> Text:
    address = clean(contact.address)
    if contact.status == "online":
        return Text.assemble(("● ", "green"), address, (" online", "green"))
    line = Text.assemble(("○ ", "dim"), address, (f" {clean(contact.status)}", "dim"))
    if contact.last_active_at:
        line.append(f" · last active {when(contact.last_active_at, now_ms)}", style="dim")
    return line


def contacts_text(model: ChatModel, now_ms: int) -> Text:
    """Contacts, online first, with their last-active time."""
    if not model.contacts:
        return Text("No contacts. /contact add ADDRESS", style="dim")
    ordered = sorted(model.contacts.values(), key=lambda c: (c.status != "online", c.address))
    return Text("\n").join(_contact_line(c, now_ms) for c in ordered)


def conversation_title(model: ChatModel, conv: Conversation | None) -> Text:
    if conv is None:
        return Text("chinwag", style="bold")
    out = Text(model.title(conv), style="bold")
    if conv.is_group:
        out.append("  group", style="dim")
        if conv.left:
            out.append(" · you are not a member", style="yellow")
    out.append("  from the first message" if conv.complete else "  PageUp: older", style="dim")
    return out
