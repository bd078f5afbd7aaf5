// chinwag web client: the chat view's extras (loaded after app.js).
//
// * Links in messages: URLs become <a> elements built with DOM calls (never
//   HTML from a message), opened in a new tab with rel="noopener noreferrer".
// * Conversations can be closed: they leave the list until a new message
//   comes. Kept in localStorage per account ("chinwag.closed.<user@node id>").
// * The member panel of a group folds away; folded by default on a phone.
// * Mute and Close buttons are shown for the open conversation.

const app = window.chinwag;
const $ = (id) => document.getElementById(id);
const PHONE = window.matchMedia("(max-width: 700px)");
const MAX_CLOSED = 1000;

// ------------------------------------------------------------------ links
// http(s) URLs, and www. names; trailing punctuation stays text.
const URL_RE = /\b(?:https?:\/\/|www\.)[^\s<>"'`]+/gi;
const TRAILING_RE = /[.,;:!?'")\]}]+$/;

export function linkify(text) {
  const out = [];
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let raw = match[0];
    const trail = raw.match(TRAILING_RE);
    // A closing bracket that opens inside the URL belongs to it (Wikipedia).
    if (trail && !(trail[0] === ")" && raw.includes("("))) raw = raw.slice(0, -trail[0].length);
    const href = safeHref(raw);
    if (!href) continue;
    if (match.index > last) out.push(text.slice(last, match.index));
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = raw;
    out.push(a);
    last = match.index + raw.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function safeHref(raw) {
  try {
    const url = new URL(raw.startsWith("www.") ? `https://${raw}` : raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (exc) {
    return null;
  }
}

app.hooks.messageBody = (item) => linkify(item.text || "");

// ------------------------------------------------------------------ closed conversations
function closedKey() {
  return `chinwag.closed.${app.user}`;
}

function loadClosed() {
  try {
    const saved = JSON.parse(localStorage.getItem(closedKey()) || "{}");
    return saved && typeof saved === "object" ? saved : {};
  } catch (exc) {
    return {};
  }
}

function saveClosed(closed) {
  const keys = Object.keys(closed);
  for (const key of keys.slice(0, Math.max(0, keys.length - MAX_CLOSED))) delete closed[key];
  try {
    localStorage.setItem(closedKey(), JSON.stringify(closed));
  } catch (exc) {
    // Storage denied: closing lasts for this page only.
  }
}

let closed = null; // conv key -> the last seq when it was closed
let closedFor = null;

function closedMap() {
  if (closedFor !== app.user) {
    closedFor = app.user;
    closed = loadClosed();
  }
  return closed;
}

// A closed conversation comes back with its next message.
app.hooks.listed = (conv) => {
  const at = closedMap()[conv.key];
  if (at === undefined) return true;
  if (conv.lastSeq > at) {
    delete closed[conv.key];
    saveClosed(closed);
    return true;
  }
  return false;
};

function closeConversation() {
  const conv = app.openKey && app.conversation(app.openKey);
  if (!conv) return;
  closedMap()[conv.key] = conv.lastSeq;
  saveClosed(closed);
  $("back-button").click(); // back to the list, as the back button does
}

// ------------------------------------------------------------------ member panel
let foldedFor = null;
let folded = false;

function setFolded(value) {
  folded = value;
  $("members-toggle").setAttribute("aria-expanded", String(!folded));
  $("members-body").hidden = folded;
}

function membersLabel(conv) {
  const n = document.querySelectorAll("#group-members li.member").length;
  return conv && conv.kind === "group" && n ? `Members (${n})` : "Members";
}

app.hooks.rendered.push((conv) => {
  $("conv-actions").hidden = !conv;
  if (!conv) return;
  if (foldedFor !== conv.key) {
    // Each conversation opens folded on a phone, unfolded elsewhere.
    foldedFor = conv.key;
    setFolded(PHONE.matches);
  }
  $("members-toggle").textContent = membersLabel(conv);
});

$("members-toggle").addEventListener("click", () => setFolded(!folded));
$("close-conv-button").addEventListener("click", closeConversation);
