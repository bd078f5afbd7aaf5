// chinwag web client: plain ES module, no build step, no third-party code.
//
// One tab is one device: the session (token, device id) lives in
// sessionStorage. A page load asks the node for the conversation list
// (`convs`, with exact unread counts) and the newest page of the open
// conversation (`history`) at once, then starts the live stream at the queue's
// head (`sync {after: head}`): nothing is replayed. Older pages are fetched as
// the user scrolls up. A reconnect within the page resumes from the cursor
// (the highest seq seen), so nothing is missed or shown twice; a long absence
// (more than RESYNC_GAP messages) loads the list again instead. Read markers
// live on the node (`read`) and follow the account to every device.

const SUBPROTOCOL = "chinwag.json.v1";
const REQUEST_TIMEOUT_MS = 15000;
const MAX_MESSAGES_PER_CONVERSATION = 2000;
const MAX_PENDING_SENDS = 200;
const MAX_RATE_RETRIES = 10;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;
const ACK_DELAY_MS = 300;
const PAGE_SIZE = 50; // messages per history page
const JUMP_PAGE_SIZE = 200; // pages fetched while jumping to a search hit
const CONVS_PAGE_SIZE = 50;
const RESYNC_GAP = 2000; // behind by more: load the list again rather than stream it
const CATCH_UP_MIN = 20; // behind by at least this: show "catching up…"
const READ_DELAY_MS = 250; // read markers are coalesced
const SCROLL_LOAD_PX = 120; // this close to the top: fetch the older page
const HIGHLIGHT_MS = 4000;

const $ = (id) => document.getElementById(id);

// Hook points for the add-on modules under node/static/ (view.js, notify.js,
// files.js, actions.js, signals.js). Each is loaded by index.html after this
// file and sets its own entries; the page boots once all of them ran
// (DOMContentLoaded). The lists are called through runHooks.
const hooks = {
  messageBody: null, // (item) -> [Node|string]: the text of a message (view.js: links)
  attachments: null, // (item) -> Node|null: a message's attachments (files.js)
  listed: null, // (conv) -> bool: whether the conversation list shows it (view.js)
  incoming: [], // (item, conv): a live message from someone else (notify.js)
  rendered: [], // (conv|null): after the open conversation was rendered (view.js, signals.js)
  action: [], // (frame, live) -> not undefined: an edit/delete/react frame it took (actions.js)
  decorate: [], // (item, frame): a message's state from its msg frame (actions.js)
  compose: [], // (item, conv): a new send is being made (actions.js: a reply's target)
  submit: [], // (conv, text) -> true: the composer's text was taken (actions.js: an edit)
  frame: [], // (frame): every frame from the node, after app.js handled it (signals.js)
  shown: [], // (conv): a conversation was put on screen, also after a reconnect (signals.js)
  message: [], // (item, li): a message element was (re)built (actions.js: menu; signals.js: ticks)
  signature: [], // (item) -> string: the element is rebuilt when this changes (signals.js)
};

// Calls every entry of the list hook ``name``; returns the first answer that
// is not undefined. A failing entry does not stop the others or the page: its
// error is thrown again on its own, where the console (and the tests) see it.
function runHooks(name, ...args) {
  let answer;
  for (const hook of hooks[name]) {
    try {
      const result = hook(...args);
      if (answer === undefined) answer = result;
    } catch (exc) {
      queueMicrotask(() => {
        throw exc;
      });
    }
  }
  return answer;
}
const state = {
  session: null, // {token, device, user, nodeId, nodeName}
  ws: null,
  conn: "offline",
  authed: false,
  cursor: 0,
  acked: 0,
  ackTimer: null,
  heartbeat: null,
  reconnectDelay: RECONNECT_MIN_MS,
  reconnectTimer: null,
  nextRid: 1,
  calls: new Map(), // rid -> {resolve, reject, timer}
  conversations: new Map(), // key -> conversation
  byId: new Map(), // "origin:id" -> message (ids are unique per origin node only)
  pending: new Map(), // cid -> message not yet acknowledged
  openKey: null,
  contacts: [], // [{address, status, last_active_at}]
  presence: new Map(), // "user@nodeid" -> {status, last_active_at, epoch}
  presenceEpoch: 0, // counts presence frames, so an older API answer loses
  labels: new Map(), // node id -> node name
  names: new Map(), // "user@nodeid" -> display name from the profile
  namesAsked: new Set(), // "user@nodeid" asked with presence_query in this page
  namesWanted: new Set(), // waiting for the next presence_query batch
  namesTimer: null,
  nodeIds: new Map(), // node name -> node id
  members: [], // the open group's members
  renderQueued: false,
  loaded: false, // the conversation list came from the node in this page
  legacy: false, // a node without `convs`: the whole queue is streamed, as before
  head: 0, // the head of the latest sync: while cursor < head, catching up
  syncFrom: 0, // the cursor the latest sync started from
  convsNext: null, // cursor of the next page of the conversation list
  bySeq: new Map(), // seq -> event item (events have no id)
  failed: new Map(), // "origin:id" -> delivery_failed code, for messages not loaded yet
  membershipEpoch: 0, // counts live membership changes, so an older group list loses
  search: { q: "", hits: [], next: null, busy: false, done: false },
  highlight: null, // "origin:id" of the message a search jumped to
  jumping: null, // {key, idKey} while pages load towards a search hit
};

// ------------------------------------------------------------------ errors
function showError(text) {
  $("error").textContent = text;
  $("error-bar").hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error-bar").hidden = true;
}

function describe(err) {
  if (err && err.code === "rate_limited") return "Too many requests; wait a moment and try again.";
  if (err && err.message) return err.message;
  return String(err);
}

// ------------------------------------------------------------------ HTTP API
async function api(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (exc) {
    throw { code: "unavailable", message: "The node cannot be reached." };
  }
  let data = {};
  try {
    data = await response.json();
  } catch (exc) {
    data = {};
  }
  if (!response.ok) {
    const error = data.error || { code: "internal", message: `HTTP ${response.status}` };
    throw error;
  }
  return data;
}

// ------------------------------------------------------------------ addresses
function userKey(u, n) {
  return `${u}@${n}`;
}

function groupKey(name, host) {
  return `#${name}@${host}`;
}

function isNodeId(text) {
  return /^[a-z2-7]{52}$/.test(text);
}

function learnLabel(nodeId, name) {
  if (!nodeId || !name || state.labels.get(nodeId) === name) return;
  state.labels.set(nodeId, name);
  state.nodeIds.set(name, nodeId);
  // A conversation opened as "bob@attic" before this page knew attic's id.
  for (const conv of [...state.conversations.values()]) {
    if (!conv.provisional) continue;
    const at = conv.key.lastIndexOf("@");
    if (conv.key.slice(at + 1) === name) rekey(conv.key, `${conv.key.slice(0, at)}@${nodeId}`);
  }
}

function msgKey(origin, id) {
  return `${origin}:${id}`;
}

// A node label or id typed by a person to a node id, if this page knows it.
function nodeIdOf(text) {
  if (!text || text === state.session.nodeName || text === state.session.nodeId) {
    return state.session.nodeId;
  }
  if (isNodeId(text)) return text;
  return state.nodeIds.get(text) || null;
}

function nodeLabel(nodeId) {
  if (nodeId === state.session.nodeId) return state.session.nodeName;
  return state.labels.get(nodeId) || nodeId.slice(0, 8);
}

function showUser(u, n) {
  return state.names.get(userKey(u, n)) || addressText(u, n);
}

// The address as a person types it: "bob" here, "bob@kitchen" elsewhere.
function addressText(u, n) {
  return n === state.session.nodeId ? u : `${u}@${nodeLabel(n)}`;
}

// A display name from the profile (presence frames, contacts, members,
// presence_query answers); true if it changed.
function learnName(u, n, name) {
  const key = userKey(u, n);
  if (typeof name !== "string" || state.names.get(key) === (name || undefined)) return false;
  if (name) state.names.set(key, name);
  else state.names.delete(key);
  return true;
}

// People whose display name this page does not know are asked for once, in
// batches (presence_query; their node answers for remote ones).
function wantName(u, n) {
  const key = userKey(u, n);
  if (state.names.has(key) || state.namesAsked.has(key) || state.legacy) return;
  state.namesAsked.add(key);
  state.namesWanted.add(key);
  if (!state.namesTimer) state.namesTimer = setTimeout(askNames, 200);
}

async function askNames() {
  state.namesTimer = null;
  if (!state.authed) {
    for (const key of state.namesWanted) state.namesAsked.delete(key);
    state.namesWanted.clear();
    return;
  }
  const users = [...state.namesWanted].slice(0, 256);
  for (const key of users) state.namesWanted.delete(key);
  if (state.namesWanted.size) state.namesTimer = setTimeout(askNames, 200);
  try {
    applyPresenceList((await call({ t: "presence_query", users })).users);
  } catch (err) {
    // An older node (bad_frame) or a dropped connection: addresses it is.
  }
}

