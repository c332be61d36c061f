package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/testapp"
	"github.com/wsgate/wsgate/internal/wstest"
)

// upstreamServer is a test server sending events to b.
func upstreamServer(t *testing.T, b *testapp.App, mutate func(*config.Upstream)) *testServer {
	t.Helper()
	return newTestServer(t, func(c *config.Config) {
		c.Upstream.URL = b.URL
		if mutate != nil {
			mutate(&c.Upstream)
		}
	})
}

// connect, message and disconnect carry what UPSTREAM.md promises, over
// TCP and over a unix socket; connect's reply body follows the welcome and
// a message's reply goes back to its client.
func TestUpstreamEvents(t *testing.T) {
	for _, unix := range []bool{false, true} {
		t.Run(fmt.Sprintf("unix=%v", unix), func(t *testing.T) {
			b := testapp.Start(t, unix, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
				switch e.Kind() {
				case "connect":
					io.WriteString(w, "hello")
				case "message":
					w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
					w.Write(append([]byte("re:"), e.Body...))
				default:
					w.WriteHeader(http.StatusNoContent)
				}
			})
			ts := upstreamServer(t, b, nil)
			c, welcome := ts.dial(t, http.Header{"Cookie": {"session=s3cret"}, "X-Other": {"not forwarded"}})
			id := idFromURL(t, welcome)

			e := b.Next(t)
			for k, want := range map[string]string{
				"Wsgate-Event": "connect", "Wsgate-Id": id, "Wsgate-Push-Url": welcome, "Cookie": "session=s3cret", "X-Other": "",
			} {
				if got := e.Header.Get(k); got != want {
					t.Errorf("connect %s: %q, want %q", k, got, want)
				}
			}
			if kind, msg := wstest.ReadMessage(t, c); kind != websocket.TextMessage || string(msg) != "hello" {
				t.Fatalf("after the welcome: %d %q, want connect's reply", kind, msg)
			}

			c.WriteMessage(websocket.TextMessage, []byte("t1"))
			c.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2})
			for _, want := range []struct {
				ct   string
				kind int
				body string
			}{{"text/plain; charset=utf-8", websocket.TextMessage, "t1"}, {"application/octet-stream", websocket.BinaryMessage, "\x00\x01\x02"}} {
				e := b.Next(t)
				if e.Kind() != "message" || e.Header.Get("Wsgate-Id") != id || e.Header.Get("Wsgate-Push-Url") != welcome ||
					e.Header.Get("Content-Type") != want.ct || string(e.Body) != want.body {
					t.Fatalf("message event %v %q, want %s %q", e.Header, e.Body, want.ct, want.body)
				}
				if kind, msg := wstest.ReadMessage(t, c); kind != want.kind || string(msg) != "re:"+want.body {
					t.Fatalf("reply %d %q, want %d re:%q", kind, msg, want.kind, want.body)
				}
			}

			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye ✓ 100%"))
			e = b.Next(t)
			reason, _ := url.PathUnescape(e.Header.Get("Wsgate-Close-Reason"))
			d, err := strconv.ParseFloat(e.Header.Get("Wsgate-Duration"), 64)
			if e.Kind() != "disconnect" || e.Header.Get("Wsgate-Id") != id || e.Header.Get("Wsgate-Close-Code") != "4000" ||
				reason != "bye ✓ 100%" || err != nil || d < 0 {
				t.Fatalf("disconnect event %v", e.Header)
			}
			if got := metricValue(t, ts, "wsgate_upstream_messages_forwarded_total"); got != 2 {
				t.Errorf("forwarded %v, want 2", got)
			}
		})
	}
}

