package sidecar

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/testapp"
	"github.com/wsgate/wsgate/internal/wstest"
)

// pushUntilFull pushes 64 KiB messages to a client that does not read until
// one is refused, and returns how many were accepted. It fails the test if
// more than limit are.
func pushUntilFull(t *testing.T, ts *testServer, id string, limit int) int {
	t.Helper()
	for i := 0; i < limit; i++ {
		msg := fmt.Sprintf("%06d%s", i, strings.Repeat(".", 64<<10-6))
		switch status := ts.pushText(t, id, msg); status {
		case 204:
			if q := metricValue(t, ts, "wsgate_send_queue_messages"); q > float64(ts.queueLen) {
				t.Fatalf("%v messages queued, over send_queue %d", q, ts.queueLen)
			}
		case 503:
			return i
		default:
			t.Fatalf("push %d: status %d", i, status)
		}
	}
	t.Fatalf("a client that never reads accepted %d × 64 KiB: memory is not bounded", limit)
	return 0
}

func TestSlowClientClose(t *testing.T) {
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		w.WriteHeader(http.StatusNoContent)
	})
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.SendQueue = 4
		c.WebSocket.SlowClient = "close"
		c.Upstream.URL = b.URL
		c.Upstream.Events = []string{"disconnect"}
	})
	c, id := ts.connect(t)
	// The queue holds 4; the rest of what was accepted sits in the
	// kernel's socket buffers, a few hundred KiB at most.
	accepted := pushUntilFull(t, ts, id, 200)
	t.Logf("accepted %d × 64 KiB before 503", accepted)
	eventually(t, "slow client closed and counted", func() bool {
		return ts.Connections() == 0 && metricValue(t, ts, "wsgate_send_queue_messages") == 0 &&
			metricValue(t, ts, `wsgate_disconnects_total{code="1006"}`)+metricValue(t, ts, `wsgate_disconnects_total{code="1008"}`) == 1
	})
	if s := ts.pushText(t, id, "late"); s != 404 {
		t.Fatalf("push to the closed slow client: %d, want 404", s)
	}
	// Every accepted push was either written or counted as undelivered:
	// the client was closed ahead of a full queue.
	sent, undelivered := metricValue(t, ts, "wsgate_messages_sent_total"), metricValue(t, ts, "wsgate_messages_undelivered_total")
	if undelivered < 1 || sent+undelivered != float64(accepted) {
		t.Errorf("accepted %d, written %v, undelivered %v", accepted, sent, undelivered)
	}
	for name, want := range map[string]float64{
		"wsgate_slow_client_closes_total":              1,
		`wsgate_push_drops_total{reason="queue_full"}`: 1,
		`wsgate_pushes_total{code="503"}`:              1,
		"wsgate_send_queue_messages":                   0,
		// The close frame could not be written to a client that reads
		// nothing: it ends without one, as the client sees below.
		`wsgate_disconnects_total{code="1006"}`: 1,
		`wsgate_disconnects_total{code="1008"}`: 0,
	} {
		if got := metricValue(t, ts, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if e := b.Next(t); e.Header.Get("Wsgate-Close-Code") != "1006" || e.Header.Get("Wsgate-Close-Reason") != "slow client" {
		t.Errorf("disconnect event: code %q reason %q, want 1006 (no close frame went out) and why: slow client",
			e.Header.Get("Wsgate-Close-Code"), e.Header.Get("Wsgate-Close-Reason"))
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			if !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
				t.Errorf("the slow client, reading what the kernel kept, ends with %v; want 1006 (no close frame)", err)
			}
			break
		}
	}
}

func TestSlowClientDrop(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.SendQueue = 4
		c.WebSocket.SlowClient = "drop"
	})
	c, id := ts.connect(t)
	accepted := pushUntilFull(t, ts, id, 200)
	// Still full, still connected: further pushes are dropped with 503.
	if s := ts.pushText(t, id, "dropped"); s != 503 {
		t.Fatalf("push to a full queue: %d, want 503", s)
	}
	if ts.Connections() != 1 {
		t.Fatal("drop policy closed the client")
	}
	// Once the client reads, it gets every accepted push, in order.
	for i := 0; i < accepted; i++ {
		if _, msg := wstest.ReadMessage(t, c); string(msg[:6]) != fmt.Sprintf("%06d", i) {
			t.Fatalf("message %d starts %q", i, msg[:6])
		}
	}
	if s := ts.pushText(t, id, "after"); s != 204 {
		t.Fatalf("push after draining: %d", s)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "after" {
		t.Fatalf("got %q, want the push made after draining", msg)
	}
}

// The byte bound holds even when the message count is far from full.
func TestSendQueueBytesBound(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.SendQueue = 10000
		c.Push.MaxBody = 64 << 10
		c.WebSocket.SendQueueBytes = 256 << 10
		c.WebSocket.SlowClient = "drop"
	})
	_, id := ts.connect(t)
	accepted := pushUntilFull(t, ts, id, 200)
	t.Logf("accepted %d × 64 KiB before 503", accepted)
}

// A slow client is closed once, and counted once, however many pushes
// find its queue full before the close is under way.
func TestSlowClientCountedOnce(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.SendQueue = 1
		c.WebSocket.SlowClient = "close"
	})
	_, id := ts.connect(t) // never reads
	line := fmt.Sprintf("{\"id\":%q,\"text\":%q}\n", id, strings.Repeat("x", 60<<10))
	tiny := fmt.Sprintf("{\"id\":%q,\"text\":\"x\"}\n", id)
	ts.batch(t, strings.Repeat(line, 20)+strings.Repeat(tiny, 2000))
	if n := metricValue(t, ts, "wsgate_slow_client_closes_total"); n != 1 {
		t.Fatalf("one slow client, slow_client_closes_total %v", n)
	}
}
