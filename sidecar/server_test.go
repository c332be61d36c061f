package sidecar

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/metrictest"
	"github.com/wsgate/wsgate/internal/testapp"
	"github.com/wsgate/wsgate/internal/wstest"
)

// metricValue reads one sample from /metrics: name may carry labels exactly
// as exposed, e.g. `wsgate_pushes_total{code="204"}`. Absent is 0.
func metricValue(t *testing.T, ts *testServer, name string) float64 {
	t.Helper()
	resp, err := ts.http.Get("http://push/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	v, _, err := metrictest.Sample(resp.Body, name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWelcomeURLs(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.Push.Listen = []string{"127.0.0.1", "::1"} })
	_, w1 := ts.dial(t, nil)
	_, w2 := ts.dial(t, nil)
	urls := strings.Split(w1, ",")
	if len(urls) != 2 {
		t.Fatalf("welcome %q: want 2 URLs", w1)
	}
	id := idFromURL(t, urls[0])
	if want := "http://" + id + "@127.0.0.1:48775/ws"; urls[0] != want {
		t.Errorf("URL %q, want %q", urls[0], want)
	}
	if want := "http://" + id + "@[::1]:48775/ws"; urls[1] != want {
		t.Errorf("URL %q, want %q", urls[1], want)
	}
	if id2 := idFromURL(t, strings.Split(w2, ",")[0]); id2 == id {
		t.Errorf("two clients share id %q", id)
	}
}

func TestWelcomeAdvertiseAndInstancePort(t *testing.T) {
	c := config.Default()
	c.Push.Advertise = []string{"push.example.net", "2001:db8::1"}
	c.Location = "/live/updates"
	w := newWelcomer(&c, 3)
	got := string(w.frame("ID"))
	want := "http://ID@push.example.net:48777/live/updates,http://ID@[2001:db8::1]:48777/live/updates"
	if got != want {
		t.Fatalf("welcome %q, want %q", got, want)
	}
}

func TestWelcomeJSON(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.WebSocket.Welcome = "json" })
	c, welcome := ts.dial(t, nil)
	var w struct {
		ID   string   `json:"id"`
		Push []string `json:"push"`
	}
	if err := json.Unmarshal([]byte(welcome), &w); err != nil {
		t.Fatalf("welcome %q: %v", welcome, err)
	}
	if len(w.Push) != 1 || w.Push[0] != "http://"+w.ID+"@127.0.0.1:48775/ws" {
		t.Fatalf("welcome %+v", w)
	}
	if ts.pushText(t, w.ID, "hi") != 204 {
		t.Fatal("push to the JSON welcome's id failed")
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "hi" {
		t.Fatalf("got %q", msg)
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := newID()
		if !validID(id) || strings.ContainsAny(id, ":@/+=") {
			t.Fatalf("id %q is not URL- and user-name-safe", id)
		}
		raw, err := base64.RawURLEncoding.DecodeString(id)
		if err != nil || len(raw)*8 < 128 {
			t.Fatalf("id %q carries %d bits", id, len(raw)*8)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "short", strings.Repeat("A", 21), strings.Repeat("A", 23), strings.Repeat("A", 21) + ":", strings.Repeat("A", 21) + "="} {
		if validID(bad) {
			t.Errorf("validID(%q) = true", bad)
		}
	}
}

func TestOriginCheck(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.AllowedOrigins = []string{"https://app.example", "http://localhost:3000"}
	})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://app.example", true},
		{"HTTPS://APP.EXAMPLE", true},
		{"http://localhost:3000", true},
		{"", true}, // not a browser
		{"https://evil.example", false},
		{"https://app.example.evil", false},
		{"http://app.example", false},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, _, err := ts.tryDial(h)
		if tc.ok != (err == nil) {
			t.Errorf("origin %q: err %v, want allowed=%v", tc.origin, err, tc.ok)
		}
		if err != nil {
			if he, ok := err.(*handshakeErr); !ok || he.status != 403 {
				t.Errorf("origin %q: %v, want a 403", tc.origin, err)
			}
		} else {
			c.Close()
		}
	}
	if v := metricValue(t, ts, `wsgate_handshake_rejections_total{reason="origin"}`); v != 3 {
		t.Errorf("origin rejections counted %v, want 3", v)
	}
}

func TestNotAWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, err := (&http.Client{Transport: unixTransport(ts.wsPath)}).Get("http://ws/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("plain GET on the ws socket: %d, want 400", resp.StatusCode)
	}
}

func TestKeepalive(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.PingInterval = config.Duration(50 * time.Millisecond)
		c.WebSocket.IdleTimeout = config.Duration(200 * time.Millisecond)
	})
	// A client that answers pings (gorilla's default ping handler) stays.
	alive, _ := ts.dial(t, nil)
	pings := wstest.AnswerPings(alive)
	aliveErr := make(chan error, 1)
	go func() {
		_, _, err := alive.ReadMessage()
		aliveErr <- err
	}()

	// A client that reads but never pongs is closed with 1001.
	silent, _ := ts.dial(t, nil)
	silent.SetPingHandler(func(string) error { return nil })
	if code := wstest.MustCloseCode(t, silent); code != websocket.CloseGoingAway {
		t.Fatalf("silent client closed with %d, want 1001", code)
	}
	// By then the answering client has seen pings for longer than
	// idle_timeout and is still connected.
	for i := 0; i < 6; i++ {
		select {
		case <-pings:
		case err := <-aliveErr:
			t.Fatalf("answering client lost: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ping")
		}
	}
	select {
	case err := <-aliveErr:
		t.Fatalf("answering client lost: %v", err)
	default:
	}
	if n := ts.Connections(); n != 1 {
		t.Fatalf("%d clients connected, want 1", n)
	}
}

// Pushes count as traffic: a client that is pushed to often is not pinged.
func TestKeepaliveNoPingWhileBusy(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.PingInterval = config.Duration(300 * time.Millisecond)
		c.WebSocket.IdleTimeout = config.Duration(time.Hour)
	})
	c, id := ts.connect(t)
	pinged := make(chan struct{}, 1)
	c.SetPingHandler(func(string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return nil
	})
	// Push every 30ms for 1.2s: four ping intervals with traffic.
	for i := 0; i < 40; i++ {
		ts.pushText(t, id, "x")
		wstest.ReadMessage(t, c)
		time.Sleep(30 * time.Millisecond)
	}
	select {
	case <-pinged:
		t.Fatal("pinged although pushes flowed")
	default:
	}
	// Silence: now a ping comes.
	go c.ReadMessage()
	select {
	case <-pinged:
	case <-time.After(10 * time.Second):
		t.Fatal("no ping after silence")
	}
}

// The keepalive rules, on a clock in ms with ping_interval 100 and
// idle_timeout 300.
func TestKeepaliveRules(t *testing.T) {
	const interval, idle = 100, 300
	for _, c := range []struct {
		name                  string
		now, recv, sent, ping int64
		closeIt, pinged       bool
		next                  int64
	}{
		{"quiet for an interval: ping", 100, 0, 0, 0, false, true, 100},
		{"pinged, the pong not back yet", 150, 0, 100, 100, false, false, 50},
		{"receiving only, pushes flowing", 150, 0, 145, 0, false, false, 50},
		{"receiving only, nothing received for idle-interval: ping", 200, 0, 195, 0, false, true, 100},
		{"receiving only, pinged lately: wait", 250, 0, 245, 200, false, false, 50},
		{"a ping just tried and failed: not again at once", 100, 0, 0, 100, false, false, 100},
		{"nothing received for idle: close", 300, 0, 290, 200, true, false, 0},
	} {
		closeIt, pinged, next := keepalive(c.now, c.recv, c.sent, c.ping, interval, idle)
		if closeIt != c.closeIt || pinged != c.pinged || next != c.next {
			t.Errorf("%s: close %v, ping %v, next %d; want %v, %v, %d", c.name, closeIt, pinged, next, c.closeIt, c.pinged, c.next)
		}
	}
	// Whatever the state, the next look is later.
	for now := int64(0); now < 400; now += 5 {
		for recv := max(now-idle, 0); recv <= now; recv += 5 {
			for sent := int64(0); sent <= now; sent += 5 {
				for ping := int64(0); ping <= now; ping += 25 {
					if closeIt, _, next := keepalive(now, recv, sent, ping, interval, idle); !closeIt && next <= 0 {
						t.Fatalf("keepalive(%d, %d, %d, %d): next %d", now, recv, sent, ping, next)
					}
				}
			}
		}
	}
	// A client pushed to every push ms (0: never) that answers each ping
	// in under an interval is never closed; one that never answers is
	// closed at idle_timeout.
	run := func(push, pong, until int64) (closedAt int64) {
		var now, recv, sent, pinged int64
		answer := int64(-1) // when the pong to the last ping comes
		for now < until {
			if push > 0 {
				sent = max(sent, now-now%push)
			}
			if answer >= 0 && answer <= now {
				recv, answer = max(recv, answer), -1
			}
			closeIt, ping, next := keepalive(now, recv, sent, pinged, interval, idle)
			if closeIt {
				return now
			}
			if ping {
				pinged, sent = now, now
				if pong >= 0 {
					answer = now + pong
				}
			}
			now += next
		}
		return -1
	}
	for _, push := range []int64{0, 10, 50, 99, 150} {
		for _, pong := range []int64{0, 1, 50, 99} {
			if at := run(push, pong, 10000); at >= 0 {
				t.Errorf("pushed every %dms, answering pings in %dms: closed at %dms", push, pong, at)
			}
		}
		if at := run(push, -1, 10000); at != idle {
			t.Errorf("pushed every %dms, never answering: closed at %dms, want %d", push, at, idle)
		}
	}
}

