// wsgate.js: a dependency-free browser client for wsgate (WEB.md).
//
//   import { WSGate } from "./wsgate.js";
//   const gw = new WSGate("/ws");
//   gw.addEventListener("welcome", () => console.log(gw.id, gw.pushUrls));
//   gw.addEventListener("message", (e) => console.log(e.detail.data));

/** Close code of a DELETE on the push URL, or of close(): do not reconnect. */
export const NORMAL = 1000;
/** Close code of a sidecar restart: reconnect at once. */
export const SERVICE_RESTART = 1012;

/** Defaults of the WSGate options. */
export const defaults = Object.freeze({
  minDelay: 1000, // first reconnect delay, ms
  maxDelay: 30000, // cap of the exponential backoff, ms
  restartDelay: 100, // delay after 1012, ms
});

/**
 * parseWelcome parses a welcome frame in either format: push URLs joined
 * by "," (welcome = "urls") or {"id","push"} (welcome = "json").
 * It returns {id, pushUrls} and throws on anything else.
 */
export function parseWelcome(text) {
  let id, pushUrls;
  if (text.startsWith("{")) {
    const w = JSON.parse(text);
    id = w.id;
    pushUrls = w.push;
    if (!Array.isArray(pushUrls) || !pushUrls.every((u) => typeof u === "string")) {
      throw new Error("wsgate: welcome has no push URL list");
    }
  } else {
    pushUrls = text.split(",");
    id = decodeURIComponent(new URL(pushUrls[0]).username);
  }
  if (typeof id !== "string" || id === "" || pushUrls.length === 0) {
    throw new Error(`wsgate: not a welcome: ${JSON.stringify(text)}`);
  }
  for (const u of pushUrls) new URL(u); // throws on a malformed URL
  return { id, pushUrls };
}

/**
 * reconnectDelay is how long to wait, in ms, before reconnecting after a
 * close with code when attempt earlier reconnects failed since the last
 * welcome; null means do not reconnect. 1000 (DELETE, or close()) stops;
 * 1012 (sidecar restart) retries after about restartDelay at first; every
 * other code (1001 idle, 1006 connection lost, 1008 slow client, ...) backs
 * off exponentially from minDelay to maxDelay. Each delay is jittered to a
 * random value in [d/2, d] so that clients of a restarted sidecar spread out.
 */
export function reconnectDelay(code, attempt, options = defaults, random = Math.random) {
  if (code === NORMAL) return null;
  const o = withDefaults(options);
  const base = code === SERVICE_RESTART && attempt === 0 ? o.restartDelay : o.minDelay;
  const d = Math.min(o.maxDelay, base * 2 ** attempt);
  return d / 2 + random() * (d / 2);
}

/**
 * withDefaults is options with defaults for the delays they leave out
 * (undefined included); a delay that is not a number of ms ≥ 0 throws,
 * rather than make every reconnect immediate.
 */
export function withDefaults(options) {
  const o = { ...defaults };
  for (const k of Object.keys(defaults)) {
    const v = options?.[k];
    if (v === undefined) continue;
    if (typeof v !== "number" || !(v >= 0) || v === Infinity) {
      throw new RangeError(`wsgate: option ${k} must be a number of ms ≥ 0, not ${v}`);
    }
    o[k] = v;
  }
  return o;
}

/**
 * WSGate is one client connection that reconnects on its own. Events
 * (all CustomEvents): "state" (detail: the new state), "open", "welcome"
 * (detail {id, pushUrls}), "message" (detail {data, binary}: a string, or an
 * ArrayBuffer for a binary push), "close" (detail {code, reason, delay}:
 * delay is ms until the next attempt, or null when it stops).
 */
/**
 * closeReason cuts a close reason to the 123 bytes of UTF-8 a close frame
 * holds (RFC 6455 §5.5), between characters: WebSocket.close throws on a
 * longer one.
 */
export function closeReason(s) {
  const enc = new TextEncoder();
  let out = "";
  let n = 0;
  for (const ch of String(s)) {
    n += enc.encode(ch).length;
    if (n > 123) break;
    out += ch;
  }
  return out;
}

export class WSGate extends EventTarget {
  /**
   * url is a ws:// or wss:// URL, or a path such as "/ws" taken relative to
   * the page (http: becomes ws:, https: wss:). options: minDelay, maxDelay,
   * restartDelay (ms) and connect (default true: connect at once).
   */
  constructor(url, options = {}) {
    super();
    const u = new URL(url, globalThis.location?.href);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    /** The WebSocket URL. */
    this.url = u.href;
    this.options = withDefaults(options);
    /** The client id from the last welcome, or null. */
    this.id = null;
    /** The push URLs from the last welcome. */
    this.pushUrls = [];
    /** "connecting", "open" (welcomed), "waiting" (to reconnect) or "closed". */
    this.state = "closed";
    /** The current WebSocket, or null. */
    this.socket = null;
    this._attempt = 0;
    this._timer = null;
    if (options.connect !== false) this.connect();
  }

  /** connect opens a connection now, after a 1000 close or during a wait. */
  connect() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this.socket) return;
    this._setState("connecting");
    if (this.state !== "connecting" || this.socket) return; // a state listener called close() or connect()
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    let welcomed = false;
    ws.onopen = () => {
      if (this.socket === ws) this._emit("open");
    };
    ws.onmessage = (e) => {
      if (this.socket !== ws) return; // closed by close(): its last frames are not ours
      if (!welcomed) {
        welcomed = true;
        try {
          ({ id: this.id, pushUrls: this.pushUrls } = parseWelcome(e.data));
        } catch (err) {
          ws.close(4000, "bad welcome");
          return;
        }
        this._attempt = 0;
        this._setState("open");
        this._emit("welcome", { id: this.id, pushUrls: this.pushUrls });
        return;
      }
      const binary = typeof e.data !== "string";
      this._emit("message", { data: e.data, binary });
    };
    ws.onclose = (e) => {
      if (this.socket !== ws) return; // closed by close()
      this.socket = null;
      const delay = reconnectDelay(e.code, this._attempt, this.options);
      this._attempt++;
      // The state it goes to, already during the close event: send()
      // refuses, and close() from a listener stops for good.
      const next = delay === null ? "closed" : "waiting";
      this.state = next;
      this._emit("close", { code: e.code, reason: e.reason, delay });
      if (this.socket || this.state !== next) return; // a listener called connect() or close()
      this._emit("state", next);
      if (next === "closed" || this.state !== next) return; // a state listener did
      this._timer = setTimeout(() => this.connect(), delay);
    };
  }

  /** send sends a message (string, ArrayBuffer, Blob, typed array) to the backend. */
  send(data) {
    if (this.state !== "open") throw new Error(`wsgate: cannot send while ${this.state}`);
    this.socket.send(data);
  }

  /** close closes the connection with 1000 and stops reconnecting; reason is cut to 123 bytes. */
  close(reason = "") {
    clearTimeout(this._timer);
    this._timer = null;
    reason = closeReason(reason);
    const ws = this.socket;
    this.socket = null;
    if (ws) ws.close(NORMAL, reason);
    if (this.state !== "closed") {
      // Closed before the events: a listener's own close() does nothing.
      this.state = "closed";
      this._emit("close", { code: NORMAL, reason, delay: null });
      if (this.state === "closed") this._emit("state", "closed"); // unless a listener connected
    }
  }

  _setState(s) {
    this.state = s;
    this._emit("state", s);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