// A presence_query answer: [{user: {u, n, name}, status, last_active_at, display_name?}].
function applyPresenceList(items) {
  for (const item of items || []) {
    if (!item || !item.user) continue;
    onPresence({ t: "presence", ...item }, false);
  }
  queueRender();
}

// "bob@kitchen" from the contacts or members API to "bob@<node id>" if known.
function normaliseAddress(text) {
  const at = text.lastIndexOf("@");
  if (at < 0) return userKey(text, state.session.nodeId);
  const id = nodeIdOf(text.slice(at + 1));
  return id ? userKey(text.slice(0, at), id) : text;
}

// What a person typed in "Chat with" to {key, to, kind}.
function parseTarget(text) {
  text = text.trim();
  const isGroup = text.startsWith("#");
  const bare = isGroup ? text.slice(1) : text;
  const at = bare.lastIndexOf("@");
  const name = at < 0 ? bare : bare.slice(0, at);
  const node = at < 0 ? null : bare.slice(at + 1);
  if (!/^[a-z0-9._-]{1,32}$/.test(name)) {
    throw { message: `${JSON.stringify(text)} is not an address: use bob, bob@node or #team@node` };
  }
  const id = nodeIdOf(node);
  const kind = isGroup ? "group" : "user";
  if (id === null) {
    // A node label this page has not seen yet: the node resolves it when we
    // send, and the conversation is re-keyed when the first echo names the id.
    return { kind, key: text, to: text, provisional: true, name };
  }
  const key = isGroup ? groupKey(name, id) : userKey(name, id);
  return { kind, key, to: key, provisional: false, name };
}

// ------------------------------------------------------------------ conversations
function conversation(key, kind, init = {}) {
  let conv = state.conversations.get(key);
  if (!conv) {
    conv = {
      key,
      kind,
      to: init.to || key,
      name: init.name || key,
      title: "",
      provisional: Boolean(init.provisional),
      messages: [],
      lastSeq: 0,
      lastText: "",
      lastAt: 0,
      unread: 0, // exact: the node's count plus live messages since
      readSeq: 0, // the node's read marker
      countedUpTo: 0, // the highest seq the unread count takes into account
      readSent: 0, // the highest seq a `read` was sent for
      readTimer: null,
      loaded: false, // the newest history page is in
      next: null, // `before` of the next older page (null: none asked yet or none left)
      complete: false, // the first message of the conversation is in memory
      loading: null, // the history request in flight
      member: kind === "group" ? init.member !== false : true,
      memberEpoch: 0,
    };
    state.conversations.set(key, conv);
  }
  return conv;
}

function displayName(conv) {
  if (conv.provisional) return conv.key;
  if (conv.kind === "user") {
    const name = state.names.get(conv.key);
    if (name) return name;
  }
  return keyName(conv.key);
}

function keyName(key) {
  const at = key.lastIndexOf("@");
  const node = key.slice(at + 1);
  const local = key.slice(0, at);
  if (!isNodeId(node)) return key;
  if (node === state.session.nodeId) return local;
  return `${local}@${nodeLabel(node)}`;
}

// Adds an entry in queue order (history pages arrive older than what is
// shown; live messages newer). Over the cap, the oldest entries are dropped
// and become an older page to fetch again.
function addToConversation(conv, item) {
  const last = conv.messages[conv.messages.length - 1];
  conv.messages.push(item);
  if (last && orderOf(last, item) > 0) conv.messages.sort(orderOf);
  if (conv.messages.length > MAX_MESSAGES_PER_CONVERSATION && conv.messages[0] !== item) {
    const dropped = conv.messages.shift();
    forget(dropped);
    const oldest = conv.messages.find((m) => m.seq);
    if (oldest) {
      conv.next = oldest.seq;
      conv.complete = false;
    }
  }
  if (item.idKey) state.byId.set(item.idKey, item);
  if (item.kind === "event" && item.seq) state.bySeq.set(item.seq, item);
  if (item.kind === "text" && (!conv.lastSeq || !item.seq || item.seq >= conv.lastSeq)) {
    conv.lastText = item.text;
    conv.lastAt = Math.max(conv.lastAt, item.ts || Date.now());
  }
  if (item.seq) conv.lastSeq = Math.max(conv.lastSeq, item.seq);
}

function forget(item) {
  if (item.idKey && state.byId.get(item.idKey) === item) state.byId.delete(item.idKey);
  if (item.kind === "event" && state.bySeq.get(item.seq) === item) state.bySeq.delete(item.seq);
}

// A count from the node (`convs`, `read`) is exact as of some seq (`asOf`);
// messages of this conversation the stream brought after that are added.
function applyCount(conv, unread, readSeq, asOf) {
  if (Number.isInteger(readSeq)) conv.readSeq = Math.max(conv.readSeq, readSeq);
  if (!Number.isInteger(unread)) return;
  const later = conv.messages.filter(
    (m) => m.kind === "text" && !m.mine && m.live && m.seq > asOf && m.seq > conv.readSeq,
  ).length;
  conv.unread = unread + later;
  conv.countedUpTo = Math.max(conv.countedUpTo, asOf, conv.lastSeq);
}

// A live message the node's count did not include yet.
function countLive(conv, item) {
  if (!item.seq || item.seq <= conv.countedUpTo) return;
  conv.countedUpTo = item.seq;
  if (item.kind === "text" && !item.mine && item.seq > conv.readSeq) conv.unread += 1;
}

function onScreen(conv) {
  return state.openKey === conv.key && document.visibilityState !== "hidden";
}

// The open conversation, with the window visible, is read up to its newest
// message: the node stores the marker and tells the user's other devices.
function markRead(conv) {
  if (!onScreen(conv)) return;
  const upTo = conv.lastSeq;
  if (upTo > conv.readSeq || conv.unread > 0) {
    conv.readSeq = Math.max(conv.readSeq, upTo);
    conv.unread = 0;
    conv.countedUpTo = Math.max(conv.countedUpTo, upTo);
    queueRender();
  }
  if (conv.provisional || state.legacy || upTo <= conv.readSent || conv.readTimer) return;
  conv.readTimer = setTimeout(() => sendRead(conv), READ_DELAY_MS);
}

async function sendRead(conv) {
  conv.readTimer = null;
  const seq = conv.readSeq;
  if (!state.authed || seq <= conv.readSent || state.conversations.get(conv.key) !== conv) return;
  conv.readSent = seq;
  let ok;
  try {
    ok = await call({ t: "read", conv: conv.key, seq });
  } catch (err) {
    if (err.code === "rate_limited") {
      conv.readSent = 0;
      conv.readTimer = setTimeout(() => sendRead(conv), err.retry_after_ms || 1000);
    } else if (err.code === "unavailable" || err.code === "timeout") {
      conv.readSent = 0; // sent again after reconnecting
    } else if (err.code === "bad_frame") {
      state.legacy = true; // a node without read markers
    }
    return;
  }
  applyRead(conv, ok);
}

// A `read` answer, or a `read` frame: another device of this user read it.
function applyRead(conv, frame) {
  const asOf = Number.isInteger(frame.last_seq) ? frame.last_seq : Math.max(conv.lastSeq, frame.read_seq || 0);
  applyCount(conv, frame.unread, frame.read_seq, asOf);
  conv.readSent = Math.max(conv.readSent, conv.readSeq);
  queueRender();
}

function onRead(frame) {
  const conv = state.conversations.get(frame.conv);
  if (!conv) return;
  applyRead(conv, frame);
  if (onScreen(conv)) markRead(conv);
}

// Moves a provisional conversation ("bob@kitchen") into its real key.
function rekey(fromKey, toKey) {
  const old = state.conversations.get(fromKey);
  if (!old || fromKey === toKey) return;
  const conv = conversation(toKey, old.kind, { to: toKey });
  for (const item of old.messages) {
    item.convKey = toKey;
    if (!conv.messages.includes(item)) conv.messages.push(item);
  }
  conv.messages.sort(orderOf);
  if (old.lastAt > conv.lastAt) {
    conv.lastAt = old.lastAt;
    conv.lastText = old.lastText;
  }
  conv.lastSeq = Math.max(conv.lastSeq, old.lastSeq);
  conv.title = conv.title || old.title;
  conv.unread += old.unread;
  state.conversations.delete(fromKey);
  if (state.openKey === fromKey) {
    state.openKey = toKey;
    saveOpenKey();
  }
}

function removeItem(item) {
  const conv = state.conversations.get(item.convKey);
  if (conv) conv.messages = conv.messages.filter((m) => m !== item);
}

function orderOf(a, b) {
  // Acknowledged entries by queue position; pending ones last, in send order.
  const sa = a.seq || Number.MAX_SAFE_INTEGER;
  const sb = b.seq || Number.MAX_SAFE_INTEGER;
  return sa - sb || a.order - b.order;
}

