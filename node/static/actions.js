// Actions on messages in the web client (issue 17): a menu on each message
// (reply, react, edit, delete; on hover, focus, right click or long press),
// edited and deleted states, reply previews that jump to the quoted message,
// reaction chips with counts. It plugs into app.js through
// window.chinwag.hooks (the list in app.js) and speaks the device
// frames edit, delete, react and send.reply_to (docs/protocol.md, 5.7).

const { app } = window.chinwag;
const { state, call, el, msgKey, queueRender, showError, clearError, describe } = app;

const ACTION_KINDS = new Set(["edit", "delete", "react"]);
const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢"];
const LONG_PRESS_MS = 500;
const EXCERPT_CHARS = 100;

// The reply being written and the message being edited (one of each at most).
const local = { replyTo: null, editing: null };

function me() {
  return `${state.session.user}@${state.session.nodeId}`;
}

function userOf(wire) {
  return wire && typeof wire === "object" ? `${wire.u}@${wire.n}` : "?";
}

function shownUser(key) {
  const at = key.lastIndexOf("@");
  const [u, n] = [key.slice(0, at), key.slice(at + 1)];
  if (n === state.session.nodeId) return u;
  return `${u}@${state.labels.get(n) || n.slice(0, 8)}`;
}

function touch(item) {
  item.rev = (item.rev || 0) + 1;
}

// The message an action names: by its sender's node for edit and delete,
// by id alone for a reaction (anyone's message).
function findTarget(frame) {
  const target = String(frame.body && frame.body.target);
  if (frame.kind !== "react") return state.byId.get(msgKey(frame.origin || frame.from.n, target));
  const conv = [...state.conversations.values()].find((c) =>
    c.messages.some((m) => String(m.id) === target),
  );
  return conv ? conv.messages.find((m) => String(m.id) === target) : null;
}

// hook "frame": an action from the stream changes the message it names;
// it is no line of its own. (History pages never hold actions.)
function onAction(frame) {
  if (!ACTION_KINDS.has(frame.kind)) return undefined;
  const item = findTarget(frame);
  const body = frame.body || {};
  const sender = userOf(frame.from);
  if (!item || item.deleted) return null;
  if (frame.kind !== "react" && item.sender && item.sender !== sender) return null;
  if (frame.kind === "edit" && typeof body.text === "string") {
    item.text = body.text;
    item.edited = true;
  } else if (frame.kind === "delete") {
    item.text = "";
    item.attachments = null; // the node dropped them with the text
    item.deleted = true;
    item.reactions = {};
    if (local.editing === item) stopEditing();
  } else if (frame.kind === "react" && typeof body.emoji === "string") {
    const reactions = { ...(item.reactions || {}) };
    const users = (reactions[body.emoji] || []).filter((u) => u !== sender);
    if (!body.remove) users.push(sender);
    if (users.length) reactions[body.emoji] = users;
    else delete reactions[body.emoji];
    item.reactions = reactions;
  }
  touch(item);
  queueRender();
  return null;
}

// hook "message": a message's current state, as the node shows it.
function decorate(item, frame) {
  item.sender = userOf(frame.from);
  item.edited = Boolean(frame.edited);
  if (frame.deleted) {
    item.deleted = true;
    item.text = "";
    item.attachments = null;
  }
  const quoted = frame.body && frame.body.reply_to;
  if (quoted && typeof quoted === "object") {
    item.replyTo = { id: String(quoted.id), from: userOf(quoted.from), excerpt: quoted.excerpt || "" };
  }
  if (frame.reactions && typeof frame.reactions === "object") {
    const reactions = {};
    for (const [emoji, users] of Object.entries(frame.reactions)) {
      if (Array.isArray(users) && users.length) reactions[emoji] = users.map(userOf);
    }
    item.reactions = reactions;
  }
  touch(item);
}

// hook "compose": the message being written answers local.replyTo.
function compose(item, conv) {
  if (!local.replyTo) return;
  const target = local.replyTo;
  if (target.convKey !== conv.key) {
    setReply(null); // chosen in another conversation: a plain message here
    return;
  }
  item.replyTo = { id: String(target.id), from: target.sender || me(), excerpt: target.text.slice(0, EXCERPT_CHARS) };
  setReply(null);
}

