// Unit tests of wsgate.js, run by `node --test` (web_test.go runs them in go test).
import test from "node:test";
import assert from "node:assert/strict";
import { parseWelcome, reconnectDelay, defaults, closeReason, WSGate } from "./wsgate.js";

const id = "q1ZfG3LmN0pS8tUvW-xY_z";

test("urls welcome: one URL", () => {
  assert.deepEqual(parseWelcome(`http://${id}@127.0.0.1:48775/ws`), {
    id,
    pushUrls: [`http://${id}@127.0.0.1:48775/ws`],
  });
});

test("urls welcome: several hosts, IPv6 in brackets", () => {
  const urls = [`http://${id}@10.0.0.1:48776/ws`, `http://${id}@[::1]:48776/ws`];
  assert.deepEqual(parseWelcome(urls.join(",")), { id, pushUrls: urls });
});

test("json welcome", () => {
  const push = [`http://${id}@[::1]:48775/events`, `http://${id}@127.0.0.1:48775/events`];
  assert.deepEqual(parseWelcome(JSON.stringify({ id, push })), { id, pushUrls: push });
});

test("not a welcome", () => {
  for (const bad of ["", "hello", "http://127.0.0.1:48775/ws", "{}", '{"id":"x","push":"http://x@h/ws"}',
    '{"id":"","push":["http://x@h:1/ws"]}', '{"id":"x","push":["not a url"]}', "{not json"]) {
    assert.throws(() => parseWelcome(bad), undefined, bad);
  }
});

test("1000 never reconnects", () => {
  for (const attempt of [0, 1, 5]) assert.equal(reconnectDelay(1000, attempt), null);
});

test("1012 retries after restartDelay, then backs off", () => {
  assert.equal(reconnectDelay(1012, 0, defaults, () => 1), defaults.restartDelay);
  assert.equal(reconnectDelay(1012, 0, defaults, () => 0), defaults.restartDelay / 2);
  assert.equal(reconnectDelay(1012, 1, defaults, () => 1), 2 * defaults.minDelay);
});

test("exponential backoff from minDelay, capped at maxDelay, for every other code", () => {
  const o = { minDelay: 100, maxDelay: 1000 };
  for (const code of [1001, 1006, 1008, 1009, 1011, 4000]) {
    const top = [0, 1, 2, 3, 4, 10].map((a) => reconnectDelay(code, a, o, () => 1));
    assert.deepEqual(top, [100, 200, 400, 800, 1000, 1000], `code ${code}`);
  }
});

test("jitter spreads each delay over [d/2, d]", () => {
  const o = { minDelay: 1000, maxDelay: 30000 };
  assert.equal(reconnectDelay(1006, 2, o, () => 0), 2000);
  assert.equal(reconnectDelay(1006, 2, o, () => 0.5), 3000);
  for (let i = 0; i < 1000; i++) {
    const d = reconnectDelay(1001, 3, o);
    assert.ok(d >= 4000 && d <= 8000, `${d}`);
  }
});

test("a close reason is cut to 123 bytes of UTF-8, between characters", () => {
  assert.equal(closeReason("bye"), "bye");
  assert.equal(closeReason("x".repeat(200)), "x".repeat(123));
  const cut = closeReason("é".repeat(100)); // 2 bytes each
  assert.equal(cut, "é".repeat(61));
  assert.equal(closeReason("😀".repeat(40)), "😀".repeat(30)); // 4 bytes each
});

// FakeWS is the little of the browser's WebSocket the client uses: close()
// throws on a reason over 123 bytes, and the test plays the server.
class FakeWS {
  static all = [];
  constructor(url) {
    this.url = url;
    this.closedWith = null;
    FakeWS.all.push(this);
  }
  close(code, reason = "") {
    if (new TextEncoder().encode(reason).length > 123) throw new SyntaxError("reason too long");
    this.closedWith = code;
  }
  send() {}
  open() {
    this.onopen?.({});
  }
  msg(data) {
    this.onmessage?.({ data });
  }
  closed(code) {
    this.onclose?.({ code, reason: "" });
  }
}

function connected() {
  globalThis.WebSocket = FakeWS;
  FakeWS.all = [];
  const gw = new WSGate("ws://h/ws");
  const ws = FakeWS.all[0];
  ws.open();
  ws.msg(`http://${id}@127.0.0.1:48775/ws`);
  return { gw, ws };
}

test("close() from a close listener stops the reconnecting", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { gw, ws } = connected();
  gw.addEventListener("close", () => gw.close(), { once: true }); // giving up
  ws.closed(1006);
  t.mock.timers.tick(120000);
  assert.equal(gw.state, "closed");
  assert.equal(FakeWS.all.length, 1, "connected again after close()");
});

test("connect() from a close listener connects once, at once", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { gw, ws } = connected();
  gw.addEventListener("close", () => gw.connect(), { once: true });
  ws.closed(1006);
  assert.equal(gw.state, "connecting");
  t.mock.timers.tick(120000);
  assert.equal(FakeWS.all.length, 2, "a second connection from the reconnect timer");
});

test("close() with a long reason closes, and nothing comes after", () => {
  const { gw, ws } = connected();
  let got = 0;
  gw.addEventListener("message", () => got++);
  gw.close("x".repeat(200));
  assert.equal(ws.closedWith, 1000);
  ws.msg("sent before the close arrived");
  assert.equal(got, 0);
  assert.equal(gw.state, "closed");
});

test("close() from a close listener that stays: one more close event, no loop, no reconnect", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { gw, ws } = connected();
  const codes = [];
  gw.addEventListener("close", (e) => {
    codes.push(e.detail.code);
    gw.close();
  });
  ws.closed(1006);
  t.mock.timers.tick(120000);
  assert.deepEqual(codes, [1006, 1000]);
  assert.equal(gw.state, "closed");
  assert.equal(FakeWS.all.length, 1, "connected again after close()");
  gw.close(); // the user's own, with that listener: nothing more happens
  assert.deepEqual(codes, [1006, 1000]);
});

test("close() from a state listener, while waiting or connecting, stops", (t) => {
  for (const at of ["waiting", "connecting"]) {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { gw, ws } = connected();
    gw.addEventListener("state", (e) => {
      if (e.detail === at) gw.close();
    });
    ws.closed(1006);
    t.mock.timers.tick(120000);
    assert.equal(gw.state, "closed", at);
    assert.equal(gw.socket, null, at);
    assert.equal(FakeWS.all.length, 1, `${at}: connected again after close()`);
    t.mock.timers.reset();
  }
});

test("send() during the close event refuses with wsgate's error", () => {
  const { gw, ws } = connected();
  let err;
  gw.addEventListener("close", () => {
    try {
      gw.send("x");
    } catch (e) {
      err = e;
    }
  });
  ws.closed(1006);
  assert.match(String(err), /wsgate: cannot send while waiting/);
});

test("an option left undefined takes its default; a bad one throws", () => {
  globalThis.WebSocket = FakeWS;
  const gw = new WSGate("ws://h/ws", { minDelay: undefined, connect: false });
  assert.equal(gw.options.minDelay, defaults.minDelay);
  assert.equal(reconnectDelay(1006, 0, { minDelay: undefined }, () => 1), defaults.minDelay);
  for (const bad of [NaN, -1, "100", Infinity, null]) {
    assert.throws(() => new WSGate("ws://h/ws", { maxDelay: bad, connect: false }), RangeError, String(bad));
  }
});