let sendOrder = 0;

// ------------------------------------------------------------------ incoming frames
function onFrame(frame) {
  switch (frame.t) {
    case "ok":
    case "err":
      settle(frame);
      break;
    case "msg":
      onMsg(frame);
      break;
    case "presence":
      onPresence(frame);
      break;
    case "read":
      onRead(frame);
      break;
    case "bye":
      onBye(frame);
      break;
    default:
      break; // a newer node may send frames this page does not know
  }
  runHooks("frame", frame);
}

function settle(frame) {
  if (frame.rid === undefined) {
    if (frame.t === "err") showError(`The node says: ${frame.message}`);
    return;
  }
  const call = state.calls.get(frame.rid);
  if (!call) return;
  state.calls.delete(frame.rid);
  clearTimeout(call.timer);
  if (frame.t === "ok") call.resolve(frame);
  else call.reject(frame);
}

function onMsg(frame) {
  if (frame.seq <= state.cursor) return; // seen already (a re-sync overlap)
  state.cursor = frame.seq;
  scheduleAck();
  ingest(frame, true);
  queueRender();
}

// A `msg` frame from the stream (live) or from a `convs`/`history` answer.
// Both have the same shape; an entry already known (by origin and id, or by
// seq for events) is not added twice.
function ingest(frame, live) {
  const handled = runHooks("action", frame, live);
  if (handled !== undefined) return handled;
  if (frame.kind === "event") return onEvent(frame, live);
  if (frame.kind === "text") return onText(frame, live);
  return null;
}

function onText(frame, live) {
  const from = frame.from;
  learnLabel(from.n, from.name);
  wantName(from.u, from.n);
  const mine = from.u === state.session.user && from.n === state.session.nodeId;
  let key;
  let kind;
  if (frame.group) {
    learnLabel(frame.group.host, frame.group.host_name);
    key = groupKey(frame.group.name, frame.group.host);
    kind = "group";
  } else {
    learnLabel(frame.to.n, frame.to.name);
    const other = mine ? frame.to : from;
    key = userKey(other.u, other.n);
    kind = "user";
  }
  const idKey = msgKey(frame.origin || from.n, frame.id);
  const known = state.byId.get(idKey);
  if (known) {
    // Our own send whose ok came first; the echo gives its place in the queue.
    known.seq = known.seq || frame.seq;
    if (known.state === "pending") known.state = "sent";
    if (known.convKey !== key) {
      removeItem(known);
      known.convKey = key;
      conversation(key, kind).messages.push(known);
    }
    const conv = state.conversations.get(key);
    conv.lastSeq = Math.max(conv.lastSeq, frame.seq);
    conv.messages.sort(orderOf);
    runHooks("decorate", known, frame);
    if (live) {
      known.live = true;
      countLive(conv, known);
      markRead(conv);
    }
    return known;
  }
  const conv = conversation(key, kind);
  const item = {
    kind: "text",
    id: frame.id,
    idKey,
    seq: frame.seq,
    ts: frame.ts,
    from: showUser(from.u, from.n),
    fromKey: userKey(from.u, from.n),
    text: frame.body.text,
    attachments: Array.isArray(frame.body.attachments) ? frame.body.attachments : null,
    mine,
    state: mine ? "sent" : "received",
    convKey: key,
    order: sendOrder++,
    live,
  };
  runHooks("decorate", item, frame);
  if (state.failed.has(idKey)) {
    item.state = "failed";
    item.deliveryFailed = true;
    item.error = `not delivered (${state.failed.get(idKey)})`;
  }
  if (mine) {
    // Maybe the echo of a send whose ok is still on its way (or another
    // device's message with the same text): hidden behind that send until
    // its ok names the id, so it is never shown twice and never lost.
    const shadow = pendingShadow(key, item.text);
    if (shadow) {
      item.shadowedBy = shadow;
      shadow.shadowing = item;
    }
  }
  addToConversation(conv, item);
  if (live) {
    countLive(conv, item);
    markRead(conv);
    if (!mine) for (const hook of hooks.incoming) hook(item, conv);
  }
  return item;
}

// The oldest send in flight with this text to this conversation.
function pendingShadow(key, text) {
  let found = null;
  for (const item of state.pending.values()) {
    if (!item.inFlight || item.shadowing || item.convKey !== key || item.text !== text) continue;
    if (!found || item.order < found.order) found = item;
  }
  return found;
}

function unshadow(item) {
  if (item.shadowing) item.shadowing.shadowedBy = null;
  item.shadowing = null;
}

function hidden(m) {
  return Boolean(m.shadowedBy && m.shadowedBy.state === "pending");
}

function onEvent(frame, live) {
  const body = frame.body || {};
  if (body.type === "delivery_failed") {
    const idKey = msgKey(state.session.nodeId, body.id);
    state.failed.set(idKey, body.code);
    const item = state.byId.get(idKey);
    if (item) {
      item.state = "failed";
      item.deliveryFailed = true;
      item.error = `not delivered (${body.code})`;
    }
    return null;
  }
  if (body.type !== "group") return null;
  // Members are "user@<node id>": the node says which labels those ids have.
  for (const [id, label] of Object.entries(frame.labels || {})) learnLabel(id, label);
  const known = state.bySeq.get(frame.seq);
  if (known) return known; // from a history page and the stream both
  const group = body.group;
  const key = groupKey(group.name, group.host);
  const conv = conversation(key, "group");
  const me = userKey(state.session.user, state.session.nodeId);
  const by = memberName(body.by);
  // Only live events change what the page knows of the group: a history page
  // is older than the group list asked at connect.
  const change = (apply) => {
    if (!live) return;
    apply();
    conv.memberEpoch = ++state.membershipEpoch;
  };
  let text = "";
  if (body.action === "invited") {
    // Not a member until accepted: nothing else of the group arrives before.
    change(() => {
      conv.member = false;
      conv.invited = true;
      conv.invitedBy = body.by || "";
      conv.title = body.title || conv.title;
    });
    text = `${by} invited you to this group`;
  } else if (body.action === "created") {
    text = `${by} created the group`;
    change(() => (conv.member = true));
  } else if (body.action === "members") {
    const added = (body.added || []).map(memberName);
    const removed = (body.removed || []).map(memberName);
    const parts = [];
    // An invitee's acceptance is the invitee adding themself.
    const joined = added.length === 1 && body.added[0] === body.by;
    if (added.length) parts.push(joined ? `${by} joined` : `${by} added ${added.join(", ")}`);
    if (removed.length) {
      const self = removed.length === 1 && (body.removed[0] === body.by);
      parts.push(self ? `${by} left` : `${by} removed ${removed.join(", ")}`);
    }
    text = parts.join("; ");
    change(() => {
      if (typeof body.title === "string") conv.title = body.title;
      if (typeof body.owner === "string") conv.owner = body.owner;
      if ((body.added || []).includes(me)) {
        conv.member = true;
        conv.invited = false;
      }
      if ((body.removed || []).includes(me)) conv.member = false;
    });
  } else if (body.action === "renamed") {
    change(() => (conv.title = body.title || ""));
    text = `${by} renamed the group to "${body.title || ""}"`;
  } else {
    text = `group changed (${body.action})`;
  }
  const item = { kind: "event", seq: frame.seq, text, order: sendOrder++, live };
  addToConversation(conv, item);
  if (live) {
    countLive(conv, item);
    if (state.openKey === key && conv.member && body.action !== "invited") loadMembers(conv);
  }
  return item;
}

function memberName(address) {
  if (!address) return "someone";
  const at = address.lastIndexOf("@");
  return showUser(address.slice(0, at), address.slice(at + 1));
}

function onPresence(frame, live = true) {
  const user = frame.user;
  learnLabel(user.n, user.name);
  if ("display_name" in frame || live) learnName(user.u, user.n, frame.display_name || "");
  state.presence.set(userKey(user.u, user.n), {
    status: frame.status,
    last_active_at: frame.last_active_at,
    epoch: ++state.presenceEpoch,
  });
  for (const member of state.members) {
    if (normaliseAddress(member.address) === userKey(user.u, user.n)) {
      member.status = frame.status;
      member.last_active_at = frame.last_active_at;
    }
  }
  queueRender();
}

function onBye(frame) {
  if (frame.code === "unauthorized") {
    logout(false);
    showError("Your session has ended (logged out or the password changed). Log in again.");
  }
}

// ------------------------------------------------------------------ the socket
function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}

function setConn(value) {
  state.conn = value;
  const el = $("conn-status");
  el.dataset.state = value;
  el.textContent = { online: "online", connecting: "connecting…", offline: "offline" }[value];
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (!state.session) return;
  setConn("connecting");
  let ws;
  try {
    ws = new WebSocket(wsUrl(), [SUBPROTOCOL]);
  } catch (exc) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  state.authed = false;
  ws.onopen = () => {
    if (state.ws === ws) authenticate(ws);
  };
  ws.onmessage = (event) => {
    if (state.ws !== ws || typeof event.data !== "string") return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (exc) {
      return;
    }
    for (const frame of Array.isArray(data) ? data : [data]) onFrame(frame);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    disconnected();
    scheduleReconnect();
  };
  ws.onerror = () => {}; // onclose follows and does the work
}

