"""``chinwag chat``: the full-screen terminal client (textual).

The screen: a status line; on the left the conversations (unread counts, last
message) and the contacts with presence; on the right the open conversation
and the input line, which takes messages and ``/commands``. The network side
is :class:`~chinwag.cli.chat_session.ChatSession`, a trio task hosted on this
app's asyncio loop by :class:`~chinwag.cli.trio_bridge.TrioGuest`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import outcome
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from chinwag.node.client import ClientError, LoginResult
from chinwag.node.history import file_label, human_size

from .chat_commands import (
    HELP,
    ActionCommand,
    AttachCommand,
    BlockCommand,
    Command,
    CommandError,
    ContactCommand,
    GroupCommand,
    LocalCommand,
    NameCommand,
    OpenChat,
    OpenHit,
    ReceiptsCommand,
    SaveCommand,
    SearchCommand,
    parse_command,
)
from .chat_model import MAX_LOADED, AddressError, ChatModel, clean
from .chat_session import Backoff, Change, ChatSession
from .chat_state import StateFile
from .chat_view import (
    contacts_text,
    conversation_prompt,
    conversation_title,
    message_log,
    typing_text,
    when,
)
from .trio_bridge import BridgeBusy, TrioGuest

log = logging.getLogger(__name__)


#: The screen is redrawn at most this often (seconds); while catching up on a
#: backlog, at most every ``CATCHUP_REDRAW_INTERVAL``: a redraw of the list
#: and the log costs milliseconds, and the network side waits for it.
REDRAW_INTERVAL = 0.05
CATCHUP_REDRAW_INTERVAL = 0.5
#: Characters of a message shown per ``/search`` hit.
EXCERPT_CHARS = 60
#: An upload (``/attach``) or download (``/save``) gets this long (seconds).
FILE_TIMEOUT = 300.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class SessionChanged(Message):
    """The network side changed the model; what changed is collected on the app."""


class ChatApp(App[None]):
    """The terminal chat client for one device."""

    TITLE = "chinwag"
    ENABLE_COMMAND_PALETTE = False  # ctrl+p is "previous conversation" here
    CSS = """
    #status { height: 1; background: $boost; padding: 0 1; }
    #side { width: 40; border-right: solid $primary-darken-2; }
    .heading { height: 1; text-style: bold; padding: 0 1; background: $panel; }
    #conversations { height: 2fr; border: none; }
    #contacts-box { height: 1fr; }
    #contacts { padding: 0 1; }
    #title { height: 1; padding: 0 1; background: $panel; }
    #log { height: 1fr; padding: 0 1; }
    #notice { height: auto; max-height: 14; padding: 0 1; }
    #notice.error { color: $error; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "step(1)", "next conversation", priority=True),
        Binding("ctrl+p", "step(-1)", "previous conversation", priority=True),
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("pageup", "older", "older messages", priority=True),
        Binding("pagedown", "newer", "newer messages", priority=True),
    ]

    def __init__(
        self,
        server: str,
        login: LoginResult,
        model: ChatModel,
        state: StateFile,
        *,
        backoff: Backoff = Backoff(),
        timeout: float = 10.0,
        on_unauthorized: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._typing_timer: Timer | None = None
        self.model = model
        self.login = login
        self.timeout = timeout
        self.session = ChatSession(
            server,
            login,
            model,
            state,
            self._from_network,
            backoff=backoff,
            timeout=timeout,
            on_unauthorized=on_unauthorized,
        )
        self.bridge = TrioGuest()
        self._changed: set[str] = set()
        self._notices: list[Change] = []
        self._posted = False
        self._shown: str | None = None
        self._drawn_at = 0.0
        #: The hits of the last ``/search``: (conversation key, msg frame).
        self._hits: list[tuple[str, dict[str, Any]]] = []
        #: The message ``/open`` jumped to: (conversation key, seq), drawn marked.
        self._marked: tuple[str, int] | None = None

    # -- layout -------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="status")
        with Horizontal():
            with Vertical(id="side"):
                yield Static("Conversations  ctrl+n/ctrl+p", classes="heading")
                yield OptionList(id="conversations")
                yield Static("Contacts", classes="heading")
                with VerticalScroll(id="contacts-box"):
                    yield Static(id="contacts")
            with Vertical():
                yield Static(id="title")
                with VerticalScroll(id="log"):
                    yield Static(id="messages")
                yield Static(id="typing")
                yield Static(id="notice")
                yield Input(placeholder="a message, or /help", id="input")

    def on_mount(self) -> None:
        self._render_status()
        self._render_contacts()
        self._render_conversations()
        self._render_log()
        self.query_one("#input", Input).focus()
        self.bridge.start(self.session.run, on_done=self._network_done)
        # A typing line runs out without any frame (6 s after the last start).
        self._typing_timer = self.set_interval(1.0, self._render_typing)

    async def on_unmount(self) -> None:
        if self._typing_timer is not None:
            self._typing_timer.stop()  # stopping the network side may take a while
        await self.bridge.stop(self.timeout)
        try:
            self.session.save_now()
        except OSError as exc:
            log.warning("could not save the chat state: %s", exc)

    def _network_done(self, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error) and self.is_running:
            self._notice(f"the network side stopped: {result.error!r}", error=True)

    # -- from the network side ------------------------------------------------------
    def _from_network(self, change: Change) -> None:
        """Collect changes; at most one :class:`SessionChanged` waits in the queue.

        A backlog of thousands of messages is then drawn a few times, not once
        per message, and textual's message queue stays bounded.
        """
        if change.kind == "notice":
            self._notices.append(change)
            del self._notices[:-4]
        elif change.kind == "messages":
            self._changed.add(change.key or "")
        else:
            self._changed.add(change.kind)
        if not self._posted:
            self._posted = self.post_message(SessionChanged())

    def on_session_changed(self, message: SessionChanged) -> None:
        busy = self.session.catching_up is not None
        interval = CATCHUP_REDRAW_INTERVAL if busy else REDRAW_INTERVAL
        wait = self._drawn_at + interval - time.monotonic()
        if wait > 0:
            # ``_posted`` stays set: changes collect until the timer draws them.
            self.set_timer(wait, self._draw_changes)
            return
        self._draw_changes()

    def _draw_changes(self) -> None:
        self._posted = False
        self._drawn_at = time.monotonic()
        changed, self._changed = self._changed, set()
        notices, self._notices = self._notices, []
        if not self.is_running:
            return  # shutting down: the widgets may be gone already
        for notice in notices:
            self._notice(notice.text, error=notice.error)
        if "status" in changed:
            self._render_status()
        if "contacts" in changed:
            self._render_contacts()
        if changed - {"status", "contacts"}:
            self._render_conversations()
            if changed & {"conversations", self.model.current or ""}:
                self._render_log()

    # -- drawing ------------------------------------------------------------------
    def _render_status(self) -> None:
        session = self.session
        text = Text(clean(f"{self.login.user}@{self.login.node_name}"), style="bold")
        text.append(clean(f"  device {self.login.device}  "), style="dim")
        text.append(clean(session.status), style="green" if session.connected else "yellow")
        self.query_one("#status", Static).update(text)

    def _render_contacts(self) -> None:
        self.query_one("#contacts", Static).update(contacts_text(self.model, _now_ms()))

    def _render_conversations(self, *, follow: bool = False) -> None:
        """Redraw the list; the highlight stays on its conversation (someone
        browsing with the arrow keys is not moved), or with ``follow`` goes to
        the open one."""
        listing = self.query_one("#conversations", OptionList)
        highlighted = listing.highlighted_option
        ordered = self.model.ordered()
        keys = [c.key for c in ordered]
        target = self.model.current
        if not follow and highlighted is not None and highlighted.id in keys:
            target = highlighted.id
        listing.clear_options()
        listing.add_options([Option(conversation_prompt(self.model, c), id=c.key) for c in ordered])
        if target in keys:
            listing.highlighted = keys.index(target)

    def _render_log(self) -> None:
        conv = self.model.conversations.get(self.model.current or "")
        scroller = self.query_one("#log", VerticalScroll)
        # Follow new messages, unless the reader has scrolled up in this conversation.
        follow = self._shown != self.model.current or scroller.scroll_y >= scroller.max_scroll_y
        self._shown = self.model.current
        self.query_one("#title", Static).update(conversation_title(self.model, conv))
        marked = self._marked[1] if self._marked and self._marked[0] == self._shown else 0
        self.query_one("#messages", Static).update(
            message_log(self.model, conv, _now_ms(), marked=marked)
        )
        if follow:
            self.call_after_refresh(scroller.scroll_end, animate=False)
        self._render_typing()

    def _render_typing(self) -> None:
        # Also run by a timer, which can fire while the app is torn down.
        line = self.query("#typing").results(Static)
        widget = next(line, None)
        if widget is None:
            return
        conv = self.model.conversations.get(self.model.current or "")
        widget.update(typing_text(self.model, conv, time.monotonic()))

    async def _load_receipts(self, key: str) -> None:
        try:
            await asyncio.wait_for(self.bridge.submit(self.session.receipts, key), self.timeout)
        except (ClientError, BridgeBusy, TimeoutError) as exc:
            log.info("receipts of %s not loaded: %s", key, exc)

    def _notice(self, text: str, *, error: bool = False) -> None:
        notice = self.query_one("#notice", Static)
        # Notices quote the node and peers (error messages, titles, addresses).
        notice.update(Text(clean(text)))
        notice.set_class(error, "error")

    # -- switching ----------------------------------------------------------------
    def _select(self, key: str | None) -> None:
        self.model.select(key)
        self._render_conversations(follow=True)
        self._render_log()
        self.bridge.call_soon(self.session.mark_dirty)
        self.bridge.call_soon(self.session.mark_read, key)
        conv = self.model.conversations.get(key or "")
        if key is not None and conv is not None and not conv.fetched:
            self.run_worker(self._history(self.session.newest, key), group="history")
        if key is not None and conv is not None:
            self.run_worker(self._load_receipts(key), group="receipts")

    async def _history(self, call: Callable[[str], Any], key: str) -> int | None:
        """A page request of the session (newest, older); None if it failed."""
        try:
            return int(await asyncio.wait_for(self.bridge.submit(call, key), self.timeout * 2))
        except ClientError as exc:
            self._notice(f"could not load messages: {exc.message} ({exc.code})", error=True)
        except (BridgeBusy, TimeoutError):
            self._notice("could not load messages: no answer in time", error=True)
        return None

    # -- scrolling back ---------------------------------------------------------------
    def action_older(self) -> None:
        """PageUp: scroll up; at the top, load the next older page from the node."""
        scroller = self.query_one("#log", VerticalScroll)
        if scroller.scroll_y > 0:
            scroller.scroll_page_up(animate=False)
            return
        conv = self.model.conversations.get(self.model.current or "")
        if conv is None:
            return
        if conv.complete:
            self._notice("this is the first message of the conversation")
            return
        self.run_worker(self._load_older(conv.key), group="older", exclusive=True)

    def action_newer(self) -> None:
        self.query_one("#log", VerticalScroll).scroll_page_down(animate=False)

    async def _load_older(self, key: str) -> None:
        scroller = self.query_one("#log", VerticalScroll)
        self._notice("loading older messages…")
        added = await self._history(self.session.older, key)
        if added is None or key != self.model.current:
            return
        height = scroller.virtual_size.height
        self._render_log()

        def keep_place() -> None:
            # What was at the top stays in view: scroll down by what was added.
            scroller.scroll_to(y=max(0, scroller.virtual_size.height - height), animate=False)

        self.call_after_refresh(keep_place)
        conv = self.model.conversations.get(key)
        first = conv is not None and conv.complete
        self._notice(f"{added} older messages" + (" (the first one is on top)" if first else ""))

    # -- search -------------------------------------------------------------------------
    async def _search(self, query: str) -> None:
        try:
            call = self.bridge.submit(self.session.search, query)
            self._hits = await asyncio.wait_for(call, self.timeout * 2)
        except ClientError as exc:
            self._notice(f"search failed: {exc.message} ({exc.code})", error=True)
            return
        except (BridgeBusy, TimeoutError):
            self._notice("search: no answer in time", error=True)
            return
        if not self._hits:
            self._notice(f"nothing found for {query!r}")
            return
        lines = [f"{len(self._hits)} newest hits for {query!r}; /open N goes there:"]
        now = _now_ms()
        for number, (key, frame) in enumerate(self._hits, 1):
            found = self.model.entry_of(frame)
            if found is None:
                continue
            entry = found[1]
            sender = "you" if entry.mine else self.model.person(entry.sender)
            text = clean(entry.text).replace("\n", " ")
            excerpt = text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"
            stamp = when(entry.ts, now)
            lines.append(f"{number}. {self.model.display(key)} {stamp} {sender}: {excerpt}")
        self._notice("\n".join(lines))

    async def _open_hit(self, number: int) -> None:
        if not 1 <= number <= len(self._hits):
            self._notice(f"no hit {number}: /search first", error=True)
            return
        key, frame = self._hits[number - 1]
        seq = frame.get("seq")
        seq = seq if isinstance(seq, int) else 0
        try:
            conv = self.model.open(key)
        except AddressError as exc:
            self._notice(str(exc), error=True)
            return
        self._marked = (conv.key, seq)
        self._select(conv.key)
        if not conv.fetched and await self._history(self.session.newest, conv.key) is None:
            return
        # Page back until the hit is held (bounded: MAX_LOADED entries).
        while not (conv.oldest_seq() and conv.oldest_seq() <= seq) and not conv.complete:
            if len(conv.entries) >= MAX_LOADED:
                break
            if not await self._history(self.session.older, conv.key):
                break
        if self.model.current != conv.key:
            return
        self._render_log()
        line = 0
        for entry in conv.entries:
            if entry.seq == seq:
                break
            line += 1 + entry.text.count("\n")
        scroller = self.query_one("#log", VerticalScroll)
        self.call_after_refresh(scroller.scroll_to, y=max(0, line - 2), animate=False)
        self._notice(f"hit {number} in {self.model.title(conv)} (marked)")

    def action_step(self, delta: int) -> None:
        key = self.model.step(delta)
        self._select(key)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self._select(event.option.id)
        self.query_one("#input", Input).focus()

    # -- the input line -------------------------------------------------------------
    def on_input_changed(self, event: Input.Changed) -> None:
        typing = bool(event.value.strip()) and not event.value.startswith("/")
        self.bridge.call_soon(self.session.typing_input, self.model.current, typing)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        line = event.value
        event.input.value = ""
        if not line.strip():
            return
        if line.startswith("//"):
            self._send(line[1:])
        elif line.startswith("/"):
            try:
                command = parse_command(line[1:])
            except CommandError as exc:
                self._notice(str(exc), error=True)
                return
            self._run_command(command)
        else:
            self._send(line)

    def _send(self, text: str) -> None:
        key = self.model.current
        if key is None:
            self._notice("no conversation open: /chat ADDRESS first", error=True)
            return
        try:
            self.model.queue_send(key, text)
        except OverflowError as exc:
            self._notice(str(exc), error=True)
            return
        self._notice("")
        self._render_conversations(follow=True)
        self._render_log()
        self.bridge.call_soon(self.session.kick)

    def _run_command(self, command: Command) -> None:
        if isinstance(command, OpenChat):
            try:
                conv = self.model.open(command.address)
            except AddressError as exc:
                self._notice(str(exc), error=True)
                return
            self._notice(f"chatting with {self.model.title(conv)}")
            self._select(conv.key)
        elif isinstance(command, LocalCommand):
            self._run_local(command.name)
        elif isinstance(command, SearchCommand):
            self._notice(f"searching for {command.query!r}…")
            self.run_worker(self._search(command.query), group="search", exclusive=True)
        elif isinstance(command, OpenHit):
            self.run_worker(self._open_hit(command.number), group="search", exclusive=True)
        elif isinstance(command, AttachCommand):
            self._start_attach(command.path)
        elif isinstance(command, SaveCommand):
            self._save(command)
        elif isinstance(command, ActionCommand):
            self._act(command)
        else:
            self._notice(f"{_describe(command)}…")
            self.run_worker(self._run_remote(command), group="commands")

    def _start_attach(self, text: str) -> None:
        key = self.model.current
        if key is None:
            self._notice("no conversation open: /chat ADDRESS first", error=True)
            return
        path = Path(text).expanduser()
        if not path.is_file():
            self._notice(f"/attach: no such file {text}", error=True)
            return
        self.run_worker(self._send_file(key, path), group="files")

    async def _send_file(self, key: str, path: Path) -> None:
        self._notice(f"uploading {path.name}…")
        try:
            call = self.bridge.submit(self.session.upload, path)
            attachment = await asyncio.wait_for(call, FILE_TIMEOUT)
        except ClientError as exc:
            self._notice(f"/attach failed: {exc.message} ({exc.code})", error=True)
            return
        except (BridgeBusy, TimeoutError):
            self._notice("/attach: no answer in time", error=True)
            return
        try:
            self.model.queue_send(key, "", files=[attachment])
        except OverflowError as exc:
            self._notice(str(exc), error=True)
            return
        self._notice("")
        self._render_log()
        self.bridge.call_soon(self.session.kick)

    def _save(self, command: SaveCommand) -> None:
        files = self.model.files_in(self.model.current)
        if command.number is None:
            listed = [f"{n}. {clean(file_label(f))}" for n, f in enumerate(files, 1)]
            self._notice(
                "\n".join(["files here (/save N [PATH]):", *listed]) if files else "no files here"
            )
            return
        if command.number > len(files):
            self._notice(f"/save: there are {len(files)} file(s) here", error=True)
            return
        item = files[command.number - 1]
        # A directory (the current one by default) keeps the name the node serves.
        dest = Path(command.path or ".").expanduser()
        self.run_worker(self._download(str(item["sha256"]), dest), group="files")

    async def _download(self, sha: str, dest: Path) -> None:
        self._notice(f"saving {dest}…")
        try:
            call = self.bridge.submit(self.session.save, sha, dest)
            saved, size = await asyncio.wait_for(call, FILE_TIMEOUT)
        except ClientError as exc:
            self._notice(f"/save failed: {exc.message} ({exc.code})", error=True)
            return
        except (BridgeBusy, TimeoutError):
            self._notice("/save: no answer in time", error=True)
            return
        self._notice(f"saved {saved} ({human_size(size)})")

    def _act(self, command: ActionCommand) -> None:
        """``/edit``, ``/delete``, ``/reply``, ``/react`` on the open conversation's
        last message (the last of your own for edit and delete)."""
        conv = self.model.conversations.get(self.model.current or "")
        own = command.kind in ("edit", "delete")
        target = conv.last_target(self.model.me, own=own) if conv is not None else None
        if conv is None or target is None:
            whose = "of yours " if own else ""
            self._notice(f"/{command.kind}: no message {whose}here to act on", error=True)
            return
        if command.kind == "reply":
            try:
                self.model.queue_send(conv.key, command.text, reply_to=target)
            except OverflowError as exc:
                self._notice(str(exc), error=True)
                return
            self._render_log()
            self.bridge.call_soon(self.session.kick)
            return
        kind = command.kind
        if kind == "react" and self.model.me in target.reactions.get(command.text, []):
            kind = "unreact"  # the same emoji again takes it back
        self._notice(f"{command.kind}…")
        self.run_worker(self._run_action(kind, target.id, command.text), group="commands")

    async def _run_action(self, kind: str, msg_id: int, text: str) -> None:
        try:
            call = self.bridge.submit(self.session.act, kind, msg_id, text)
            await asyncio.wait_for(call, self.timeout * 2)
        except ClientError as exc:
            self._notice(f"/{kind} failed: {exc.message} ({exc.code})", error=True)
            return
        except BridgeBusy as exc:
            self._notice(f"/{kind}: {exc}", error=True)
            return
        except TimeoutError:
            self._notice(f"/{kind}: no answer in time", error=True)
            return
        self._notice("")

    def _run_local(self, name: str) -> None:
        if name == "help":
            self._notice(HELP)
        elif name == "quit":
            self.exit()
        elif name == "retry":
            key = self.model.current
            count = self.model.retry_failed(key) if key else 0
            self._notice(f"resending {count} message(s)" if count else "nothing to resend")
            if count:
                self._render_log()
                self.bridge.call_soon(self.session.kick)

    async def _run_remote(
        self,
        command: ContactCommand | NameCommand | GroupCommand | BlockCommand | ReceiptsCommand,
    ) -> None:
        call: asyncio.Future[Any]
        try:
            if isinstance(command, ContactCommand):
                call = self.bridge.submit(self.session.contact, command.action, command.address)
            elif isinstance(command, BlockCommand):
                call = self.bridge.submit(self.session.block, command.action, command.address)
            elif isinstance(command, ReceiptsCommand):
                call = self.bridge.submit(self.session.set_read_receipts, command.on)
            elif isinstance(command, NameCommand):
                call = self.bridge.submit(self.session.set_name, command.display_name)
            else:
                call = self.bridge.submit(self.session.group, command.op, command.fields)
            result = await asyncio.wait_for(call, self.timeout * 2)
        except ClientError as exc:
            self._notice(f"{_describe(command)} failed: {exc.message} ({exc.code})", error=True)
            return
        except BridgeBusy as exc:
            self._notice(f"{_describe(command)}: {exc}", error=True)
            return
        except TimeoutError:
            self._notice(f"{_describe(command)}: no answer in time", error=True)
            return
        if isinstance(command, ContactCommand):
            self._notice(f"{'added' if command.action == 'add' else 'removed'} contact {result}")
        elif isinstance(command, BlockCommand):
            self._notice(f"{'blocked' if command.action == 'add' else 'unblocked'} {result}")
        elif isinstance(command, ReceiptsCommand):
            self._notice(f"read receipts {'on' if result else 'off'}")
        elif isinstance(command, NameCommand):
            self._notice(f"your display name is {result!r}" if result else "display name cleared")
        else:
            self._group_result(command, result)

    def _group_result(self, command: GroupCommand, result: dict[str, Any]) -> None:
        op = command.op
        if op == "create":
            conv = self.model.open(str(result["group"]))
            conv.title = str(command.fields.get("title", ""))
            self._notice(f"created {result['group']}")
            self._select(conv.key)
        elif op == "add":
            self._notice(
                f"{result['group']}: {result['members']} members "
                "(anyone without you in their contacts is invited)"
            )
        elif op == "remove":
            self._notice(f"{result['group']}: {result['members']} members")
        elif op in ("accept", "decline"):
            key = self.model.resolve(str(result["group"]))
            self.model.invites.pop(key, None)
            if op == "decline" and key in self.model.conversations:
                self.model.conversations[key].left = True
            done = "accepted" if op == "accept" else "declined"
            self._notice(f"{done} {result['group']}")
            self._render_conversations()
        elif op == "invites":
            invites = result.get("invites", [])
            listed = [f"  {i['group']} from {i['by']} {i['title']}" for i in invites]
            self._notice("\n".join(["your invitations:", *listed]) if invites else "no invitations")
        elif op == "leave":
            key = self.model.resolve(str(result["group"]))
            if key in self.model.conversations:
                self.model.conversations[key].left = True
            self._notice(f"left {result['group']}")
            self._render_log()
        elif op == "members":
            lines = [f"{result['group']}: {len(result['members'])} members"]
            for member in result["members"]:
                status = member.get("status", "?")
                shown = member["address"]
                if member.get("display_name"):
                    shown = f"{member['display_name']} ({shown})"
                lines.append(f"  {'●' if status == 'online' else '○'} {shown} {status}")
            self._notice("\n".join(lines))
        elif op == "list":
            groups = result.get("groups", [])
            for item in groups:
                self.model.add_group(str(item["name"]), str(item["host"]), str(item["title"]))
            self._render_conversations()
            listed = [f"  {g['group']} ({g['members']} members) {g['title']}" for g in groups]
            self._notice("\n".join(["your groups:", *listed]) if groups else "no groups")


def _describe(command: Command) -> str:
    if isinstance(command, SearchCommand | OpenHit):
        return str(command)
    if isinstance(command, ContactCommand):
        return f"contact {command.action} {command.address}"
    if isinstance(command, NameCommand):
        return "name"
    if isinstance(command, GroupCommand):
        return f"group {command.op}"
    if isinstance(command, BlockCommand):
        return f"{'block' if command.action == 'add' else 'unblock'} {command.address}"
    if isinstance(command, ReceiptsCommand):
        return f"receipts {'on' if command.on else 'off'}"
    return str(command)