// A client that only receives, pushed to more often than ping_interval,
// is pinged in time anyway, answers, and stays past idle_timeout.
func TestKeepaliveBusyClientStays(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.PingInterval = config.Duration(400 * time.Millisecond)
		c.WebSocket.IdleTimeout = config.Duration(2 * time.Second)
	})
	c, id := ts.connect(t)
	pings := wstest.AnswerPings(c)
	read := wstest.Drain(c)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if status := ts.pushText(t, id, "x"); status != 204 {
			t.Fatalf("push: %d (closed: %v)", status, <-read)
		}
	}
	select {
	case err := <-read:
		t.Fatalf("closed although it answered every ping: %v", err)
	default:
	}
	if len(pings) == 0 {
		t.Fatal("never pinged")
	}
}

func TestShutdownClosesWith1012AfterQueued(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	for i := 0; i < 10; i++ {
		ts.pushText(t, id, strconv.Itoa(i))
	}
	ts.stop()
	for i := 0; i < 10; i++ {
		if _, msg := wstest.ReadMessage(t, c); string(msg) != strconv.Itoa(i) {
			t.Fatalf("message %d: %q", i, msg)
		}
	}
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	ts.shutdown(t)
	if _, _, err := ts.tryDial(nil); err == nil {
		t.Fatal("accepted a client after shutdown")
	}
}

// A client that never reads cannot hold shutdown beyond shutdown_timeout.
func TestShutdownIsBounded(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.ShutdownTimeout = config.Duration(300 * time.Millisecond)
		c.WebSocket.SendQueue = 64
		c.Push.MaxBody = 1 << 20
		c.WebSocket.SendQueueBytes = 64 << 20
		c.WebSocket.SlowClient = "drop"
	})
	_, id := ts.connect(t) // never reads
	big := strings.Repeat("b", 1<<20)
	for i := 0; i < 64; i++ {
		if ts.pushText(t, id, big) != 204 {
			break
		}
	}
	ts.shutdown(t) // fails the test if Serve does not return
	if n := ts.Connections(); n != 0 {
		t.Fatalf("%d clients left after shutdown", n)
	}
}

// Nor can one whose handshake's goroutine is still writing what came with
// the welcome (here an upstream greeting larger than the socket holds):
// that goroutine is the client's writer, which shutdown cuts at its
// deadline, and no longer a handshake it waits for (it once waited up to
// write_timeout).
func TestShutdownIsBoundedWhileWelcoming(t *testing.T) {
	greeting := bytes.Repeat([]byte("g"), 1<<20)
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		if e.Kind() == "connect" {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(greeting) // sent right behind the welcome
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ts := newTestServer(t, func(c *config.Config) {
		c.Upstream.URL = b.URL
		c.Upstream.Events = []string{"connect"}
		c.ShutdownTimeout = config.Duration(300 * time.Millisecond)
		c.WebSocket.WriteTimeout = config.Duration(10 * time.Minute)
	})
	conn, err := net.Dial("unix", ts.wsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, upgradeRequest+"\r\n") // and never reads
	b.Next(t)
	// Until the socket is full: the writer waits for room.
	eventually(t, "the welcome and part of the greeting sent", func() bool { return unread(t, conn) > 64<<10 })
	ts.stop()
	select {
	case err := <-ts.done:
		ts.done <- err
	case <-time.After(time.Minute):
		t.Fatal("shutdown_timeout is 300ms, write_timeout 10m: Serve did not return within a minute")
	}
}

// unread is how many bytes conn has received and not read yet.
func unread(t *testing.T, conn net.Conn) int {
	t.Helper()
	var n int
	var err error
	if cerr := rawConnOf(t, conn).Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); cerr != nil || err != nil {
		t.Fatal(cerr, err)
	}
	return n
}

