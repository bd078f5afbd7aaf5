// chinwag web client: files and photos (loaded after app.js).
//
// Attach: the + button, dropping files on the conversation, or pasting an
// image into the message box. Each file is uploaded to this node with
// `POST /api/blobs` (the session token in the Authorization header, the
// name percent-encoded in X-Chinwag-Filename) through XMLHttpRequest, whose
// upload events drive the progress bar; then one message carries the text
// typed so far and every file of the batch (`send {attachments}`).
//
// Show: images inline (the node's small preview when there is one; a click
// shows the full size), any other file as a chip with its name, type and size
// that downloads it. Blobs are fetched with the Authorization header and shown
// through object URLs: no token ever goes into a URL. Nothing from a message
// is inserted as HTML.

const app = window.chinwag;
const $ = (id) => document.getElementById(id);
const INLINE_TYPES = new Set(["image/jpeg", "image/png", "image/gif", "image/webp"]);
const MAX_FILES_PER_MESSAGE = 10;
const MAX_PENDING_RETRIES = 20; // blob_pending: the node is still fetching it
const MAX_CACHED_URLS = 200;

// ------------------------------------------------------------------ sizes
export function humanSize(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "";
  // Binary multiples, as the node's limits are set (25 MiB shows as "25 MB").
  const units = ["B", "KB", "MB", "GB"];
  let n = bytes;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

// ------------------------------------------------------------------ upload
function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/blobs");
    xhr.setRequestHeader("Authorization", `Bearer ${app.session.token}`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("X-Chinwag-Filename", encodeURIComponent(file.name || "file"));
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded, e.total);
    };
    xhr.onload = () => {
      let data = {};
      try {
        data = JSON.parse(xhr.responseText || "{}");
      } catch (exc) {
        data = {};
      }
      if (xhr.status === 201 || xhr.status === 200) resolve(data);
      else reject(data.error || { code: "internal", message: `HTTP ${xhr.status}` });
    };
    xhr.onerror = () => reject({ code: "unavailable", message: "The node cannot be reached." });
    xhr.onabort = () => reject({ code: "aborted", message: "upload cancelled" });
    xhr.send(file);
  });
}

function refusal(file, err) {
  const name = file.name || "the file";
  if (err.code === "file_too_large") {
    return `${name} is too large: files are limited to ${humanSize(err.limit)} on this node.`;
  }
  if (err.code === "quota_exceeded") {
    return `${name} does not fit: your files are limited to ${humanSize(err.limit)} on this node.`;
  }
  return `${name} was not uploaded: ${app.describe(err)}`;
}

let uploading = false;

async function attach(files) {
  files = [...files].filter((f) => f && f.size !== undefined);
  const conv = app.openKey && app.conversation(app.openKey);
  if (!files.length || !conv || uploading) return;
  if (files.length > MAX_FILES_PER_MESSAGE) {
    app.showError(`At most ${MAX_FILES_PER_MESSAGE} files go in one message.`);
    return;
  }
  uploading = true;
  const status = $("upload-status");
  const bar = $("upload-progress");
  const label = $("upload-text");
  const total = files.reduce((sum, f) => sum + f.size, 0) || 1;
  let done = 0;
  status.hidden = false;
  const attachments = [];
  try {
    for (const file of files) {
      label.textContent = `uploading ${file.name || "file"}…`;
      let data;
      try {
        data = await upload(file, (loaded) => {
          bar.max = total;
          bar.value = done + loaded;
          status.dataset.loaded = String(done + loaded);
        });
      } catch (err) {
        app.showError(refusal(file, err));
        return;
      }
      done += file.size;
      const att = { sha256: data.sha256, name: data.name, type: data.type, size: data.size };
      if (data.preview) att.preview = data.preview;
      attachments.push(att);
    }
    bar.value = total;
    const text = $("composer-text").value;
    $("composer-text").value = "";
    app.send(conv, text, attachments);
  } finally {
    uploading = false;
    status.hidden = true;
    label.textContent = "";
  }
}

// ------------------------------------------------------------------ download
const urls = new Map(); // "sha256" or "sha256?preview" -> Promise<object URL>

async function fetchBlob(sha, preview) {
  const path = `/api/blobs/${encodeURIComponent(sha)}${preview ? "?preview=1" : ""}`;
  for (let attempt = 0; ; attempt += 1) {
    const response = await fetch(path, {
      headers: { authorization: `Bearer ${app.session.token}` },
      cache: "no-store",
    });
    if (response.ok) return URL.createObjectURL(await response.blob());
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch (exc) {
      error = {};
    }
    if (error.code === "blob_pending" && attempt < MAX_PENDING_RETRIES) {
      // The user's node is still fetching it from the sender's node.
      await new Promise((r) => setTimeout(r, Math.min(error.retry_after_ms || 1000, 10000)));
      continue;
    }
    throw error.code ? error : { code: "internal", message: `HTTP ${response.status}` };
  }
}

