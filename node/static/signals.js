// chinwag web client: live signals (issue 17). Typing line, receipt ticks,
// block in the conversation header, the read-receipts switch.
//
// Loaded after app.js, which exposes `window.chinwag.hooks` (moments this file
// hooks into) and `window.chinwag.app` (its state and helpers).

const TYPING_RENEW_MS = 3000; // a `typing start` at most this often while typing
const TYPING_SHOWN_MS = 6000; // a start not renewed disappears after this
const TYPING_NAMES = 2; // names shown before "n people are typing"

const { hooks, app } = window.chinwag;
const { state, $, el } = app;

const typingSent = new Map(); // conv key -> when our last start went out (ms)
const typing = new Map(); // conv key -> Map(user key -> {name, until})
const receipts = new Map(); // conv key -> Map(member key -> {d: BigInt, r: BigInt})
let blocked = null; // Set of blocked "user@<node id>", once loaded
let readReceipts = true;

// ------------------------------------------------------------------ page parts
const typingLine = el("p", { id: "typing-line", class: "typing-line", "aria-live": "polite" });
$("composer").before(typingLine);
const blockButton = el("button", { type: "button", id: "block-button", class: "secondary" }, "Block");
blockButton.hidden = true;
$("conv-subtitle").after(blockButton);
const receiptsBox = el("input", { type: "checkbox", id: "read-receipts" });
receiptsBox.checked = true;
// In the sidebar, under the forms (the top bar has no room on a phone).
$("create-group-form").after(
  el("label", { class: "receipts-switch", for: "read-receipts" }, receiptsBox, " Send read receipts"),
);

function big(value) {
  try {
    return BigInt(value || 0);
  } catch (exc) {
    return 0n;
  }
}

function openConv() {
  return state.openKey ? state.conversations.get(state.openKey) : null;
}

// ------------------------------------------------------------------ typing out
$("composer-text").addEventListener("input", () => {
  const conv = openConv();
  if (!conv || conv.provisional || !state.authed) return;
  const text = $("composer-text").value;
  const now = Date.now();
  const last = typingSent.get(conv.key);
  if (text.trim()) {
    if (last === undefined || now - last >= TYPING_RENEW_MS) {
      typingSent.set(conv.key, now);
      app.sendQuiet({ t: "typing", conv: conv.key, state: "start" });
    }
  } else if (last !== undefined) {
    typingSent.delete(conv.key);
    app.sendQuiet({ t: "typing", conv: conv.key, state: "stop" });
  }
});
// A sent message ends our typing at the node (no stop needed).
$("composer").addEventListener("submit", () => {
  if (state.openKey) typingSent.delete(state.openKey);
});

// ------------------------------------------------------------------ typing in
function onTyping(frame) {
  const user = frame.user || {};
  const who = app.userKey(user.u, user.n);
  let shown = typing.get(frame.conv);
  if (frame.state === "start") {
    if (!shown) typing.set(frame.conv, (shown = new Map()));
    shown.set(who, { name: app.showUser(user.u, user.n), until: Date.now() + TYPING_SHOWN_MS });
  } else if (shown) {
    shown.delete(who);
  }
  renderTyping();
}

function typingText(key) {
  const shown = typing.get(key);
  if (!shown) return "";
  const now = Date.now();
  for (const [who, t] of shown) if (t.until <= now) shown.delete(who);
  const names = [...shown.values()].map((t) => t.name).sort();
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length <= TYPING_NAMES) return `${names.join(" and ")} are typing…`;
  return `${names.length} people are typing…`;
}

function renderTyping() {
  const text = state.openKey ? typingText(state.openKey) : "";
  if (typingLine.textContent !== text) typingLine.textContent = text;
}
setInterval(renderTyping, 1000);

// ------------------------------------------------------------------ receipts
function mergeReceipt(conv, user, delivered, read) {
  if (!readReceipts) read = undefined;
  let members = receipts.get(conv);
  if (!members) receipts.set(conv, (members = new Map()));
  const who = app.userKey(user.u, user.n);
  const held = members.get(who) || { d: 0n, r: 0n, name: app.showUser(user.u, user.n) };
  if (delivered !== undefined && big(delivered) > held.d) held.d = big(delivered);
  if (read !== undefined && big(read) > held.r) held.r = big(read);
  members.set(who, held);
}

async function loadReceipts(conv) {
  if (conv.provisional || !state.authed) return;
  try {
    const reply = await app.call({ t: "receipts", conv: conv.key });
    readReceipts = reply.read_receipts !== false;
    receiptsBox.checked = readReceipts;
    for (const item of reply.receipts || []) {
      mergeReceipt(conv.key, item.user || {}, item.delivered_id, item.read_id);
    }
    app.queueRender();
  } catch (err) {
    // An older node, or the connection dropped: ticks stay at ✓.
  }
}

