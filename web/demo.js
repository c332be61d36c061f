// The demo page: one WSGate client, shown as it goes.
import { WSGate } from "./wsgate.js";

const $ = (id) => document.getElementById(id);
const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content;

const gw = new WSGate(meta("wsgate-location") || "/ws");
$("wsurl").textContent = gw.url;

/** The message list keeps this many lines, each text cut to maxText. */
const maxLines = 500;
const maxText = 2000;

/** log adds a line to the message list, newest first, dropping the oldest. */
function log(kind, text, cls = "") {
  if (text.length > maxText) text = `${text.slice(0, maxText)}… (${text.length - maxText} more)`;
  const li = document.createElement("li");
  li.className = cls;
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  const k = document.createElement("span");
  k.className = "kind";
  k.textContent = kind;
  li.append(time, k, text);
  const list = $("log");
  list.prepend(li);
  while (list.children.length > maxLines) list.lastElementChild.remove();
}

/** hex is a preview of the first bytes of buf, as hex pairs. */
function hex(buf, max = 32) {
  const b = new Uint8Array(buf, 0, Math.min(max, buf.byteLength));
  const s = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
  return buf.byteLength > max ? s + " …" : s;
}

gw.addEventListener("state", (e) => {
  $("state").textContent = e.detail;
  $("state").className = "state " + e.detail;
  $("reconnect").hidden = e.detail !== "closed";
  $("send").querySelector("button").disabled = e.detail !== "open";
});

gw.addEventListener("welcome", (e) => {
  const { id, pushUrls } = e.detail;
  $("id").textContent = id;
  $("push").replaceChildren(...pushUrls.map((u) => {
    const li = document.createElement("li");
    const c = document.createElement("code");
    c.className = "push-url";
    c.textContent = u;
    li.append(c);
    return li;
  }));
  $("curl").textContent = `curl -d 'hello' ${pushUrls[0]}`;
  log("welcome", pushUrls.join(", "), "event");
});

gw.addEventListener("message", (e) => {
  const { data, binary } = e.detail;
  if (binary) {
    log("binary", `${data.byteLength} bytes: ${hex(data)}`, "binary");
  } else {
    log("text", data, "text");
  }
});

gw.addEventListener("close", (e) => {
  const { code, reason, delay } = e.detail;
  const next = delay === null ? "not reconnecting" : `reconnecting in ${Math.round(delay)} ms`;
  log("close", `${code}${reason ? ` (${reason})` : ""}: ${next}`, "event");
});

$("reconnect").addEventListener("click", () => gw.connect());

$("upstream-note").textContent = meta("wsgate-upstream") === "on"
  ? "Sent to the [upstream] url backend; its replies appear below."
  : "No [upstream] url is configured: wsgate discards (and counts) client messages.";

$("send").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("message").value;
  gw.send(text);
  log("sent", text, "sent");
  $("message").value = "";
});