function dropConnection(ws) {
  if (state.ws !== ws) return;
  disconnected();
  try {
    ws.close(4000, "no answer");
  } catch (exc) {
    // Closing a dead socket may throw; it is forgotten either way.
  }
  scheduleReconnect();
}

function disconnected() {
  state.ws = null;
  state.authed = false;
  clearInterval(state.heartbeat);
  state.heartbeat = null;
  for (const [rid, call] of state.calls) {
    clearTimeout(call.timer);
    call.reject({ code: "unavailable", message: "the connection dropped" });
    state.calls.delete(rid);
  }
  if (state.session) setConn("offline");
  render();
}

function scheduleReconnect() {
  if (!state.session || state.reconnectTimer) return;
  const delay = state.reconnectDelay * (0.75 + Math.random() * 0.5);
  state.reconnectDelay = Math.min(state.reconnectDelay * 2, RECONNECT_MAX_MS);
  state.reconnectTimer = setTimeout(connect, delay);
}

function call(frame, ws = state.ws) {
  return new Promise((resolve, reject) => {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      reject({ code: "unavailable", message: "not connected to the node" });
      return;
    }
    const rid = state.nextRid++;
    const timer = setTimeout(() => {
      state.calls.delete(rid);
      reject({ code: "timeout", message: "the node did not answer in time" });
      // No answer in time: the link is presumed dead (sleep, Wi-Fi gone), so
      // drop it at once instead of waiting for TCP to notice.
      dropConnection(ws);
    }, REQUEST_TIMEOUT_MS);
    state.calls.set(rid, { resolve, reject, timer });
    ws.send(JSON.stringify({ ...frame, rid }));
  });
}

function sendQuiet(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN && state.authed) {
    state.ws.send(JSON.stringify(frame));
  }
}

async function authenticate(ws) {
  let info;
  try {
    info = await call({ t: "auth", token: state.session.token }, ws);
  } catch (err) {
    if (err.code === "unauthorized") {
      logout(false);
      showError("Your session has ended. Log in again.");
    }
    return; // anything else: the socket closes and we retry
  }
  if (state.ws !== ws) return;
  state.authed = true;
  state.reconnectDelay = RECONNECT_MIN_MS;
  learnLabel(info.node_id, info.node_name);
  // With a rid, so a heartbeat that gets no answer reveals a dead link.
  state.heartbeat = setInterval(
    () => call({ t: "heartbeat" }, ws).catch(() => {}),
    info.heartbeat_ms || 10000,
  );
  // A page load (or a long absence): the list and the open conversation's
  // newest page from the node, then the stream from the head. Otherwise the
  // stream resumes at the cursor and the page shows it catching up.
  const head = Number.isInteger(info.head) ? info.head : 0;
  if (!state.legacy && (!state.loaded || head - state.cursor > RESYNC_GAP)) {
    let loaded;
    try {
      loaded = await loadOverview(ws);
    } catch (err) {
      if (state.ws !== ws || !err || err.code === "unavailable" || err.code === "timeout") {
        return; // the connection dropped: the next one tries again
      }
      // The node refused the list (or this page failed on it): say so, and
      // stream from the cursor rather than stay offline.
      console.error("loading the conversation list failed", err);
      showError(`Could not load the conversations: ${describe(err)}`);
      loaded = false;
    }
    if (state.ws !== ws) return;
    if (loaded) state.cursor = Math.max(state.cursor, head);
  }
  let synced;
  const from = state.cursor;
  try {
    synced = await call({ t: "sync", after: from }, ws);
  } catch (err) {
    return;
  }
  // A queue shorter than our cursor (the node's data was restored from an
  // older copy): follow the node, or every new message would look seen.
  if (typeof synced.head === "number" && synced.head < state.cursor) state.cursor = synced.head;
  // Progress counts from where this sync started (messages that came in the
  // same batch as its ok are already counted in the cursor).
  state.head = typeof synced.head === "number" ? synced.head : state.cursor;
  state.syncFrom = Math.min(from, state.head);
  setConn("online");
  render();
  refreshContacts();
  refreshGroups();
  resendPending();
  const open = state.openKey && state.conversations.get(state.openKey);
  if (open) {
    showConversation(open);
    markRead(open);
  }
}

// ------------------------------------------------------------------ history from the node
// The conversation list and, at the same time, the open conversation's newest
// page. False when the node has no `convs` (an older node): then the page
// streams the whole queue as before.
async function loadOverview(ws) {
  const open = state.openKey && state.conversations.get(state.openKey);
  const wantPage = Boolean(open) && !open.provisional;
  const [convs, page] = await Promise.allSettled([
    call({ t: "convs", limit: CONVS_PAGE_SIZE }, ws),
    wantPage ? call({ t: "history", conv: open.key, limit: PAGE_SIZE }, ws) : Promise.resolve(null),
  ]);
  if (convs.status === "rejected") {
    if (convs.reason && convs.reason.code === "bad_frame") {
      state.legacy = true;
      return false;
    }
    throw convs.reason;
  }
  if (state.loaded) resetConversations();
  applyConvs(convs.value);
  state.convsNext = convs.value.next === undefined ? null : convs.value.next;
  if (wantPage) {
    if (page.status === "fulfilled") applyHistory(open, page.value);
    else if (page.reason && page.reason.code === "not_found") endHistory(open);
  }
  state.loaded = true;
  render();
  return true;
}

// After a long absence the conversations in memory have a gap: they start
// again from the node's newest pages (unacknowledged sends stay).
function resetConversations() {
  state.byId.clear();
  state.bySeq.clear();
  for (const conv of state.conversations.values()) {
    conv.messages = conv.messages.filter((m) => !m.seq && m.state === "pending");
    for (const m of conv.messages) if (m.idKey) state.byId.set(m.idKey, m);
    Object.assign(conv, { loaded: false, next: null, complete: false, countedUpTo: 0 });
  }
}

function applyConvs(reply) {
  for (const c of reply.convs || []) {
    const conv = conversation(c.conv, c.kind === "group" ? "group" : "user");
    if (c.title) conv.title = c.title;
    if (c.last) ingest(c.last, false);
    const asOf = c.last && Number.isInteger(c.last.seq) ? c.last.seq : conv.lastSeq;
    applyCount(conv, c.unread, c.read_seq, asOf);
    conv.readSent = Math.max(conv.readSent, conv.readSeq);
  }
}

async function loadMoreConversations() {
  if (state.convsNext === null) return;
  try {
    const reply = await call({ t: "convs", limit: CONVS_PAGE_SIZE, before: state.convsNext });
    applyConvs(reply);
    state.convsNext = reply.next === undefined ? null : reply.next;
  } catch (err) {
    showError(describe(err));
  }
  render();
}

function applyHistory(conv, reply) {
  for (const frame of reply.msgs || []) ingest(frame, false);
  conv.loaded = true;
  if (reply.next === undefined || reply.next === null) endHistory(conv);
  else {
    conv.next = reply.next;
    conv.complete = false;
  }
}

function endHistory(conv) {
  conv.loaded = true;
  conv.next = null;
  conv.complete = true;
}

// Fetches the conversation's next older page (the newest, the first time).
// Resolves true when there may be more to fetch.
function loadPage(conv, limit = PAGE_SIZE) {
  if (conv.loading) return conv.loading;
  if (conv.provisional || state.legacy || !state.authed) return Promise.resolve(false);
  if (conv.loaded && conv.complete) return Promise.resolve(false);
  const frame = { t: "history", conv: conv.key, limit };
  if (conv.loaded) frame.before = conv.next;
  conv.loading = call(frame)
    .then(
      (reply) => {
        applyHistory(conv, reply);
        return !conv.complete;
      },
      async (err) => {
        if (err.code === "not_found") endHistory(conv); // nothing stored yet
        else if (err.code === "bad_frame") state.legacy = true;
        else if (err.code === "rate_limited") {
          await new Promise((resolve) => setTimeout(resolve, err.retry_after_ms || 1000));
          return true;
        } else if (err.code === "bad_request") {
          endHistory(conv); // a cursor the node no longer knows: stop here
        }
        return false;
      },
    )
    .finally(() => {
      conv.loading = null;
      queueRender();
    });
  return conv.loading;
}

// A conversation just put on screen gets its newest page if it has none.
async function showConversation(conv) {
  runHooks("shown", conv);
  if (!conv.loaded && !conv.loading) {
    await loadPage(conv);
    if (state.openKey === conv.key) {
      render();
      markRead(conv);
      fillScreen(conv);
    }
  }
}