func TestMetricsCount(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	ts.pushText(t, id, "a")
	wstest.ReadMessage(t, c)
	ts.pushText(t, "nobody", "b")
	// The sent counters move just after the write, which the client can
	// read first.
	eventually(t, "write counted", func() bool {
		return metricValue(t, ts, "wsgate_push_latency_seconds_count") == 1 && metricValue(t, ts, "wsgate_send_queue_messages") == 0
	})
	for name, want := range map[string]float64{
		"wsgate_connections":                    1,
		"wsgate_connects_total":                 1,
		`wsgate_pushes_total{code="204"}`:       1,
		`wsgate_pushes_total{code="404"}`:       1,
		"wsgate_messages_sent_total":            1,
		"wsgate_push_latency_seconds_count":     1,
		"wsgate_send_queue_messages":            0,
		`wsgate_disconnects_total{code="1000"}`: 0,
	} {
		if got := metricValue(t, ts, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	eventually(t, "queue drained", func() bool { return metricValue(t, ts, "wsgate_send_queue_messages") == 0 })
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"))
	eventually(t, "disconnect counted", func() bool {
		return metricValue(t, ts, `wsgate_disconnects_total{code="1000"}`) == 1
	})
}

// A handshake still under way at shutdown (its request trickling in, or
// its connect at a slow backend) holds up no one: the clients connected
// already are closed with 1012 behind what was queued for them, not cut
// at the deadline.
func TestShutdownDoesNotWaitForHandshakes(t *testing.T) {
	t.Run("request trickling", func(t *testing.T) {
		ts := newTestServer(t, func(c *config.Config) { c.ShutdownTimeout = config.Duration(time.Second) })
		c, id := ts.connect(t)
		stall, err := net.Dial("unix", ts.wsPath)
		if err != nil {
			t.Fatal(err)
		}
		defer stall.Close()
		io.WriteString(stall, "GET /ws HTTP/1.1\r\nHost: wsgate\r\n") // the rest never comes
		eventually(t, "the handshake accepted", func() bool {
			n := 0
			ts.pending.Range(func(any, any) bool { n++; return true })
			return n == 1
		})
		shutdownGets1012(t, ts, c, id)
	})
	t.Run("connect at a slow backend", func(t *testing.T) {
		stall := staller(t)
		var connects atomic.Int32
		b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
			if connects.Add(1) > 1 {
				stall(r)
			}
			w.WriteHeader(http.StatusNoContent)
		})
		ts := newTestServer(t, func(c *config.Config) {
			c.ShutdownTimeout = config.Duration(time.Second)
			c.Upstream.URL = b.URL
			c.Upstream.Events = []string{"connect"}
		})
		c, id := ts.connect(t)
		b.Next(t)
		conn, err := net.Dial("unix", ts.wsPath)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, upgradeRequest+"\r\n")
		b.Next(t) // its connect is at the backend
		shutdownGets1012(t, ts, c, id)
	})
}

// shutdownGets1012 pushes 3 messages to c, shuts ts down, and checks that
// c gets them and then 1012.
func shutdownGets1012(t *testing.T, ts *testServer, c *websocket.Conn, id string) {
	t.Helper()
	for i := 0; i < 3; i++ {
		ts.pushText(t, id, strconv.Itoa(i))
	}
	ts.shutdown(t)
	for i := 0; i < 3; i++ {
		if _, msg := wstest.ReadMessage(t, c); string(msg) != strconv.Itoa(i) {
			t.Fatalf("message %d: %q", i, msg)
		}
	}
	if code, err := wstest.CloseCode(c); code != websocket.CloseServiceRestart {
		t.Fatalf("closed with %d (%v), want 1012", code, err)
	}
}
