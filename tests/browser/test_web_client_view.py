"""The chat view of issue 16 in a real browser: the unread count in the title,
desktop notifications (granted through the context, observed through an
init script that records every ``Notification``), muting, closing a
conversation, links that cannot carry HTML, and, across two federated nodes,
display names, node labels, a group's title, owner-only actions and a
remote member's presence fetched when the group is opened. The attach flow
runs once the node serves ``POST /api/blobs``."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import Browsers, NodeProcess
from .pages import Chat, expect

REMOTE_TIMEOUT_MS = 15_000

#: Records notifications instead of showing them; ``__focused`` stands in for
#: the window's focus, which a headless page does not have reliably.
NOTIFICATION_SPY = """
(() => {
  window.__notes = [];
  window.__focused = true;
  const Real = window.Notification;
  class Spy {
    constructor(title, options) {
      window.__notes.push({ title, body: (options || {}).body, tag: (options || {}).tag });
      this.onclick = null;
    }
    close() {}
    static get permission() { return Real ? Real.permission : "denied"; }
    static requestPermission() { return Real.requestPermission(); }
  }
  window.Notification = Spy;
  document.hasFocus = () => window.__focused;
})();
"""


def _chat(browsers: Browsers, node: NodeProcess, context: Any = None) -> Chat:
    if node is browsers.node:
        return Chat(browsers.page(context), node)
    page = (context or browsers.context()).new_page()
    page.goto(node.url)
    return Chat(page, node)


def _notes(chat: Chat) -> list[dict[str, Any]]:
    return chat.page.evaluate("window.__notes")  # type: ignore[no-any-return]


def test_title_count_notifications_mute_and_close(browsers: Browsers, node: NodeProcess) -> None:
    for name in ("alice", "bob"):
        node.signup(name)
    context = browsers.context()
    context.grant_permissions(["notifications"], origin=node.origin)
    context.add_init_script(NOTIFICATION_SPY)
    alice = _chat(browsers, node, context).login("alice")
    expect(alice.page.locator("#notify-button")).to_have_attribute(
        "aria-label", "Turn off notifications"
    )
    bob = _chat(browsers, node).login("bob")
    bob.open_new_chat("alice")
    bob.send_and_confirm("hello alice, are you there?")

    # A background conversation: the title counts it, a notification says who.
    expect(alice.page).to_have_title(f"(1) chinwag · {node.name}")
    expect(alice.conversation(node.address("bob"))).to_be_visible()
    assert _notes(alice) == [
        {"title": "bob", "body": "hello alice, are you there?", "tag": node.address("bob")}
    ]

    # On screen in a focused tab: read, and no notification.
    alice.open_conversation(node.address("bob"))
    expect(alice.page).to_have_title(f"chinwag · {node.name}")
    bob.send_and_confirm("second")
    alice.expect_message("second", "received")
    assert len(_notes(alice)) == 1

    # The same conversation in a tab without focus is notified.
    alice.page.evaluate("window.__focused = false")
    bob.send_and_confirm("third")
    alice.expect_message("third", "received")
    assert _notes(alice)[-1]["body"] == "third"

    # Muted: nothing, and the switch survives a reload (localStorage).
    mute = alice.page.locator("#mute-button")
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    alice.page.reload()
    alice.expect_online()
    expect(alice.page.locator("#mute-button")).to_have_attribute("aria-pressed", "true")
    alice.page.evaluate("window.__focused = false")
    bob.send_and_confirm("fourth")
    alice.expect_message("fourth", "received")
    assert _notes(alice) == []  # the spy is new with the page: nothing since

    # Closed: off the list until the next message, also after a reload.
    alice.page.locator("#close-conv-button").click()
    expect(alice.conversation(node.address("bob"))).to_have_count(0)
    alice.page.reload()
    alice.expect_online()
    expect(alice.page.locator("#conversations li.conversation")).to_have_count(0)
    bob.send_and_confirm("fifth")
    expect(alice.conversation(node.address("bob"))).to_be_visible()


def test_links_are_clickable_and_nothing_is_html(browsers: Browsers, node: NodeProcess) -> None:
    for name in ("alice", "bob"):
        node.signup(name)
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    text = (
        'see https://example.org/a?b=1&c=2, and <img src=x onerror="window.__pwned=1">'
        " <a href=javascript:alert(1)>x</a> javascript:alert(2) www.example.com/x."
    )
    bob.open_new_chat("alice")
    bob.send_and_confirm(text)
    alice.open_conversation(node.address("bob"))
    message = alice.expect_message(text, "received")
    links = message.locator(".msg-text a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://example.org/a?b=1&c=2")
    expect(links.nth(0)).to_have_attribute("rel", "noopener noreferrer")
    expect(links.nth(0)).to_have_attribute("target", "_blank")
    expect(links.nth(1)).to_have_attribute("href", "https://www.example.com/x")
    expect(links.nth(1)).to_have_text("www.example.com/x")
    expect(alice.page.locator("#messages img")).to_have_count(0)
    assert alice.page.evaluate("window.__pwned") is None


def test_names_titles_owner_and_remote_presence_across_nodes(
    browsers: Browsers, node: NodeProcess, attic: NodeProcess, screenshot
) -> None:
    node.signup("alice")
    attic.signup("bob")
    node.http("PUT", "/api/profile", {"display_name": "Alice Liddell"}, node.login("alice"))
    bob_token = attic.login("bob")
    attic.http("PUT", "/api/profile", {"display_name": "Bob Builder"}, bob_token)
    # bob has alice as a contact: her add makes him a member at once. alice
    # does not have bob: his presence reaches her only on demand.
    attic.http("POST", "/api/contacts", {"address": "alice@kitchen"}, bob_token)

    bob = _chat(browsers, attic).login("bob")
    alice = _chat(browsers, node).login("alice")
    form = alice.page.locator("#create-group-form")
    form.get_by_label("Group name").fill("team")
    form.get_by_label("Group title (optional)").fill("The Kitchen Team")
    form.get_by_role("button", name="Create group").click()
    expect(alice.conversation(node.group("team"))).to_have_attribute("aria-current", "true")
    alice.page.get_by_label("Add member").fill("bob@attic")
    alice.page.locator("#add-member-form").get_by_role("button", name="Add").click()

    # bob's node: the title, labels (never a raw node id), no owner actions.
    key = node.group("team")
    expect(bob.conversation(key)).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
    bob.open_conversation(key)
    expect(bob.page.locator("#conv-subtitle")).to_have_text("The Kitchen Team")
    event = bob.page.locator("#messages li.event").last
    # bob's node accepted alice's invitation for him (she is his contact).
    expect(event).to_have_text(re.compile(r"^(Bob Builder|bob) joined$"))
    for text in bob.page.locator("#messages li.event").all_text_contents():
        assert node.node_id[:8] not in text and attic.node_id[:8] not in text, text
    expect(bob.page.locator("#add-member-form")).to_be_hidden()
    expect(bob.page.locator("#leave-group-button")).to_be_visible()
    alice_member = bob.page.locator(
        f'#group-members li.member[data-address="{node.address("alice")}"]'
    )
    expect(alice_member.locator(".member-name")).to_have_text("Alice Liddell")

    # alice's node: bob's presence and name, asked when the group is opened.
    alice.open_conversation(key)
    expect(alice.page.locator("#add-member-form")).to_be_visible()
    bob_member = alice.page.locator(
        f'#group-members li.member[data-address="{attic.address("bob")}"]'
    )
    expect(bob_member.locator(".presence-dot")).to_have_attribute(
        "data-status", "online", timeout=REMOTE_TIMEOUT_MS
    )
    expect(bob_member.locator(".member-name")).to_have_text("Bob Builder")

    # Messages show display names; the address stays in the tooltip.
    bob.send_and_confirm("hi team")
    message = alice.expect_message("hi team", "received", timeout=REMOTE_TIMEOUT_MS)
    expect(message.locator(".msg-from")).to_have_text("Bob Builder")
    expect(message.locator(".msg-from")).to_have_attribute("title", "bob@attic")
    screenshot(alice.page, "group-names-across-nodes")


def _serves_blobs(node: NodeProcess) -> bool:
    """Whether the node has the files API (another branch adds it)."""
    request = urllib.request.Request(node.origin + "/api/blobs", data=b"x", method="POST")
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as exc:
        return exc.code != 404
    except OSError:
        return False
    return True


# A 2x2 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000020000000208020000"
    "00fdd49a730000001649444154789c63f8cfc0f09f81e13f03c3ff0c"
    "0c0c00241c03fd0e4fd3d90000000049454e44ae426082"
)


def test_attach_a_photo_and_a_file(browsers: Browsers, node: NodeProcess, tmp_path) -> None:
    if not _serves_blobs(node):
        pytest.skip("this node does not serve POST /api/blobs (the files branch adds it)")
    for name in ("alice", "bob"):
        node.signup(name)
    photo = tmp_path / "photo.png"
    photo.write_bytes(PNG)
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 100)
    alice = _chat(browsers, node).login("alice")
    bob = _chat(browsers, node).login("bob")
    alice.open_new_chat("bob")
    alice.page.get_by_label("Message", exact=True).fill("look at this")
    alice.page.locator("#attach-input").set_input_files([str(photo), str(notes)])
    alice.expect_message("look at this", "sent")
    bob.open_conversation(node.address("alice"))
    message = bob.expect_message("look at this", "received")
    image = message.locator("img.att-img")
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    chip = message.locator("button.att-file")
    expect(chip).to_contain_text("notes.txt")
    expect(chip).to_contain_text("1.4 KB")  # 1,400 bytes: 1.37 KiB
    message.locator("button.att-image").click()
    expect(bob.page.locator(".lightbox img")).to_have_attribute("src", re.compile(r"^blob:"))
    bob.page.keyboard.press("Escape")
    expect(bob.page.locator(".lightbox")).to_have_count(0)
    # No token in any URL the page asked for.
    assert not [u for u in browsers.requests if "token" in u.lower()]


def test_a_photo_to_a_group_across_nodes_arrives_after_a_restart(
    browsers: Browsers, node: NodeProcess, attic: NodeProcess
) -> None:
    # Issue 16: a photo from alice@kitchen to a group spanning kitchen and
    # attic, seen inline on both; attic was down (SIGKILL) when it was sent,
    # so its node fetches the blob from kitchen once it is back.
    node.signup("alice")
    node.signup("carol")
    attic.signup("bob")
    for owner, name in ((attic, "bob"), (node, "carol")):  # alice's adds need no consent
        owner.http("POST", "/api/contacts", {"address": "alice@kitchen"}, owner.login(name))
    alice = _chat(browsers, node).login("alice")
    form = alice.page.locator("#create-group-form")
    form.get_by_label("Group name").fill("family")
    form.get_by_role("button", name="Create group").click()
    key = node.group("family")
    expect(alice.conversation(key)).to_have_attribute("aria-current", "true")
    for member in ("bob@attic", "carol"):
        field = alice.page.get_by_label("Add member")
        field.fill(member)
        alice.page.locator("#add-member-form").get_by_role("button", name="Add").click()
        # The field empties when the node answered: only then the next add
        # (an answer arriving after the next fill would empty that one).
        expect(field).to_have_value("", timeout=REMOTE_TIMEOUT_MS)
    bob = _chat(browsers, attic).login("bob")
    expect(bob.conversation(key)).to_be_visible(timeout=REMOTE_TIMEOUT_MS)

    attic.kill()
    alice.page.get_by_label("Message", exact=True).fill("the beach")
    alice.page.locator("#attach-input").set_input_files(
        [{"name": "beach.png", "mimeType": "image/png", "buffer": PNG}]
    )
    alice.expect_message("the beach", "sent")
    carol = _chat(browsers, node).login("carol")
    carol.open_conversation(key)
    shown = carol.expect_message("the beach", "received").locator("img.att-img")
    expect(shown).to_have_attribute("src", re.compile(r"^blob:"))

    attic.start()  # same port: bob's tab reconnects by itself
    expect(bob.conversation(key)).to_be_visible(timeout=REMOTE_TIMEOUT_MS)
    bob.open_conversation(key)
    message = bob.expect_message("the beach", "received", timeout=REMOTE_TIMEOUT_MS)
    expect(message.locator("img.att-img")).to_have_attribute(
        "src", re.compile(r"^blob:"), timeout=REMOTE_TIMEOUT_MS
    )


# ------------------------------------------------------------------ the attach UI, node mocked
# Until the node serves the blob API, files.js is checked against the spec
# with Playwright routes for /api/blobs and a scripted /ws (MockNode).

SHA_PHOTO = "a" * 64
SHA_NOTES = "b" * 64
SHA_PREVIEW = "c" * 64


def test_attach_ui_against_the_blob_api(browsers: Browsers, node: NodeProcess, tmp_path) -> None:
    from .test_web_client_review import MockNode

    me = node.address("alice")
    carol = node.address("carol")
    uploads: list[dict[str, Any]] = []
    downloads: list[dict[str, Any]] = []

    def on_send(mock: MockNode, frame: dict[str, Any]) -> None:
        echo = mock.msg(me, frame["text"], carol)
        echo["body"]["attachments"] = frame.get("attachments", [])
        mock.send(mock.ok(frame, echo), echo)

    def upload(route: Any) -> None:
        request = route.request
        name = request.headers["x-chinwag-filename"]
        uploads.append({"headers": request.headers})
        if name.startswith("huge"):
            route.fulfill(
                status=413,
                json={
                    "error": {"code": "file_too_large", "message": "too large", "limit": 25 << 20}
                },
            )
            return
        photo = request.headers["content-type"] == "image/png"
        route.fulfill(
            status=201,
            json={
                "sha256": SHA_PHOTO if photo else SHA_NOTES,
                "size": 70 if photo else 1400,
                "type": request.headers["content-type"],
                "name": urllib.request.unquote(name),
            },
        )

    def download(route: Any) -> None:
        request = route.request
        downloads.append({"url": request.url, "auth": request.headers.get("authorization")})
        png = SHA_PHOTO in request.url or SHA_PREVIEW in request.url
        route.fulfill(
            status=200,
            body=PNG if png else b"shopping list\n",
            content_type="image/png" if png else "application/octet-stream",
        )

    mock = MockNode(node, "alice", on_send=on_send)
    node.signup(mock.user)
    context = browsers.context()
    mock.attach(context)
    context.route(re.compile(r"/api/blobs$"), upload)
    context.route(re.compile(r"/api/blobs/[0-9a-f]{64}"), download)
    alice = Chat(browsers.page(context), node).login("alice")

    photo = tmp_path / "photo ü.png"
    photo.write_bytes(PNG)
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\n" * 100)
    alice.open_new_chat("carol")
    alice.page.get_by_label("Message", exact=True).fill("look at this")
    alice.page.locator("#attach-input").set_input_files([str(photo), str(notes)])
    message = alice.expect_message("look at this", "sent")

    # One message with both files; each upload carried the token in its header.
    (sent,) = mock.sends
    assert [a["sha256"] for a in sent["attachments"]] == [SHA_PHOTO, SHA_NOTES]
    assert sent["attachments"][0]["name"] == "photo ü.png"
    assert [u["headers"]["x-chinwag-filename"] for u in uploads] == [
        "photo%20%C3%BC.png",
        "notes.txt",
    ]
    assert all(u["headers"]["authorization"].startswith("Bearer ") for u in uploads)

    # Shown inline through an object URL; other files as a chip.
    expect(message.locator("img.att-img")).to_have_attribute("src", re.compile(r"^blob:"))
    chip = message.locator("button.att-file")
    expect(chip).to_contain_text("notes.txt")
    expect(chip).to_contain_text("1.4 KB")
    message.locator("button.att-image").click()
    expect(alice.page.locator(".lightbox img")).to_have_attribute("src", re.compile(r"^blob:"))
    alice.page.keyboard.press("Escape")
    expect(alice.page.locator(".lightbox")).to_have_count(0)
    with alice.page.expect_download() as got:
        chip.click()
    assert got.value.suggested_filename == "notes.txt"
    assert downloads and all(d["auth"] and d["auth"].startswith("Bearer ") for d in downloads)
    assert not [d for d in downloads if "token" in d["url"] or "Bearer" in d["url"]]

    # An incoming photo with a preview: the preview is fetched, not the photo.
    incoming = mock.msg(carol, "from carol", me)
    incoming["body"]["attachments"] = [
        {
            "sha256": SHA_PHOTO,
            "name": "big.png",
            "type": "image/png",
            "size": 9_000_000,
            "preview": {
                "sha256": SHA_PREVIEW,
                "type": "image/png",
                "size": 70,
                "width": 2,
                "height": 2,
            },
        }
    ]
    mock.send(incoming)
    shown = alice.expect_message("from carol", "received")
    expect(shown.locator("img.att-img")).to_have_attribute("src", re.compile(r"^blob:"))
    assert any(d["url"].endswith(f"{SHA_PHOTO}?preview=1") for d in downloads)

    # Paste and drop go the same way; a refusal names the limit.
    alice.page.evaluate(
        """() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["x"], "pasted.png", { type: "image/png" }));
      document.getElementById("composer-text").dispatchEvent(
        new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    }"""
    )
    expect(alice.page.locator("#messages li.message")).to_have_count(3)
    assert mock.sends[-1]["attachments"][0]["name"] == "pasted.png"
    alice.page.evaluate(
        """() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["x".repeat(10)], "huge.bin", { type: "application/octet-stream" }));
      document.getElementById("conversation").dispatchEvent(
        new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }"""
    )
    expect(alice.error).to_have_text(re.compile(r"huge\.bin is too large: .*25 MB"))
    assert len(mock.sends) == 2