// Near the top of the list, or a list shorter than the screen: the older page.
async function fillScreen(conv) {
  const list = $("messages");
  while (state.openKey === conv.key && conv.loaded && !conv.complete && !conv.loading) {
    if (list.scrollTop > SCROLL_LOAD_PX && list.scrollHeight > list.clientHeight) return;
    $("history-status").hidden = false;
    const more = await loadPage(conv);
    $("history-status").hidden = true;
    if (state.openKey !== conv.key) return;
    render();
    if (!more) return;
  }
}

// A search hit: open its conversation and fetch pages until the message is
// there, then scroll to it and highlight it.
async function jumpTo(key, frame) {
  const conv = conversation(key, key.startsWith("#") ? "group" : "user");
  const idKey = msgKey(frame.origin || (frame.from && frame.from.n), frame.id);
  openConversation(key, false);
  state.jumping = idKey;
  $("history-status").hidden = false;
  try {
    for (;;) {
      const item = state.byId.get(idKey);
      if (item && item.convKey === key) break;
      if (state.openKey !== key || state.jumping !== idKey) return;
      if (conv.loaded && conv.complete) break;
      const oldest = conv.messages.find((m) => m.seq);
      if (conv.loaded && oldest && oldest.seq < frame.seq) break; // not there any more
      const more = await loadPage(conv, conv.loaded ? JUMP_PAGE_SIZE : PAGE_SIZE);
      render();
      if (!more) break;
    }
  } finally {
    if (state.jumping === idKey) {
      state.jumping = null;
      $("history-status").hidden = true;
    }
  }
  if (state.openKey !== key) return;
  const item = state.byId.get(idKey);
  if (!item) {
    showError("That message is no longer in the history.");
    return;
  }
  state.highlight = idKey;
  render();
  const entry = messageElements.get(item);
  if (entry) entry.li.scrollIntoView({ block: "center" });
  setTimeout(() => {
    if (state.highlight !== idKey) return;
    state.highlight = null;
    queueRender();
  }, HIGHLIGHT_MS);
  markRead(conv);
}

// ------------------------------------------------------------------ search
async function runSearch(more) {
  const search = state.search;
  if (search.busy) return;
  if (!more) {
    search.q = $("search-q").value.trim();
    search.hits = [];
    search.next = null;
    search.done = false;
  }
  if (!search.q) {
    closeSearch();
    return;
  }
  const frame = { t: "search", q: search.q };
  if (more && search.next !== null) frame.before = search.next;
  search.busy = true;
  renderSearch();
  try {
    const reply = await call(frame);
    if (frame.q !== search.q) return; // a newer search
    search.hits.push(...(reply.hits || []));
    search.next = reply.next === undefined ? null : reply.next;
    search.done = true;
  } catch (err) {
    showError(err.code === "bad_frame" ? "This node cannot search." : describe(err));
  } finally {
    search.busy = false;
    renderSearch();
  }
}

function closeSearch() {
  Object.assign(state.search, { q: "", hits: [], next: null, busy: false, done: false });
  $("search-q").value = "";
  renderSearch();
}

// The text around the first query word, compared without case and accents.
function excerpt(text, q) {
  const fold = (t) => t.normalize("NFD").replace(/\p{M}/gu, "").toLowerCase();
  let folded = "";
  const at = []; // index in folded -> index in text
  let i = 0;
  for (const ch of text) {
    const f = fold(ch);
    for (let k = 0; k < f.length; k += 1) at.push(i);
    folded += f;
    i += ch.length;
  }
  let pos = -1;
  for (const word of fold(q).split(/\s+/).filter(Boolean)) {
    pos = folded.indexOf(word);
    if (pos >= 0) break;
  }
  const start = pos < 0 ? 0 : Math.max(0, at[pos] - 40);
  const cut = text.slice(start, start + 140);
  return `${start > 0 ? "…" : ""}${cut}${start + 140 < text.length ? "…" : ""}`;
}

function scheduleAck() {
  if (state.ackTimer) return;
  state.ackTimer = setTimeout(() => {
    state.ackTimer = null;
    if (state.cursor > state.acked && state.authed) {
      sendQuiet({ t: "ack", seq: state.cursor });
      state.acked = state.cursor;
    }
  }, ACK_DELAY_MS);
}

// ------------------------------------------------------------------ sending
function newCid() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function sendText(conv, text, attachments = null) {
  if (state.pending.size >= MAX_PENDING_SENDS) {
    showError("Too many messages are waiting to be sent; wait for the connection.");
    return;
  }
  const item = {
    kind: "text",
    id: null,
    seq: 0,
    ts: Date.now(),
    from: state.session.user,
    text,
    attachments,
    mine: true,
    state: "pending",
    cid: newCid(),
    to: conv.to,
    convKey: conv.key,
    order: sendOrder++,
    retries: 0,
  };
  runHooks("compose", item, conv);
  addToConversation(conv, item);
  state.pending.set(item.cid, item);
  savePending();
  render();
  // One's own message is always scrolled into view.
  if (state.openKey === conv.key) $("messages").scrollTop = $("messages").scrollHeight;
  transmit(item);
  return item;
}

// Unacknowledged sends survive a reload of the tab: they are sent again with
// the same cid, so a send the node did commit is answered with its original
// ok and stored once.
function savePending() {
  const items = [...state.pending.values()].map((m) => ({
    cid: m.cid, to: m.to, text: m.text, convKey: m.convKey, ts: m.ts, kind: m.kind,
    attachments: m.attachments || null,
    replyTo: m.replyTo,
  }));
  try {
    sessionStorage.setItem("chinwag.pending", JSON.stringify(items));
  } catch (exc) {
    // Full or denied storage: pending sends then last only as long as the page.
  }
}

function restorePending() {
  let items = [];
  try {
    items = JSON.parse(sessionStorage.getItem("chinwag.pending") || "[]") || [];
  } catch (exc) {
    items = [];
  }
  for (const saved of items.slice(0, MAX_PENDING_SENDS)) {
    const isGroup = saved.convKey.startsWith("#");
    const conv = conversation(saved.convKey, isGroup ? "group" : "user", { to: saved.to });
    const item = {
      ...saved, id: null, seq: 0, from: state.session.user, mine: true, state: "pending",
      order: sendOrder++, retries: 0,
    };
    addToConversation(conv, item);
    state.pending.set(item.cid, item);
  }
}

async function transmit(item) {
  if (!state.authed || item.inFlightOn === state.ws) return; // resendPending() after connecting
  item.inFlight = true;
  item.inFlightOn = state.ws;
  let ok;
  try {
    const frame = { t: "send", to: item.to, text: item.text, cid: item.cid };
    if (item.attachments && item.attachments.length) frame.attachments = item.attachments;
    if (item.replyTo) frame.reply_to = item.replyTo.id; // a reply (actions.js)
    ok = await call(frame);
  } catch (err) {
    item.inFlightOn = null;
    if (err.code === "unavailable" || err.code === "timeout") {
      // Resent after reconnecting. It may have been stored, so it still
      // shadows an echo with its text until the resend's ok names the id.
      return;
    }
    if (err.code === "rate_limited" && item.retries < MAX_RATE_RETRIES) {
      item.retries += 1;
      setTimeout(() => transmit(item), err.retry_after_ms || 1000);
      return;
    }
    state.pending.delete(item.cid);
    savePending();
    unshadow(item);
    item.state = "failed";
    item.error = describe(err);
    queueRender();
    return;
  }
  item.inFlightOn = null;
  state.pending.delete(item.cid);
  savePending();
  const idKey = msgKey(state.session.nodeId, ok.id);
  const echo = state.byId.get(idKey);
  unshadow(item);
  if (echo && echo !== item) {
    // The stream delivered our own message before the ok: keep the echo.
    removeItem(item);
    item.state = "merged";
    echo.cid = item.cid;
  } else {
    item.id = ok.id;
    item.idKey = idKey;
    item.ts = ok.ts;
    if (ok.seq) item.seq = ok.seq; // 0 for a group hosted elsewhere: its echo comes later
    item.state = "sent";
    state.byId.set(idKey, item);
    const conv = state.conversations.get(item.convKey);
    if (conv) {
      if (item.seq) conv.lastSeq = Math.max(conv.lastSeq, item.seq);
      conv.messages.sort(orderOf);
    }
  }
  queueRender();
}

function resendPending() {
  for (const item of [...state.pending.values()].sort((a, b) => a.order - b.order)) {
    transmit(item);
  }
}

function retry(item) {
  const conv = state.conversations.get(item.convKey);
  if (item.deliveryFailed || !item.cid) {
    // The node stored the first attempt and answers its cid with the old ok:
    // a retry after a remote refusal is a new message.
    item.retried = true;
    if (conv) sendText(conv, item.text);
    return;
  }
  item.state = "pending";
  item.error = "";
  item.retries = 0;
  state.pending.set(item.cid, item);
  savePending();
  render();
  transmit(item);
}