// hook "submit": while editing, the composer's text replaces the message's.
function submit(conv, text) {
  const item = local.editing;
  if (!item) return undefined;
  if (item.convKey !== conv.key) {
    stopEditing(); // chosen in another conversation: send this as a message
    return undefined;
  }
  stopEditing();
  $("composer-text").value = "";
  act({ t: "edit", id: item.id, text }, "edit");
  return true;
}

async function act(frame, what) {
  clearError();
  try {
    await call(frame);
  } catch (err) {
    showError(`Could not ${what} the message: ${describe(err)}`);
  }
}

function $(id) {
  return document.getElementById(id);
}

// ------------------------------------------------------------------ the banner
// A line above the composer: "Replying to …" or "Editing your message", with Cancel.
function banner() {
  let node = $("action-banner");
  if (!node) {
    node = el("div", { id: "action-banner", class: "action-banner", role: "status", hidden: true });
    $("composer").before(node);
  }
  return node;
}

function showBanner(text) {
  const node = banner();
  if (!text) {
    node.hidden = true;
    node.replaceChildren();
    return;
  }
  node.hidden = false;
  node.replaceChildren(
    el("span", { class: "action-banner-text" }, text),
    el("button", { type: "button", class: "action-cancel", onclick: cancel }, "Cancel"),
  );
}

function setReply(item) {
  local.replyTo = item;
  if (item) local.editing = null;
  showBanner(item ? `Replying to ${item.mine ? "you" : item.from}: ${item.text.slice(0, 60)}` : "");
}

function startEditing(item) {
  local.editing = item;
  local.replyTo = null;
  showBanner("Editing your message");
  const box = $("composer-text");
  box.value = item.text;
  box.focus();
}

function stopEditing() {
  local.editing = null;
  showBanner("");
}

function cancel() {
  if (local.editing) $("composer-text").value = "";
  local.replyTo = null;
  stopEditing();
  $("composer-text").focus();
}

// ------------------------------------------------------------------ the menu
function closeMenus(except) {
  for (const menu of document.querySelectorAll(".msg-menu")) {
    if (menu !== except) {
      menu.hidden = true;
      const button = menu.parentElement && menu.parentElement.querySelector(".msg-menu-button");
      if (button) button.setAttribute("aria-expanded", "false");
    }
  }
}

function toggleMenu(li, open) {
  const menu = li.querySelector(".msg-menu");
  if (!menu) return;
  const show = open === undefined ? menu.hidden : open;
  closeMenus(menu);
  menu.hidden = !show;
  li.querySelector(".msg-menu-button").setAttribute("aria-expanded", String(show));
  if (show) {
    const first = menu.querySelector("button");
    if (first) first.focus();
  }
}

function react(item, emoji) {
  const mine = (item.reactions && item.reactions[emoji]) || [];
  const frame = { t: "react", id: item.id, emoji };
  if (mine.includes(me())) frame.remove = true;
  act(frame, "react to");
}

// Handlers find their message element when they run: app.js patches an
// element in place with freshly rendered children (closures over the fresh
// element would point at a detached one).
function menuFor(item) {
  const choose = (fn) => (e) => {
    toggleMenu(e.currentTarget.closest("li.message"), false);
    fn();
  };
  const items = [
    el("button", { type: "button", role: "menuitem", class: "act-reply", onclick: choose(() => {
      setReply(item);
      $("composer-text").focus();
    }) }, "Reply"),
    ...QUICK_EMOJI.map((emoji) =>
      el("button", {
        type: "button", role: "menuitem", class: "act-react", "aria-label": `React ${emoji}`,
        onclick: choose(() => react(item, emoji)),
      }, emoji),
    ),
  ];
  if (item.mine) {
    items.push(
      el("button", { type: "button", role: "menuitem", class: "act-edit", onclick: choose(() => startEditing(item)) }, "Edit"),
      el("button", { type: "button", role: "menuitem", class: "act-delete", onclick: choose(() => {
        if (window.confirm("Delete this message for everyone?")) act({ t: "delete", id: item.id }, "delete");
      }) }, "Delete"),
    );
  }
  const menu = el("div", { class: "msg-menu", role: "menu", hidden: true }, ...items);
  menu.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      const li = e.currentTarget.closest("li.message");
      toggleMenu(li, false);
      li.querySelector(".msg-menu-button").focus();
    }
  });
  return menu;
}