// ✓ stored, ✓✓ delivered (a user of our own node: once stored), read; in a
// group "read by n" with the readers in the tooltip.
function tick(item) {
  if (!item.mine || item.state !== "sent" || !item.id) return null;
  const conv = state.conversations.get(item.convKey);
  if (!conv) return null;
  const members = receipts.get(conv.key) || new Map();
  const id = big(item.id);
  if (conv.kind === "group") {
    const readers = [...members.values()].filter((m) => m.r >= id).map((m) => m.name).sort();
    if (readers.length === 0) return { text: "✓", kind: "stored", title: "" };
    return { text: `✓ read by ${readers.length}`, kind: "read", title: `read by ${readers.join(", ")}` };
  }
  const other = members.get(conv.key);
  if (other && other.r >= id) return { text: "✓✓ read", kind: "read", title: "read" };
  const local = conv.key.endsWith(`@${state.session.nodeId}`);
  if (local || (other && other.d >= id)) return { text: "✓✓", kind: "delivered", title: "delivered" };
  return { text: "✓", kind: "stored", title: "stored on your node" };
}

hooks.signature.push((item) => {
  const t = tick(item);
  return t ? t.text : "";
});

hooks.message.push((item, li) => {
  const t = tick(item);
  if (!t) return;
  li.dataset.receipt = t.kind;
  const mark = li.querySelector(".msg-state");
  if (mark) {
    mark.textContent = t.text;
    mark.title = t.title;
    mark.setAttribute("aria-label", t.title || t.kind);
  }
});

// ------------------------------------------------------------------ block
async function loadBlocks() {
  try {
    const reply = await app.api("GET", "/api/blocks", undefined, state.session.token);
    blocked = new Set((reply.blocks || []).map((b) => app.userKey(b.user, b.node)));
  } catch (err) {
    blocked = new Set();
  }
  renderBlock(openConv());
}

function renderBlock(conv) {
  const me = state.session && app.userKey(state.session.user, state.session.nodeId);
  const show = Boolean(conv) && conv.kind !== "group" && !conv.provisional && conv.key !== me;
  blockButton.hidden = !show || blocked === null;
  if (!show || blocked === null) return;
  const isBlocked = blocked.has(conv.key);
  blockButton.textContent = isBlocked ? "Unblock" : "Block";
  blockButton.dataset.blocked = isBlocked ? "yes" : "no";
}

blockButton.addEventListener("click", async () => {
  const conv = openConv();
  if (!conv || blocked === null) return;
  const unblock = blocked.has(conv.key);
  if (!unblock && !window.confirm(`Block ${conv.key.split("@")[0]}? Their messages, typing and presence will not reach you.`)) {
    return;
  }
  try {
    await app.api(unblock ? "DELETE" : "POST", "/api/blocks", { address: conv.key }, state.session.token);
    if (unblock) blocked.delete(conv.key);
    else blocked.add(conv.key);
  } catch (err) {
    app.showError(`Could not ${unblock ? "unblock" : "block"}: ${app.describe(err)}`);
  }
  renderBlock(conv);
});

receiptsBox.addEventListener("change", async () => {
  const on = receiptsBox.checked;
  try {
    await app.api("PUT", "/api/profile", { read_receipts: on }, state.session.token);
    readReceipts = on;
    if (!on) for (const members of receipts.values()) for (const m of members.values()) m.r = 0n;
    app.queueRender();
  } catch (err) {
    receiptsBox.checked = !on;
    app.showError(`Could not change read receipts: ${app.describe(err)}`);
  }
});

// ------------------------------------------------------------------ hooks
hooks.frame.push((frame) => {
  if (frame.t === "typing") {
    onTyping(frame);
  } else if (frame.t === "receipt") {
    mergeReceipt(frame.conv, frame.user || {}, frame.delivered_id, frame.read_id);
    app.queueRender();
  } else if (frame.t === "msg" && frame.kind === "text" && frame.from) {
    // Their message ends their typing line.
    const conv = frame.group
      ? `#${frame.group.name}@${frame.group.host}`
      : app.userKey(frame.from.u, frame.from.n);
    const shown = typing.get(conv);
    if (shown && shown.delete(app.userKey(frame.from.u, frame.from.n))) renderTyping();
  }
});

hooks.shown.push((conv) => {
  if (blocked === null && state.session) loadBlocks();
  loadReceipts(conv);
});

hooks.rendered.push((conv) => {
  renderTyping();
  renderBlock(conv);
});