// ------------------------------------------------------------------ contacts and groups
let contactsAsked = 0;

async function refreshContacts() {
  const asked = state.presenceEpoch;
  const request = ++contactsAsked;
  try {
    const data = await api("GET", "/api/contacts", undefined, state.session.token);
    if (request !== contactsAsked || !state.session) return; // a newer answer is coming
    state.contacts = data.contacts || [];
    for (const c of state.contacts) {
      // The node's answer beats what we had (a reconnect may have missed
      // changes) but not a presence frame that arrived while we asked.
      const key = normaliseAddress(c.address);
      const at = key.lastIndexOf("@");
      learnName(key.slice(0, at), key.slice(at + 1), c.display_name || "");
      const known = state.presence.get(key);
      if (known && known.epoch > asked) continue;
      state.presence.set(key, { status: c.status, last_active_at: c.last_active_at, epoch: asked });
    }
    render();
  } catch (err) {
    if (err.code === "unauthorized") logout(false);
  }
}

async function refreshGroups() {
  const asked = state.membershipEpoch;
  let data;
  try {
    data = await call({ t: "group", op: "list" });
  } catch (err) {
    return;
  }
  const listed = new Set();
  for (const g of data.groups || []) {
    const conv = conversation(groupKey(g.name, g.host), "group");
    listed.add(conv.key);
    conv.title = g.title || "";
    if (g.owner) conv.owner = g.owner;
    conv.member = true;
  }
  // The page no longer replays the queue, so the list says which of the
  // groups in the conversation list one is still in (unless a live event
  // said otherwise since asking).
  if (Array.isArray(data.groups)) {
    for (const conv of state.conversations.values()) {
      if (conv.kind === "group" && !listed.has(conv.key) && conv.memberEpoch <= asked) {
        conv.member = false;
      }
    }
  }
  // Open invitations (their events may predate this page's cursor).
  try {
    data = await call({ t: "group", op: "invites" });
  } catch (err) {
    data = {};
  }
  for (const i of data.invites || []) {
    const conv = conversation(groupKey(i.name, i.host), "group", { member: false });
    conv.member = false;
    conv.invited = true;
    conv.invitedBy = i.by;
    conv.title = i.title || conv.title;
  }
  render();
}

async function answerInvitation(accept) {
  clearError();
  const conv = state.conversations.get(state.openKey);
  if (!conv) return;
  try {
    await call({ t: "group", op: accept ? "accept" : "decline", group: conv.to });
    conv.invited = false; // an accept makes us a member with the host's "members" event
    render();
  } catch (err) {
    if (err.code === "not_found") conv.invited = false;
    showError(describe(err));
    render();
  }
}

async function loadMembers(conv) {
  try {
    const data = await call({ t: "group", op: "members", group: conv.to });
    if (state.openKey !== conv.key) return;
    state.members = data.members || [];
    conv.title = data.title || conv.title;
    if (data.owner) conv.owner = data.owner;
    for (const m of state.members) {
      const key = normaliseAddress(m.address);
      const at = key.lastIndexOf("@");
      if (at > 0) learnName(key.slice(0, at), key.slice(at + 1), m.display_name || "");
    }
  } catch (err) {
    if (err.code === "forbidden") conv.member = false;
    state.members = [];
  }
  render();
}