// ------------------------------------------------------------------ rendering
function jumpTo(id) {
  const li = document.querySelector(`#messages li.message[data-id="${CSS.escape(id)}"]`);
  if (!li) {
    showError("The quoted message is further back: scroll up to load it.");
    return;
  }
  li.scrollIntoView({ block: "center" });
  li.classList.add("highlight");
  setTimeout(() => li.classList.remove("highlight"), 2000);
}

// hook "renderMessage": the parts of a message this module owns.
function renderMessage(li, m) {
  if (m.kind !== "text") return;
  let text = li.querySelector(".msg-text");
  if (!text) {
    // No text line (a message of files only, or deleted): the parts below need one.
    text = el("p", { class: "msg-text" });
    const files = li.querySelector(".attachments");
    if (files) files.before(text);
    else li.append(text);
  }
  if (m.replyTo) {
    const quoted = m.replyTo.excerpt ? m.replyTo.excerpt : "deleted message";
    text.before(
      el("button", {
        type: "button", class: "reply-preview", title: "Show the quoted message",
        onclick: () => jumpTo(m.replyTo.id),
      }, el("span", { class: "reply-from" }, shownUser(m.replyTo.from)), " ", quoted),
    );
  }
  if (m.deleted) {
    li.classList.add("deleted");
    text.textContent = "This message was deleted.";
    text.classList.add("msg-deleted");
    return; // no menu, no reactions
  }
  if (m.edited) text.after(el("span", { class: "msg-edited" }, "(edited)"));
  const reactions = Object.entries(m.reactions || {});
  if (reactions.length) {
    li.append(
      el("div", { class: "reactions" }, ...reactions.map(([emoji, users]) =>
        el("button", {
          type: "button", class: "reaction", "aria-pressed": String(users.includes(me())),
          title: users.map(shownUser).join(", "), dataset: { emoji },
          onclick: () => react(m, emoji),
        }, `${emoji} ${users.length}`),
      )),
    );
  }
  if (!m.id || m.state === "pending" || m.state === "failed") return;
  const button = el("button", {
    type: "button", class: "msg-menu-button", "aria-label": "Message actions",
    "aria-haspopup": "menu", "aria-expanded": "false",
    onclick: (e) => toggleMenu(e.currentTarget.closest("li.message")),
  }, "⋯");
  li.append(button, menuFor(m));
}

// Right click and long press open a message's menu (delegated: see menuFor).
function menuHolder(target) {
  const li = target && target.closest ? target.closest("#messages li.message") : null;
  return li && li.querySelector(".msg-menu") ? li : null;
}

document.addEventListener("contextmenu", (e) => {
  const li = menuHolder(e.target);
  if (!li) return;
  e.preventDefault();
  toggleMenu(li, true);
});
let pressTimer = null;
document.addEventListener("touchstart", (e) => {
  const li = menuHolder(e.target);
  if (li) pressTimer = setTimeout(() => toggleMenu(li, true), LONG_PRESS_MS);
}, { passive: true });
for (const end of ["touchend", "touchmove", "touchcancel"]) {
  document.addEventListener(end, () => clearTimeout(pressTimer), { passive: true });
}

document.addEventListener("click", (e) => {
  if (!e.target.closest || !e.target.closest(".msg-menu, .msg-menu-button")) closeMenus(null);
});
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && (local.editing || local.replyTo)) cancel();
});
// A reply or an edit belongs to the conversation it was chosen in: typing in
// another one drops it (app.js has no hook for switching conversations).
for (const type of ["focus", "input"]) {
  $("composer-text").addEventListener(type, () => {
    const chosen = local.editing || local.replyTo;
    if (chosen && chosen.convKey !== state.openKey) {
      local.replyTo = null;
      stopEditing();
    }
  });
}

const { hooks } = window.chinwag;
hooks.action.push(onAction);
hooks.decorate.push(decorate);
hooks.compose.push(compose);
hooks.submit.push(submit);
hooks.message.push((item, li) => renderMessage(li, item));
