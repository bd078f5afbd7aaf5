// chinwag web client: desktop notifications (loaded after app.js).
//
// Once the user allows them (the "Turn on notifications" button asks the
// browser), a message from someone else shows a notification with the sender
// and a short preview, unless its conversation is muted or it is the
// conversation on screen in a focused tab. Clicking one opens the
// conversation. Mutes and the on/off choice are kept in localStorage per
// account ("chinwag.muted.<user@node id>", "chinwag.notify.<user@node id>").
// The unread total in the tab's title is app.js's (renderConversations).

const app = window.chinwag;
const $ = (id) => document.getElementById(id);
const PREVIEW_CHARS = 100;
const MAX_MUTED = 1000;
const supported = typeof window.Notification === "function";

function storageKey(what) {
  return `chinwag.${what}.${app.user}`;
}

function read(what, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(storageKey(what)) || "null");
    return value === null ? fallback : value;
  } catch (exc) {
    return fallback;
  }
}

function write(what, value) {
  try {
    localStorage.setItem(storageKey(what), JSON.stringify(value));
  } catch (exc) {
    // Storage denied: the choice lasts for this page only.
  }
}

export function isMuted(key) {
  return read("muted", []).includes(key);
}

function setMuted(key, muted) {
  const list = read("muted", []).filter((k) => k !== key);
  if (muted) list.push(key);
  write("muted", list.slice(-MAX_MUTED));
}

// The user's choice in this page ("off" after turning them off here).
function wanted() {
  return read("notify", "on") !== "off";
}

function enabled() {
  return supported && Notification.permission === "granted" && wanted();
}

function preview(item) {
  let text = (item.text || "").replace(/\s+/g, " ").trim();
  if (!text && item.attachments && item.attachments.length) {
    text = item.attachments.map((a) => a.name || "a file").join(", ");
  }
  return text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS - 1)}…` : text;
}

app.hooks.incoming.push((item, conv) => {
  if (!enabled() || isMuted(conv.key)) return;
  // The conversation on screen in a focused tab is being read already.
  if (app.onScreen(conv) && document.hasFocus()) return;
  const sender = item.fromKey ? app.showUser(item.fromKey) : item.from;
  const title = conv.kind === "group" ? `${sender} in ${app.displayName(conv)}` : sender;
  let note;
  try {
    // One per conversation (tag): a burst replaces, it does not pile up.
    note = new Notification(title, { body: preview(item), tag: conv.key });
  } catch (exc) {
    return; // some browsers allow notifications only from a service worker
  }
  note.onclick = () => {
    window.focus();
    app.open(conv.key);
    note.close();
  };
});

// ------------------------------------------------------------------ controls
function renderButton() {
  const button = $("notify-button");
  if (!supported || !app.user) {
    button.hidden = true;
    return;
  }
  button.hidden = false;
  const permission = Notification.permission;
  button.disabled = permission === "denied";
  let label = "Turn on notifications";
  if (permission === "denied") label = "Notifications blocked";
  else if (permission === "granted" && wanted()) label = "Turn off notifications";
  // A short word keeps the top bar narrow on a phone; the label says what it does.
  button.setAttribute("aria-label", label);
  button.title = label;
  button.textContent = enabled() ? "Notify ✓" : "Notify";
  button.setAttribute("aria-pressed", String(enabled()));
}

async function toggleNotifications() {
  if (!supported) return;
  if (Notification.permission === "granted") {
    write("notify", wanted() ? "off" : "on");
  } else if (Notification.permission === "default") {
    try {
      const answer = await Notification.requestPermission();
      if (answer === "granted") write("notify", "on");
    } catch (exc) {
      app.showError("The browser did not ask for permission to notify.");
    }
  }
  renderButton();
}

app.hooks.rendered.push((conv) => {
  renderButton();
  const mute = $("mute-button");
  if (!conv) return;
  const muted = isMuted(conv.key);
  mute.setAttribute("aria-pressed", String(muted));
  mute.textContent = muted ? "Unmute" : "Mute";
});

$("notify-button").addEventListener("click", toggleNotifications);
$("mute-button").addEventListener("click", () => {
  const key = app.openKey;
  if (!key) return;
  setMuted(key, !isMuted(key));
  app.render();
});