// ------------------------------------------------------------------ rendering
function queueRender() {
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(() => {
    state.renderQueued = false;
    render();
  });
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function clock(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return d.toDateString() === today.toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

function lastActive(p) {
  if (!p) return "never seen";
  if (p.status === "online") return "online";
  return p.last_active_at ? `last active ${clock(p.last_active_at)}` : "offline";
}

function presenceDot(p) {
  const status = p && p.status === "online" ? "online" : "offline";
  return el("span", { class: "presence-dot", dataset: { status }, role: "img", "aria-label": status, title: status });
}

function render() {
  if (!state.session) return;
  $("me").textContent = `${state.session.user}@${state.session.nodeName}`;
  renderConversations();
  renderContacts();
  renderConversation();
  renderCatchUp();
}

// Newest first by queue position, as the node lists them; a conversation
// with a send still waiting for its seq is the newest.
function rank(conv) {
  const last = conv.messages[conv.messages.length - 1];
  return last && !last.seq && last.state === "pending" ? Number.MAX_SAFE_INTEGER : conv.lastSeq;
}

function renderConversations() {
  const list = $("conversations");
  const convs = [...state.conversations.values()]
    .filter((conv) => !hooks.listed || conv.key === state.openKey || hooks.listed(conv))
    .sort(
    (a, b) => rank(b) - rank(a) || b.lastAt - a.lastAt || a.key.localeCompare(b.key),
  );
  const total = convs.reduce((sum, conv) => sum + conv.unread, 0);
  document.title = `${total ? `(${total}) ` : ""}chinwag · ${state.session.nodeName}`;
  $("more-conversations").hidden = state.convsNext === null;
  const items = convs.map((conv) => {
    const unread = conv.unread;
    return el(
      "li",
      {
        class: "conversation",
        dataset: { conv: conv.key },
        "aria-current": state.openKey === conv.key ? "true" : null,
      },
      el(
        "button",
        {
          type: "button",
          class: "conv-open",
          "aria-label": `${displayName(conv)}${unread ? `, ${unread} unread` : ""}`,
          onclick: () => openConversation(conv.key),
        },
        el("span", { class: "conv-name" }, displayName(conv)),
        el("span", { class: "conv-unread", hidden: unread === 0 }, String(unread)),
        el("span", { class: "conv-last" }, conv.lastText),
      ),
    );
  });
  keepingFocus(list, "data-conv", () => renderKeyed(list, "data-conv", items));
  // Not "no conversations" while the list is still on its way from the node.
  $("no-conversations").hidden = items.length > 0 || (!state.loaded && !state.legacy);
}

function renderContacts() {
  const items = state.contacts.map((c) => {
    const key = normaliseAddress(c.address);
    const p = state.presence.get(key) || c;
    const at = c.address.lastIndexOf("@");
    const address = c.address.slice(at + 1) === state.session.nodeName ? c.address.slice(0, at) : c.address;
    const shown = state.names.get(key) || address;
    return el(
      "li",
      { class: "contact", dataset: { address: c.address } },
      presenceDot(p),
      el(
        "button",
        {
          type: "button",
          class: "contact-open",
          "aria-label": `Chat with ${shown} (${lastActive(p)})`,
          onclick: () => openTyped(c.address),
        },
        el("span", { class: "contact-name" }, shown),
        el("span", { class: "last-active" }, lastActive(p)),
      ),
    );
  });
  const contacts = $("contacts");
  keepingFocus(contacts, "data-address", () => renderKeyed(contacts, "data-address", items));
}

function renderConversation() {
  const conv = state.openKey ? state.conversations.get(state.openKey) : null;
  $("chat-view").classList.toggle("conv-open", Boolean(conv));
  const composerOn = Boolean(conv) && (conv.kind !== "group" || conv.member);
  $("composer-text").disabled = !composerOn;
  $("send-button").disabled = !composerOn;
  if (!conv) {
    $("conv-title").textContent = "Pick a conversation";
    $("conv-subtitle").textContent = "";
    $("group-panel").hidden = true;
    $("invite-panel").hidden = true;
    $("messages").replaceChildren();
    for (const hook of hooks.rendered) hook(null);
    return;
  }
  $("conv-title").textContent = displayName(conv);
  let subtitle = "";
  if (conv.kind === "group") {
    subtitle = conv.title || "";
    const why = conv.invited ? "you are invited" : "you are not a member";
    if (!conv.member) subtitle = `${subtitle ? `${subtitle} · ` : ""}${why}`;
  } else {
    const p = state.presence.get(conv.key);
    if (conv.key === userKey(state.session.user, state.session.nodeId)) subtitle = "notes to yourself";
    else subtitle = p ? lastActive(p) : "";
  }
  $("conv-subtitle").textContent = subtitle;
  const invited = conv.kind === "group" && Boolean(conv.invited) && !conv.member;
  $("invite-panel").hidden = !invited;
  if (invited) {
    const by = conv.invitedBy ? memberName(conv.invitedBy) : "someone";
    $("invite-text").textContent = `${by} invited you to ${displayName(conv)}. Join?`;
  }
  const groupPanel = $("group-panel");
  groupPanel.hidden = conv.kind !== "group" || invited;
  if (conv.kind === "group") {
    $("group-members").replaceChildren(
      ...state.members.map((m) =>
        el(
          "li",
          { class: "member", dataset: { address: normaliseAddress(m.address) } },
          presenceDot(m),
          el("span", { class: "member-name" }, memberName(normaliseAddress(m.address))),
          el("span", { class: "last-active" }, lastActive(m)),
        ),
      ),
    );
    $("add-member-form").hidden = !conv.member || !isOwner(conv);
    $("leave-group-button").hidden = !conv.member;
  }
  const list = $("messages");
  const same = list.dataset.conv === conv.key;
  const nearBottom = !same || list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  // The first message in view stays where it is when older ones are put
  // above it (a page loaded while scrolling up).
  let anchor = null;
  let anchorTop = 0;
  if (!nearBottom) {
    for (const li of list.children) {
      if (li.offsetTop + li.offsetHeight > list.scrollTop) {
        anchor = li;
        anchorTop = li.offsetTop - list.scrollTop;
        break;
      }
    }
  }
  renderMessages(list, conv);
  if (nearBottom) list.scrollTop = list.scrollHeight;
  else if (anchor && anchor.isConnected) list.scrollTop = anchor.offsetTop - anchorTop;
  $("history-start").hidden = !(conv.loaded && conv.complete && conv.messages.length > 0);
  for (const hook of hooks.rendered) hook(conv);
}

// Owner-only actions are shown to the owner only (the host refuses others
// anyway). A group whose owner this page does not know (an older node) is
// managed from its host node, as before.
function isOwner(conv) {
  const me = userKey(state.session.user, state.session.nodeId);
  if (conv.owner) return normaliseAddress(conv.owner) === me;
  return conv.key.endsWith(`@${state.session.nodeId}`);
}

function renderCatchUp() {
  const behind = state.head - state.cursor;
  const total = state.head - state.syncFrom;
  const on = state.authed && behind > 0 && total >= CATCH_UP_MIN;
  $("catch-up").hidden = !on;
  if (!on) return;
  const done = total - behind;
  $("catch-up-progress").max = total;
  $("catch-up-progress").value = done;
  $("catch-up-count").textContent = `${done}/${total}`;
}

function renderSearch() {
  const search = state.search;
  const panel = $("search-results-panel");
  panel.hidden = !search.q;
  if (!search.q) {
    $("search-results").replaceChildren();
    return;
  }
  let status = "searching…";
  if (!search.busy) {
    const n = search.hits.length;
    status = n === 0 ? "No messages found." : `${n}${search.next !== null ? "+" : ""} found`;
  }
  $("search-status").textContent = status;
  $("search-more").hidden = search.busy || search.next === null;
  const items = search.hits.map((hit) => {
    const m = hit.msg;
    const mine = m.from && m.from.u === state.session.user && m.from.n === state.session.nodeId;
    let from = m.from ? showUser(m.from.u, m.from.n) : "";
    if (mine) from = "you";
    else if (from === keyName(hit.conv)) from = ""; // a 1:1 hit: the conversation says who
    const text = (m.body && m.body.text) || "";
    return el(
      "li",
      { class: "search-hit", dataset: { conv: hit.conv, id: m.id, seq: m.seq } },
      el(
        "button",
        { type: "button", class: "hit-open", onclick: () => jumpTo(hit.conv, m) },
        el("span", { class: "hit-conv" }, keyName(hit.conv)),
        el("time", { class: "msg-time", datetime: new Date(m.ts || 0).toISOString() }, clock(m.ts)),
        from ? el("span", { class: "hit-from" }, from) : null,
        el("span", { class: "hit-text" }, excerpt(text, search.q)),
      ),
    );
  });
  const list = $("search-results");
  keepingFocus(list, "data-seq", () => list.replaceChildren(...items));
}

// Message elements are kept and patched in place, not rebuilt: the list is an
// aria-live region (rebuilding would announce the whole conversation again)
// and a focused Retry button must not vanish under the keyboard.
const messageElements = new WeakMap(); // item -> {li, signature}

function renderMessages(list, conv) {
  if (list.dataset.conv !== conv.key) {
    list.replaceChildren();
    list.dataset.conv = conv.key;
  }
  let next = list.firstElementChild;
  for (const m of conv.messages) {
    if (hidden(m)) continue;
    const who = m.fromKey ? state.names.get(m.fromKey) || "" : "";
    let signature = `${m.state}|${m.id}|${m.seq}|${m.error || ""}|${m.retried ? 1 : 0}|${who}|${m.rev || 0}|${m.text}`;
    for (const hook of hooks.signature) signature += `|${hook(m)}`;
    let entry = messageElements.get(m);
    if (!entry) {
      entry = { li: renderMessage(m), signature };
      messageElements.set(m, entry);
    } else if (entry.signature !== signature) {
      const fresh = renderMessage(m);
      entry.li.className = fresh.className;
      Object.assign(entry.li.dataset, fresh.dataset);
      entry.li.replaceChildren(...fresh.childNodes);
      entry.signature = signature;
    }
    entry.li.classList.toggle("highlight", Boolean(m.idKey) && m.idKey === state.highlight);
    if (entry.li === next) next = next.nextElementSibling;
    else list.insertBefore(entry.li, next);
  }
  while (next) {
    const after = next.nextElementSibling;
    next.remove();
    next = after;
  }
}

// Rebuilds a list, then puts the keyboard focus back on the same item.
// The conversation and contact lists re-render whenever a frame changes them.
// An item still listed keeps its element, patched to look like the fresh one,
// and is not moved unless its position changed. Chromium sends a click whose
// press and release hit different elements to their common ancestor, so a
// button replaced between the two never heard the click: the user clicked and
// nothing opened. An item's listeners must depend on its key alone, as the
// kept element keeps the ones it was built with.
function renderKeyed(list, attribute, items) {
  const old = new Map([...list.children].map((li) => [li.getAttribute(attribute), li]));
  const kept = items.map((fresh) => {
    const was = old.get(fresh.getAttribute(attribute));
    if (!was || !sameShape(was, fresh)) return fresh;
    copyInto(was, fresh);
    return was;
  });
  kept.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
  while (list.children.length > kept.length) list.lastElementChild.remove();
}

// The same tags and text nodes all the way down.
function sameShape(a, b) {
  if (a.nodeType !== b.nodeType || a.nodeName !== b.nodeName) return false;
  if (a.childNodes.length !== b.childNodes.length) return false;
  return [...a.childNodes].every((child, i) => sameShape(child, b.childNodes[i]));
}

// Attributes and texts of `fresh` onto `was`, which has the same shape.
function copyInto(was, fresh) {
  if (was.nodeType !== Node.ELEMENT_NODE) {
    if (was.data !== fresh.data) was.data = fresh.data;
    return;
  }
  for (const { name } of [...was.attributes]) {
    if (!fresh.hasAttribute(name)) was.removeAttribute(name);
  }
  for (const { name, value } of fresh.attributes) {
    if (was.getAttribute(name) !== value) was.setAttribute(name, value);
  }
  was.childNodes.forEach((child, i) => copyInto(child, fresh.childNodes[i]));
}

function keepingFocus(list, attribute, build) {
  const active = document.activeElement;
  const item = active && list.contains(active) ? active.closest("li") : null;
  const key = item ? item.getAttribute(attribute) : null;
  build();
  if (key === null) return;
  const again = [...list.children].find((li) => li.getAttribute(attribute) === key);
  const target = again && again.querySelector("button");
  if (target) target.focus();
}

function renderMessage(m) {
  const li = buildMessage(m);
  runHooks("message", m, li);
  return li;
}

function buildMessage(m) {
  if (m.kind === "event") return el("li", { class: "event" }, m.text);
  const stateText = { pending: "sending…", sent: "✓", failed: `failed: ${m.error || ""}` }[m.state];
  const li = el(
    "li",
    {
      class: m.mine ? "message mine" : "message",
      dataset: { id: m.id || "", seq: m.seq || "", state: m.state, origin: m.idKey ? m.idKey.split(":")[0] : "" },
    },
    el(
      "span",
      { class: "msg-from", title: m.fromKey && !m.mine ? keyName(m.fromKey) : null },
      m.mine ? "you" : m.fromKey ? showUser(...splitKey(m.fromKey)) : m.from,
    ),
    el("time", { class: "msg-time", datetime: new Date(m.ts || Date.now()).toISOString() }, clock(m.ts)),
    m.mine && stateText
      ? el("span", { class: "msg-state", "aria-label": m.state }, stateText)
      : null,
    m.state === "failed" && !m.retried
      ? el("button", { type: "button", class: "msg-retry", onclick: () => retry(m) }, "Retry")
      : null,
    // Never HTML: the text goes in as text nodes (view.js makes links of
    // URLs with DOM calls), attachments are built by files.js the same way.
    m.text ? el("p", { class: "msg-text" }, ...(hooks.messageBody ? hooks.messageBody(m) : [m.text])) : null,
    m.attachments && hooks.attachments ? hooks.attachments(m) : null,
  );
  return li;
}

function splitKey(key) {
  const at = key.lastIndexOf("@");
  return [key.slice(0, at), key.slice(at + 1)];
}

// ------------------------------------------------------------------ actions
function openConversation(key, focus = true) {
  const conv = state.conversations.get(key);
  if (!conv) return;
  if (state.openKey !== key) state.highlight = null;
  state.openKey = key;
  saveOpenKey();
  state.members = [];
  markRead(conv);
  render();
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
  if (conv.kind === "group" && conv.member && state.authed) loadMembers(conv);
  if (state.authed) showConversation(conv);
  if (focus) $("composer-text").focus();
}

// The open conversation survives a reload of the tab, so its newest page can
// be asked for together with the list.
function saveOpenKey() {
  try {
    if (state.openKey) sessionStorage.setItem("chinwag.open", state.openKey);
    else sessionStorage.removeItem("chinwag.open");
  } catch (exc) {
    // Storage denied: a reload then opens on the list.
  }
}

function openTyped(text) {
  let target;
  try {
    target = parseTarget(text);
  } catch (err) {
    showError(describe(err));
    return false;
  }
  conversation(target.key, target.kind, {
    to: target.to,
    provisional: target.provisional,
    name: target.name,
  });
  openConversation(target.key);
  return true;
}

function rememberSession(session) {
  state.session = session;
  sessionStorage.setItem("chinwag.session", JSON.stringify(session));
  sessionStorage.setItem("chinwag.device", session.device);
}

async function login(signup) {
  clearError();
  const user = $("login-user").value.trim().toLowerCase();
  const password = $("login-password").value;
  if (!user || !password) {
    showError("Enter a user name and a password.");
    return;
  }
  const buttons = [$("login-button"), $("signup-button")];
  buttons.forEach((b) => (b.disabled = true));
  try {
    if (signup) {
      const signupBody = { user, password };
      const invite = $("login-invite").value.trim();
      if (invite) signupBody.invite = invite;
      await api("POST", "/api/signup", signupBody);
      $("login-invite").value = "";
    }
    const body = { user, password };
    const device = sessionStorage.getItem("chinwag.device");
    if (device) body.device = device;
    const data = await api("POST", "/api/login", body);
    rememberSession({
      token: data.token,
      device: data.device,
      user: data.user,
      nodeId: data.node_id,
      nodeName: data.node_name,
    });
    $("login-password").value = "";
    start();
  } catch (err) {
    if (err.code === "user_exists") showError(`The name ${user} is taken on this node.`);
    else if (err.code === "weak_password") {
      // The node says why (too short, too common, the user name).
      showError(`Choose another password: ${err.message}.`);
      $("login-password").focus();
    } else showError(describe(err));
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function start() {
  restorePending();
  learnLabel(state.session.nodeId, state.session.nodeName);
  const open = sessionStorage.getItem("chinwag.open");
  if (open && (isNodeId(open.slice(open.lastIndexOf("@") + 1)))) {
    conversation(open, open.startsWith("#") ? "group" : "user");
    state.openKey = open;
  }
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  render();
  connect();
}

async function logout(tellNode = true) {
  const session = state.session;
  state.session = null;
  sessionStorage.removeItem("chinwag.session");
  sessionStorage.removeItem("chinwag.pending");
  sessionStorage.removeItem("chinwag.open");
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  const ws = state.ws;
  disconnected();
  if (ws) ws.close(1000, "log out");
  if (tellNode && session) {
    try {
      await api("POST", "/api/logout", undefined, session.token);
    } catch (err) {
      // The token is forgotten here either way.
    }
  }
  Object.assign(state, {
    cursor: 0,
    acked: 0,
    openKey: null,
    contacts: [],
    members: [],
    conversations: new Map(),
    byId: new Map(),
    bySeq: new Map(),
    failed: new Map(),
    pending: new Map(),
    presence: new Map(),
    loaded: false,
    legacy: false,
    head: 0,
    syncFrom: 0,
    convsNext: null,
    highlight: null,
    jumping: null,
    names: new Map(),
    namesAsked: new Set(),
    namesWanted: new Set(),
  });
  closeSearch();
  document.title = `chinwag · ${session ? session.nodeName : ""}`;
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-user").focus();
}

function bind() {
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    login(false);
  });
  $("signup-button").addEventListener("click", () => login(true));
  $("error-dismiss").addEventListener("click", clearError);
  $("logout-button").addEventListener("click", () => logout(true));
  $("back-button").addEventListener("click", () => {
    state.openKey = null;
    saveOpenKey();
    render();
    $("new-chat-to").focus();
  });
  $("new-chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearError();
    if (openTyped($("new-chat-to").value)) $("new-chat-to").value = "";
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const conv = state.conversations.get(state.openKey);
    const text = $("composer-text").value;
    if (!conv || !text.trim()) return;
    if (runHooks("submit", conv, text)) return; // an edit in progress (actions.js)
    if (new TextEncoder().encode(text).length > 16384) {
      showError("A message is at most 16 KiB.");
      return;
    }
    $("composer-text").value = "";
    sendText(conv, text);
  });
  $("composer-text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("add-contact-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError();
    const input = $("add-contact-address");
    const address = input.value.trim();
    if (!address) return;
    input.value = ""; // at once, so an address typed meanwhile is kept
    try {
      await api("POST", "/api/contacts", { address }, state.session.token);
      await refreshContacts();
    } catch (err) {
      if (!input.value) input.value = address;
      showError(describe(err));
    }
  });
  $("create-group-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError();
    const name = $("create-group-name").value.trim().replace(/^#/, "");
    const title = $("create-group-title").value.trim();
    const frame = { t: "group", op: "create", name };
    if (title) frame.title = title;
    try {
      await call(frame);
    } catch (err) {
      showError(describe(err));
      return;
    }
    $("create-group-name").value = "";
    $("create-group-title").value = "";
    const key = groupKey(name, state.session.nodeId);
    const conv = conversation(key, "group");
    conv.title = title;
    conv.member = true;
    openConversation(key);
  });
  $("add-member-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    clearError();
    const conv = state.conversations.get(state.openKey);
    const address = $("add-member-address").value.trim();
    if (!conv || !address) return;
    try {
      await call({ t: "group", op: "add", group: conv.to, members: [address] });
      $("add-member-address").value = "";
      await loadMembers(conv);
    } catch (err) {
      showError(describe(err));
    }
  });
  $("accept-invite-button").addEventListener("click", () => answerInvitation(true));
  $("decline-invite-button").addEventListener("click", () => answerInvitation(false));
  $("leave-group-button").addEventListener("click", async () => {
    clearError();
    const conv = state.conversations.get(state.openKey);
    if (!conv) return;
    try {
      await call({ t: "group", op: "leave", group: conv.to });
      conv.member = false;
      state.members = [];
      render();
    } catch (err) {
      showError(describe(err));
    }
  });
  $("messages").addEventListener("scroll", () => {
    const conv = state.openKey && state.conversations.get(state.openKey);
    if (conv && $("messages").scrollTop < SCROLL_LOAD_PX) fillScreen(conv);
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    clearError();
    runSearch(false);
  });
  $("search-more").addEventListener("click", () => runSearch(true));
  $("search-clear").addEventListener("click", closeSearch);
  $("more-conversations").addEventListener("click", loadMoreConversations);
  document.addEventListener("visibilitychange", () => {
    const conv = state.openKey && state.conversations.get(state.openKey);
    if (conv) {
      markRead(conv);
      queueRender();
    }
  });
}