// A non-2xx reply to connect refuses the handshake with its status and
// body; no client is made, so no disconnect follows.
func TestUpstreamConnectRefused(t *testing.T) {
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"error":"no session"}`)
	})
	ts := upstreamServer(t, b, nil)
	status, ct, body := refusedDial(t, ts)
	if status != 403 || ct != "application/json" || body != `{"error":"no session"}` {
		t.Fatalf("handshake: %d %q %q, want the backend's 403", status, ct, body)
	}
	if ts.Connections() != 0 || metricValue(t, ts, `wsgate_handshake_rejections_total{reason="upstream"}`) != 1 {
		t.Fatal("refused handshake made a client or was not counted")
	}
	ts.shutdown(t)
	if len(b.Events) != 1 {
		t.Fatalf("%d events after the connect, want none", len(b.Events)-1)
	}
}

// A connect reply whose status is no final HTTP status is an upstream
// error (502), not an answer to pass on: a 101 taken for one would hand the
// client a broken upgrade and, carrying Upgrade, make the body the backend's
// connection, read until the backend closes it. A 3xx is passed on.
func TestUpstreamConnectOddStatus(t *testing.T) {
	for _, tc := range []struct {
		name, reply string
		status      int
	}{
		{"101-upgrade", "101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade", 502},
		{"101", "101 Switching Protocols", 502},
		{"000", "000 Zero", 502},
		{"600", "600 Beyond", 502},
		{"999", "999 Beyond", 502},
		{"302", "302 Found\r\nLocation: /login", 302},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			t.Cleanup(func() { close(done); l.Close() })
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer conn.Close()
						if _, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
							fmt.Fprintf(conn, "HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n", tc.reply)
							<-done // holds the connection open, as a switched one would be
						}
					}()
				}
			}()
			ts := upstreamServer(t, &testapp.App{URL: "http://" + l.Addr().String() + "/events"}, func(u *config.Upstream) {
				u.Events = []string{"connect"}
			})
			if status, _, _ := refusedDial(t, ts); status != tc.status {
				t.Fatalf("connect answered %q: handshake %d, want %d", tc.reply, status, tc.status)
			}
			if tc.status == 502 {
				if v := metricValue(t, ts, `wsgate_upstream_errors_total{event="connect",reason="bad_reply"}`); v != 1 {
					t.Errorf("upstream_errors_total{connect,bad_reply} = %v, want 1", v)
				}
			}
		})
	}
}

// A refusal whose headers would not fit nginx's 1k proxy_buffer_size
// (through nginx a 502, and the sidecar counted as failed) goes without
// the longest of them, and says so in the log.
func TestUpstreamRefusalHeadFits(t *testing.T) {
	long := "/login?return=" + strings.Repeat("x", 2000)
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		w.Header().Set("Location", long)
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusFound)
	})
	ts := upstreamServer(t, b, func(u *config.Upstream) { u.Events = []string{"connect"} })
	status, head := rawHandshake(t, ts, upgradeRequest+"\r\n")
	h, _, _ := strings.Cut(string(head), "\r\n\r\n")
	if status != http.StatusFound || len(h)+4 > maxRefusalHead || strings.Contains(h, "Location") || !strings.Contains(h, "Retry-After: 5") {
		t.Fatalf("refusal with a %d-byte Location: %d, head of %d bytes:\n%s", len(long), status, len(h)+4, h)
	}
	// Logged once the answer is sent, so maybe after the client read it.
	eventually(t, "a warning naming the header left out", func() bool {
		logs := ts.log.String()
		return strings.Contains(logs, "proxy_buffer_size") && strings.Contains(logs, "headers=[Location]")
	})
}

// refusedDial dials, expects the handshake to be refused and returns the
// status, content type and body.
func refusedDial(t *testing.T, ts *testServer) (int, string, string) {
	t.Helper()
	d := websocket.Dialer{
		NetDial:          func(_, _ string) (net.Conn, error) { return net.Dial("unix", ts.wsPath) },
		HandshakeTimeout: 20 * time.Second,
	}
	c, resp, err := d.Dial("ws://wsgate/ws", nil)
	if err == nil {
		c.Close()
		t.Fatal("handshake accepted")
	}
	if resp == nil {
		t.Fatalf("no response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// Unreachable or too slow: connect is refused with 502 or 504, or with
// on_error = "allow" the client is accepted and a failed message dropped.
func TestUpstreamDown(t *testing.T) {
	down := &testapp.App{URL: "unix:" + filepath.Join(t.TempDir(), "nobody.sock") + ":/events"}
	ts := upstreamServer(t, down, nil)
	if status, _, _ := refusedDial(t, ts); status != 502 {
		t.Fatalf("unreachable upstream: handshake %d, want 502", status)
	}
	if v := metricValue(t, ts, `wsgate_upstream_errors_total{event="connect",reason="unreachable"}`); v != 1 {
		t.Fatalf("unreachable counted %v times", v)
	}

	stall := staller(t)
	slow := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		stall(r)
	})
	ts = upstreamServer(t, slow, func(u *config.Upstream) { u.Timeout = config.Duration(100 * time.Millisecond) })
	if status, _, _ := refusedDial(t, ts); status != 504 {
		t.Fatalf("slow upstream: handshake %d, want 504", status)
	}
	if v := metricValue(t, ts, `wsgate_upstream_errors_total{event="connect",reason="timeout"}`); v != 1 {
		t.Fatalf("timeout counted %v times", v)
	}

	ts = upstreamServer(t, down, func(u *config.Upstream) { u.OnError = "allow" })
	c, id := ts.connect(t)
	c.WriteMessage(websocket.TextMessage, []byte("lost"))
	eventually(t, "the message dropped", func() bool {
		return metricValue(t, ts, `wsgate_upstream_messages_dropped_total{reason="upstream_error"}`) == 1
	})
	if s := ts.pushText(t, id, "still here"); s != 204 {
		t.Fatalf("push after a failed message: %d", s)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "still here" {
		t.Fatalf("got %q", msg)
	}
}

// A message answered 5xx or not at all within upstream.timeout closes the
// client with 1011, the code disconnect then reports; with on_error =
// "allow" it only drops the message. A 4xx reply drops the message either
// way.
func TestUpstreamMessageFails(t *testing.T) {
	for _, failure := range []string{"500", "timeout"} {
		for _, policy := range []string{"refuse", "allow"} {
			t.Run(failure+"/"+policy, func(t *testing.T) {
				b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
					switch {
					case e.Kind() != "message":
						w.WriteHeader(http.StatusNoContent)
					case string(e.Body) == "bad":
						http.Error(w, "bad message", http.StatusBadRequest)
					case failure == "500":
						http.Error(w, "broken", http.StatusInternalServerError)
					default:
						<-r.Context().Done()
					}
				})
				ts := upstreamServer(t, b, func(u *config.Upstream) {
					u.OnError = policy
					u.Timeout = config.Duration(200 * time.Millisecond)
				})
				c, id := ts.connect(t)
				b.Next(t) // connect
				c.WriteMessage(websocket.TextMessage, []byte("bad"))
				eventually(t, "a refused message counted", func() bool {
					return metricValue(t, ts, `wsgate_upstream_messages_dropped_total{reason="refused"}`) == 1
				})
				c.WriteMessage(websocket.TextMessage, []byte("fails"))
				if policy == "allow" {
					eventually(t, "the failed message counted", func() bool {
						return metricValue(t, ts, `wsgate_upstream_messages_dropped_total{reason="upstream_error"}`) == 1
					})
					if s := ts.pushText(t, id, "still here"); s != 204 {
						t.Fatalf("push after a failed message: %d", s)
					}
					return
				}
				if code := wstest.MustCloseCode(t, c); code != 1011 {
					t.Fatalf("closed with %d, want 1011", code)
				}
				b.Next(t) // bad
				b.Next(t) // fails
				if e := b.Next(t); e.Kind() != "disconnect" || e.Header.Get("Wsgate-Close-Code") != "1011" {
					t.Fatalf("event %s with code %s, want disconnect 1011", e.Kind(), e.Header.Get("Wsgate-Close-Code"))
				}
			})
		}
	}
}

// Hundreds of messages from each of several clients, text and binary sent
// as fast as possible, reach the backend in order per client through a few
// concurrency slots, and every reply reaches its client in order. Then no
// client holds a sender goroutine or a queued event.
func TestUpstreamOrder(t *testing.T) {
	const clients, msgs, slots = 8, 300, 3
	var inFlight, most atomic.Int32
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		// Linger until the slots are taken (bounded: the last client's
		// last messages have no company), so that an unlimited sidecar
		// would pile up more.
		for i := 0; i < 100 && inFlight.Load() < slots; i++ {
			time.Sleep(100 * time.Microsecond)
		}
		if e.Kind() == "message" {
			w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
			w.Write(e.Body)
		}
	})
	ts := upstreamServer(t, b, func(u *config.Upstream) { u.Concurrency = slots })
	conns := make([]*websocket.Conn, clients)
	ids := map[string]int{}
	for i := range conns {
		var id string
		conns[i], id = ts.connect(t)
		ids[id] = i
	}
	payload := func(i, j int) (int, []byte) {
		if j%2 == 1 {
			return websocket.BinaryMessage, []byte{byte(i), byte(j), byte(j >> 8)}
		}
		return websocket.TextMessage, []byte(fmt.Sprintf("%d/%d", i, j))
	}
	// Each client reads its replies as they come: a client that does not
	// read is a slow client, whose writer stops once its socket is full
	// (300 tiny frames are over the unix socket's send buffer, which
	// counts each write's buffer overhead) and which is closed after
	// write_timeout.
	replies := make(chan error, clients)
	for i, c := range conns {
		go func() {
			for j := 0; j < msgs; j++ {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				kind, msg, err := c.ReadMessage()
				if err != nil {
					replies <- fmt.Errorf("client %d reply %d: %w", i, j, err)
					return
				}
				if wantKind, want := payload(i, j); kind != wantKind || !bytes.Equal(msg, want) {
					replies <- fmt.Errorf("client %d reply %d: %d %q, want %d %q", i, j, kind, msg, wantKind, want)
					return
				}
			}
			replies <- nil
		}()
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < msgs; j++ {
				c.WriteMessage(payload(i, j))
			}
		}()
	}
	wg.Wait()
	next := make([]int, clients)
	for n := 0; n < clients*msgs; {
		e := b.Next(t)
		if e.Kind() != "message" {
			continue
		}
		i := ids[e.Header.Get("Wsgate-Id")]
		if _, want := payload(i, next[i]); !bytes.Equal(e.Body, want) {
			t.Fatalf("client %d: message %d is %q, want %q", i, next[i], e.Body, want)
		}
		next[i]++
		n++
	}
	for range conns {
		if err := <-replies; err != nil {
			t.Fatal(err)
		}
	}
	for id := range ids {
		c := ts.reg.get(id)
		eventually(t, "idle outboxes", func() bool {
			c.outbox.mu.Lock()
			defer c.outbox.mu.Unlock()
			return !c.outbox.sending && c.outbox.events == nil
		})
	}
	if q := metricValue(t, ts, "wsgate_upstream_queue_events"); q != 0 {
		t.Fatalf("%v events still queued", q)
	}
	if m := most.Load(); m > slots {
		t.Fatalf("%d requests in flight at once, over concurrency %d", m, slots)
	}
}

// Only the events listed in upstream.Events are sent; without "message",
// client messages are discarded and counted as without an upstream.
func TestUpstreamEventsSubset(t *testing.T) {
	b := testapp.Start(t, false, nil)
	ts := upstreamServer(t, b, func(u *config.Upstream) { u.Events = []string{"disconnect"} })
	c, id := ts.connect(t)
	c.WriteMessage(websocket.TextMessage, []byte("ignored"))
	eventually(t, "the message discarded", func() bool {
		return metricValue(t, ts, "wsgate_client_messages_discarded_total") == 1
	})
	c.Close()
	if e := b.Next(t); e.Kind() != "disconnect" || e.Header.Get("Wsgate-Id") != id {
		t.Fatalf("first event: %s, want the disconnect", e.Kind())
	}
}

// A reply that cannot be a frame (text that is not UTF-8, or over
// push.max_body) is counted and not sent; the client stays.
func TestUpstreamBadReply(t *testing.T) {
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		switch string(e.Body) {
		case "latin1":
			w.Write([]byte{0xe9})
		case "big":
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(make([]byte, 1025))
		case "ok":
			io.WriteString(w, "fine")
		}
	})
	ts := newTestServer(t, func(c *config.Config) {
		c.Upstream.URL = b.URL
		c.Push.MaxBody = 1024
		c.Push.MaxBatch = 1024
		c.WebSocket.SendQueueBytes = 1024
	})
	c, _ := ts.connect(t)
	for _, m := range []string{"latin1", "big", "ok"} {
		c.WriteMessage(websocket.TextMessage, []byte(m))
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "fine" {
		t.Fatalf("got %q, want only the good reply", msg)
	}
	if v := metricValue(t, ts, `wsgate_upstream_errors_total{event="message",reason="bad_reply"}`); v != 2 {
		t.Fatalf("bad replies counted %v, want 2", v)
	}
}

// A backend that answers slowly (within upstream.timeout): once a client
// has message_queue messages waiting, the sidecar stops reading from it, so
// memory stays bounded, and nothing is lost: every message arrives, in
// order, when the backend catches up.
func TestUpstreamBackpressure(t *testing.T) {
	const queue, sent = 4, 100
	release := make(chan struct{})
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		if e.Kind() == "message" {
			<-release
		}
	})
	released := sync.OnceFunc(func() { close(release) })
	t.Cleanup(released)
	ts := upstreamServer(t, b, func(u *config.Upstream) {
		u.MessageQueue = queue
		u.Timeout = config.Duration(10 * time.Minute)
	})
	c, _ := ts.connect(t)
	b.Next(t) // connect
	for j := 0; j < sent; j++ {
		c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(j)))
	}
	// One in flight, queue waiting, one in the reader's hands.
	eventually(t, "the reader to stop", func() bool {
		return metricValue(t, ts, "wsgate_client_messages_total") == queue+2
	})
	if q := metricValue(t, ts, "wsgate_upstream_queue_events"); q != queue {
		t.Fatalf("%v events queued, want message_queue %d", q, queue)
	}
	released()
	for j := 0; j < sent; j++ {
		if e := b.Next(t); string(e.Body) != strconv.Itoa(j) {
			t.Fatalf("message %d is %q", j, e.Body)
		}
	}
	if ts.Connections() != 1 {
		t.Fatal("backpressure closed the client")
	}
}

// A disconnect answered 5xx is retried, disconnectTries times at most.
func TestUpstreamDisconnectRetries(t *testing.T) {
	var mu sync.Mutex
	fails := 0
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		mu.Lock()
		defer mu.Unlock()
		if e.Kind() == "disconnect" {
			fails++
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	ts := upstreamServer(t, b, nil)
	c, id := ts.connect(t)
	c.Close()
	ts.shutdown(t) // waits for the disconnect's tries
	n := 0
	for len(b.Events) > 0 {
		if e := <-b.Events; e.Kind() == "disconnect" && e.Header.Get("Wsgate-Id") == id {
			n++
		}
	}
	if n != disconnectTries {
		t.Fatalf("disconnect sent %d times, want %d", n, disconnectTries)
	}
	if v := counterValue(ts.up.m.errors.WithLabelValues("disconnect", "status")); v != disconnectTries {
		t.Fatalf("counted %v failures", v)
	}
}

// A backend that never answers disconnect does not hold shutdown past its
// deadline: the request is canceled and counted.
func TestUpstreamShutdownBounded(t *testing.T) {
	stall := staller(t)
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		if e.Kind() == "disconnect" {
			stall(r)
		}
	})
	ts := newTestServer(t, func(c *config.Config) {
		c.Upstream.URL = b.URL
		c.Upstream.Timeout = config.Duration(10 * time.Minute)
		c.ShutdownTimeout = config.Duration(500 * time.Millisecond)
	})
	c, _ := ts.connect(t)
	ts.shutdown(t)
	c.Close()
	if v := counterValue(ts.up.m.errors.WithLabelValues("disconnect", "canceled")); v != 1 {
		t.Fatalf("canceled disconnects: %v, want 1", v)
	}
}

// counterValue reads a counter directly, for after shutdown closed /metrics.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

func TestPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "going away": "going away", "100%": "100%25", "ü\n": "%C3%BC%0A", "\x7f": "%7F",
		"  bye\t": "%20 bye%09", " ": "%20", // spaces at the ends, which HTTP strips from a value
	} {
		if got := percentEncode(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
		if back, err := url.PathUnescape(percentEncode(in)); err != nil || back != in {
			t.Errorf("%q does not decode back: %q %v", in, back, err)
		}
	}
}

// A push to an id whose connect succeeded waits for the handshake to finish
// instead of answering 404.
func TestPushWaitsForHandshake(t *testing.T) {
	ts := newTestServer(t, nil)
	id := newID()
	done := make(chan struct{})
	ts.handshakes.Store(id, done)
	status := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://push/ws/"+id, bytes.NewReader([]byte("early")))
		resp, err := ts.http.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	select {
	case s := <-status:
		t.Fatalf("answered %d while the handshake was pending", s)
	case <-time.After(200 * time.Millisecond):
	}
	// The handshake finishes: the client is registered (its writer not
	// started, so the push stays queued where the test can see it).
	c := &client{id: id, srv: ts.Server, writing: true}
	ts.reg.add(c)
	ts.handshakes.Delete(id)
	close(done)
	if s := <-status; s != 204 {
		t.Fatalf("push during the handshake: %d, want 204", s)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) != 1 || string(c.queue[0].data) != "early" {
		t.Fatalf("queue %+v", c.queue)
	}
	ts.reg.remove(c)
}

// Through the whole path: the backend pushes the moment it has accepted
// connect, and every such push reaches its client, after the welcome.
func TestPushRightAfterConnect(t *testing.T) {
	var pushes atomic.Pointer[http.Client]
	statuses := make(chan int, 100)
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		w.WriteHeader(http.StatusNoContent)
		if e.Kind() != "connect" {
			return
		}
		id := e.Header.Get("Wsgate-Id")
		go func() { // right after the reply
			resp, err := pushes.Load().Post("http://push/ws/"+id, "text/plain", bytes.NewReader([]byte("first")))
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	})
	ts := upstreamServer(t, b, func(u *config.Upstream) { u.Events = []string{"connect"} })
	pushes.Store(ts.http)
	for i := 0; i < 30; i++ {
		c, _ := ts.dial(t, nil)
		if s := <-statuses; s != 204 {
			t.Fatalf("client %d: push right after connect: %d, want 204", i, s)
		}
		if _, msg := wstest.ReadMessage(t, c); string(msg) != "first" {
			t.Fatalf("client %d got %q", i, msg)
		}
		c.Close()
	}
}

// A client that hangs up while its connect is at the backend still gets
// its disconnect once the backend has accepted it (UPSTREAM.md): every
// accepted connect is paired with a disconnect.
func TestUpstreamConnectClientGone(t *testing.T) {
	release := make(chan struct{})
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		if e.Kind() == "connect" {
			<-release
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ts := upstreamServer(t, b, nil)
	conn, err := net.Dial("unix", ts.wsPath)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, upgradeRequest+"\r\n")
	connect := b.Next(t)
	if connect.Kind() != "connect" {
		t.Fatalf("first event %q", connect.Kind())
	}
	conn.Close()
	close(release)
	e := b.Next(t)
	if e.Kind() != "disconnect" || e.Header.Get("Wsgate-Id") != connect.Header.Get("Wsgate-Id") || e.Header.Get("Wsgate-Close-Code") != "1006" {
		t.Fatalf("after a client gone during connect: %q for %q, code %q", e.Kind(), e.Header.Get("Wsgate-Id"), e.Header.Get("Wsgate-Close-Code"))
	}
}

// A handshake the backend accepted at connect but the upgrade then
// refuses still gets its disconnect (1006): every accepted connect is
// paired with one, so a client cannot grow the backend's state by failing
// its handshakes.
func TestUpstreamHandshakeFailsAfterConnect(t *testing.T) {
	for name, req := range map[string]string{
		"bad version":       strings.Replace(upgradeRequest, "Version: 13", "Version: 12", 1) + "\r\n",
		"data before reply": upgradeRequest + "\r\n\x81\x85early",
	} {
		t.Run(name, func(t *testing.T) {
			b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
				w.WriteHeader(http.StatusNoContent)
			})
			ts := upstreamServer(t, b, nil)
			conn, err := net.Dial("unix", ts.wsPath)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(conn, req)
			resp, _ := io.ReadAll(conn)
			if strings.HasPrefix(string(resp), "HTTP/1.1 101") {
				t.Fatalf("handshake accepted: %q", resp)
			}
			connect, e := b.Next(t), b.Next(t)
			if connect.Kind() != "connect" || e.Kind() != "disconnect" ||
				e.Header.Get("Wsgate-Id") != connect.Header.Get("Wsgate-Id") || e.Header.Get("Wsgate-Close-Code") != "1006" {
				t.Fatalf("events %q then %q for %q, code %q", connect.Kind(), e.Kind(), e.Header.Get("Wsgate-Id"), e.Header.Get("Wsgate-Close-Code"))
			}
			if ts.Connections() != 0 {
				t.Fatal("a failed handshake made a client")
			}
		})
	}
}

// A push the backend makes as soon as it has the connect event, as
// UPSTREAM.md allows, fits the smallest queue: the welcome and greeting
// queued ahead of it do not count against send_queue or send_queue_bytes
// (it got 503, and with slow_client = "close" the client got 1008 instead
// of its welcome).
func TestPushAtConnectFitsTheQueue(t *testing.T) {
	for name, c := range map[string]struct {
		body   []byte
		mutate func(*config.Config)
	}{
		"send_queue = 1": {[]byte("first"), func(c *config.Config) { c.WebSocket.SendQueue = 1 }},
		"send_queue_bytes = max_body": {bytes.Repeat([]byte("x"), 1<<20), func(c *config.Config) {
			c.Push.MaxBody, c.WebSocket.SendQueueBytes = 1<<20, 1<<20
		}},
	} {
		t.Run(name, func(t *testing.T) {
			var pusher atomic.Pointer[http.Client]
			statuses := make(chan int, 1)
			greeting := bytes.Repeat([]byte("g"), 1<<20)
			b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
				if e.Kind() == "connect" {
					// More than the socket holds: its writer is still at
					// it when the push comes, as the test reads no more
					// until it has the push's answer.
					w.Header().Set("Content-Type", "text/plain")
					w.Write(greeting)
					id := e.Header.Get("Wsgate-Id")
					go func() { // while the handshake is still under way
						resp, err := pusher.Load().Post("http://push/ws/"+id, "application/octet-stream", bytes.NewReader(c.body))
						if err != nil {
							statuses <- 0
							return
						}
						resp.Body.Close()
						statuses <- resp.StatusCode
					}()
					return
				}
				w.WriteHeader(http.StatusNoContent)
			})
			ts := newTestServer(t, func(cfg *config.Config) {
				cfg.Upstream.URL = b.URL
				cfg.Upstream.Events = []string{"connect"}
				c.mutate(cfg)
			})
			pusher.Store(ts.http)
			ws, _ := ts.dial(t, nil) // read its welcome
			if status := <-statuses; status != 204 {
				t.Fatalf("the push at connect: %d, want 204", status)
			}
			for _, want := range [][]byte{greeting, c.body} {
				if _, msg := wstest.ReadMessage(t, ws); !bytes.Equal(msg, want) {
					t.Fatalf("got %d bytes, want %d", len(msg), len(want))
				}
			}
		})
	}
}

// Kept-alive connections to the backend are kept: a reply longer than
// wanted (disconnect reads none of it) is read to its end, not dropped
// with its connection.
func TestUpstreamKeepsConnections(t *testing.T) {
	var conns atomic.Int32
	events := make(chan struct{}, 10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok, noted")
		events <- struct{}{}
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	ts := upstreamServer(t, &testapp.App{URL: srv.URL + "/events"}, func(u *config.Upstream) { u.Events = []string{"disconnect"} })
	for i := 0; i < 5; i++ {
		c, _ := ts.connect(t)
		c.Close()
		<-events
		time.Sleep(20 * time.Millisecond) // the reply read, the connection back in the pool
	}
	if n := conns.Load(); n > 2 {
		t.Errorf("%d connections for 5 disconnects answered with a body, want them kept alive", n)
	}
}

// A kept-alive connection the backend closes as a request goes out on it
// (a backend's idle timeout, 5 s in Node, 2 s in gunicorn) is no upstream
// error: the request is sent again, once, on a new connection.
func TestUpstreamResendsOnClosedKeepAlive(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var messages atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() { // answers one request per connection, then closes it at the next
				defer conn.Close()
				br := bufio.NewReader(conn)
				for i := 0; ; i++ {
					r, err := http.ReadRequest(br)
					if err != nil || i > 0 {
						return
					}
					io.Copy(io.Discard, r.Body)
					if r.Header.Get("Wsgate-Event") == "message" {
						messages.Add(1)
					}
					io.WriteString(conn, "HTTP/1.1 204 No Content\r\n\r\n")
				}
			}()
		}
	}()
	ts := upstreamServer(t, &testapp.App{URL: "http://" + l.Addr().String() + "/events"}, func(u *config.Upstream) {
		u.Events = []string{"connect", "message"}
	})
	c, _ := ts.connect(t)
	for i := 0; i < 3; i++ {
		if err := c.WriteMessage(websocket.TextMessage, []byte("m")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the message at the backend", func() bool { return messages.Load() == int32(i+1) })
	}
	if v := metricValue(t, ts, `wsgate_upstream_errors_total{event="message",reason="unreachable"}`); v != 0 || ts.Connections() != 1 {
		t.Errorf("%v upstream errors, %d clients: want the messages resent, the client kept", v, ts.Connections())
	}
}

// A client whose messages wait for a slow backend (its reader paused, its
// pongs unread) is not idle: it is not closed at idle_timeout.
func TestUpstreamSlowBackendIsNotIdle(t *testing.T) {
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		if e.Kind() == "message" {
			time.Sleep(700 * time.Millisecond)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ts := newTestServer(t, func(c *config.Config) {
		c.Upstream.URL = b.URL
		c.Upstream.MessageQueue = 1
		c.WebSocket.PingInterval = config.Duration(150 * time.Millisecond)
		c.WebSocket.IdleTimeout = config.Duration(500 * time.Millisecond)
	})
	c, id := ts.connect(t)
	b.Next(t)                // connect
	wstest.Drain(c)          // reading answers pings
	for i := 0; i < 4; i++ { // the reader waits for room from the third on
		c.WriteMessage(websocket.TextMessage, []byte{'0' + byte(i)})
	}
	for i := 0; i < 4; i++ {
		if e := b.Next(t); e.Kind() != "message" {
			t.Fatalf("event %d: %s, want the message", i, e.Kind())
		}
	}
	if s := ts.pushText(t, id, "still here"); s != 204 {
		t.Fatalf("push after the slow messages: %d, want 204 (closed as idle while the backend was slow?)", s)
	}
}

// Messages abandoned at the shutdown deadline are dropped as "closed",
// whatever on_error says, not counted as upstream errors.
func TestUpstreamShutdownDropsAsClosed(t *testing.T) {
	for _, policy := range []string{"refuse", "allow"} {
		t.Run(policy, func(t *testing.T) {
			stall := staller(t)
			b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
				if e.Kind() == "message" {
					stall(r)
				}
			})
			ts := newTestServer(t, func(c *config.Config) {
				c.Upstream.URL = b.URL
				c.Upstream.OnError = policy
				c.Upstream.Timeout = config.Duration(time.Minute)
				c.ShutdownTimeout = config.Duration(300 * time.Millisecond)
			})
			c, _ := ts.connect(t)
			b.Next(t)
			for i := 0; i < 5; i++ {
				c.WriteMessage(websocket.TextMessage, []byte("m"))
			}
			eventually(t, "4 queued, 1 at the backend", func() bool { return metricValue(t, ts, "wsgate_upstream_queue_events") == 4 })
			ts.shutdown(t)
			if closed, failed := counterValue(ts.up.m.dropped.WithLabelValues("closed")), counterValue(ts.up.m.dropped.WithLabelValues("upstream_error")); closed != 5 || failed != 0 {
				t.Errorf("dropped: closed %v, upstream_error %v; want 5 and 0", closed, failed)
			}
		})
	}
}

// The rest of a reply longer than wanted is read only briefly: a backend
// slow to finish it costs the connection, not the event's time (the test
// lets the backend finish only once the event is done).
func TestUpstreamDrainIsBrief(t *testing.T) {
	released := make(chan struct{})
	timedOut := make(chan bool, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
		w.(http.Flusher).Flush()
		select { // the rest of a streamed body
		case <-released:
			timedOut <- false
		case <-time.After(10 * time.Second):
			timedOut <- true
		}
		io.WriteString(w, "bye")
	}))
	t.Cleanup(srv.Close)
	ts := upstreamServer(t, &testapp.App{URL: srv.URL + "/events"}, func(u *config.Upstream) {
		u.Timeout = config.Duration(time.Minute) // not what ends the wait
	})
	rep, err := ts.up.send(context.Background(), "disconnect", ts.up.header("x"), nil, 0)
	close(released)
	if err != nil || rep.status != 200 || !rep.truncated {
		t.Fatalf("reply %+v, %v", rep, err)
	}
	if <-timedOut {
		t.Fatal("the event waited for the backend to finish a reply it did not want")
	}
}