function blobUrl(sha, preview) {
  const key = preview ? `${sha}?preview` : sha;
  let url = urls.get(key);
  if (!url) {
    if (urls.size >= MAX_CACHED_URLS) {
      const [oldKey, oldUrl] = urls.entries().next().value;
      urls.delete(oldKey);
      oldUrl.then((u) => URL.revokeObjectURL(u), () => {});
    }
    url = fetchBlob(sha, preview);
    url.catch(() => urls.delete(key)); // a failure is tried again next time
    urls.set(key, url);
  }
  return url;
}

// ------------------------------------------------------------------ showing
function isValid(att) {
  return att && typeof att.sha256 === "string" && /^[0-9a-f]{64}$/.test(att.sha256);
}

function describeFile(att) {
  return [att.name || "file", att.type || "", humanSize(att.size)].filter(Boolean).join(" · ");
}

function renderImage(att) {
  const img = app.el("img", { class: "att-img", alt: att.name || "image" });
  const preview = att.preview && isValid(att.preview);
  if (preview && att.preview.width && att.preview.height) {
    img.width = att.preview.width;
    img.height = att.preview.height;
  }
  blobUrl(att.sha256, Boolean(preview)).then(
    (url) => (img.src = url),
    () => img.replaceWith(app.el("span", { class: "att-error" }, `${att.name || "image"} (not available)`)),
  );
  return app.el(
    "button",
    {
      type: "button",
      class: "att-image",
      title: describeFile(att),
      "aria-label": `Show ${att.name || "the image"} full size`,
      onclick: () => showFull(att),
    },
    img,
  );
}

function renderFile(att) {
  return app.el(
    "button",
    {
      type: "button",
      class: "att-file",
      title: `Download ${att.name || "the file"}`,
      onclick: () => download(att),
    },
    app.el("span", { class: "att-name" }, att.name || "file"),
    app.el("span", { class: "att-meta" }, [att.type, humanSize(att.size)].filter(Boolean).join(" · ")),
  );
}

async function download(att) {
  try {
    const url = await blobUrl(att.sha256, false);
    const a = app.el("a", { href: url, download: att.name || "file", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    app.showError(`${att.name || "The file"} could not be downloaded: ${app.describe(err)}`);
  }
}

async function showFull(att) {
  let url;
  try {
    url = await blobUrl(att.sha256, false);
  } catch (err) {
    app.showError(`${att.name || "The image"} could not be loaded: ${app.describe(err)}`);
    return;
  }
  const close = () => {
    overlay.remove();
    document.removeEventListener("keydown", onKey);
  };
  const onKey = (e) => {
    if (e.key === "Escape") close();
  };
  const overlay = app.el(
    "div",
    { class: "lightbox", role: "dialog", "aria-label": att.name || "image" },
    app.el("img", { class: "lightbox-img", src: url, alt: att.name || "image" }),
    app.el("button", { type: "button", class: "lightbox-close", onclick: close }, "Close"),
  );
  overlay.addEventListener("click", (e) => {
    if (e.target === overlay) close();
  });
  document.addEventListener("keydown", onKey);
  document.body.append(overlay);
  overlay.querySelector("button").focus();
}

app.hooks.attachments = (item) => {
  const items = (item.attachments || []).filter(isValid);
  if (!items.length) return null;
  return app.el(
    "div",
    { class: "attachments" },
    ...items.map((att) => (INLINE_TYPES.has(att.type) ? renderImage(att) : renderFile(att))),
  );
};

// ------------------------------------------------------------------ input
app.hooks.rendered.push((conv) => {
  $("attach-button").disabled = $("composer-text").disabled || uploading;
});

$("attach-button").addEventListener("click", () => $("attach-input").click());
$("attach-input").addEventListener("change", (e) => {
  const files = [...e.target.files];
  e.target.value = "";
  attach(files);
});
const area = $("conversation");
area.addEventListener("dragover", (e) => {
  if (!e.dataTransfer || ![...e.dataTransfer.types].includes("Files")) return;
  if ($("composer-text").disabled) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = "copy";
  area.classList.add("dropping");
});
area.addEventListener("dragleave", () => area.classList.remove("dropping"));
area.addEventListener("drop", (e) => {
  area.classList.remove("dropping");
  if (!e.dataTransfer || !e.dataTransfer.files.length || $("composer-text").disabled) return;
  e.preventDefault();
  attach(e.dataTransfer.files);
});
$("composer-text").addEventListener("paste", (e) => {
  const files = [...((e.clipboardData && e.clipboardData.files) || [])];
  if (!files.length) return; // plain text pastes as usual
  e.preventDefault();
  attach(files);
});