async function showNodeName() {
  try {
    const info = await api("GET", "/.well-known/chinwag");
    $("node-name").textContent = info.name;
    document.title = `chinwag · ${info.name}`;
    if (Number.isInteger(info.min_password_length)) {
      $("password-rule").textContent =
        `A new password needs at least ${info.min_password_length} characters ` +
        "and must not be a common one.";
    }
  } catch (err) {
    $("node-name").textContent = "(unreachable)";
  }
}

function boot() {
  bind();
  showNodeName();
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem("chinwag.session") || "null");
  } catch (exc) {
    saved = null;
  }
  if (saved && saved.token) {
    state.session = saved;
    start();
  } else {
    $("login-user").focus();
  }
}

// A small hook for tests, curious users and the add-on modules (they run in
// this page anyway; the token is in sessionStorage for any of them).
window.chinwag = {
  get cursor() {
    return state.cursor;
  },
  get connection() {
    return state.conn;
  },
  hooks,
  get session() {
    return state.session;
  },
  get openKey() {
    return state.openKey;
  },
  conversation: (key) => state.conversations.get(key) || null,
  open: (key) => openConversation(key),
  send: (conv, text, attachments) => sendText(conv, text, attachments),
  call: (frame) => call(frame),
  render: () => queueRender(),
  showError,
  describe,
  el,
  displayName,
  showUser: (key) => showUser(...splitKey(key)),
  onScreen: (conv) => onScreen(conv),
  get user() {
    return state.session ? userKey(state.session.user, state.session.nodeId) : null;
  },
  // For the client's other modules (actions.js, signals.js): the page's
  // state and helpers as they are.
  app: {
    state, call, sendQuiet, api, el, $, msgKey, userKey, showUser,
    queueRender, render, showError, clearError, describe,
  },
};

// After every module of the page ran (they register their hooks).
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
