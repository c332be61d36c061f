package sidecar

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

// Idle clients hold no goroutine: the poller watches their sockets. A
// goroutine per client (a blocked reader) would add one per client here.
func TestIdleClientsHoldNoGoroutine(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.connect(t) // the first client starts the poller and the pools
	const n = 200
	eventually(t, "first client idle", func() bool { return ts.Connections() == 1 })
	runtime.GC()
	before := runtime.NumGoroutine()
	for range n {
		ts.connect(t)
	}
	eventually(t, "clients connected", func() bool { return ts.Connections() == n+1 })
	var after int
	eventually(t, "writers and handshakes done", func() bool {
		after = runtime.NumGoroutine()
		return after-before < n/10
	})
	// And they are still read: a ping is answered. The pong and pushes are
	// written by different goroutines, so push until the pong has come.
	c, id := ts.connect(t)
	pong := make(chan string, 1)
	c.SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		select {
		case s := <-pong:
			if s != "p" {
				t.Fatalf("pong %q", s)
			}
			return
		default:
		}
		if i == 100 {
			t.Fatal("no pong")
		}
		if code := ts.pushText(t, id, "x"); code != 204 {
			t.Fatalf("push %d", code)
		}
		wstest.ReadMessage(t, c)
	}
}

// A frame that breaks RFC 6455 ends the client with 1002, reported as such.
func TestProtocolErrorClosed1002(t *testing.T) {
	for name, frame := range map[string][]byte{
		"unmasked":      {0x81, 0x02, 'h', 'i'},
		"reserved bits": {0xC1, 0x80, 0, 0, 0, 0},
		"bad opcode":    {0x83, 0x80, 0, 0, 0, 0},
		"continuation":  {0x80, 0x80, 0, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			c, _ := ts.connect(t)
			if _, err := c.NetConn().Write(frame); err != nil {
				t.Fatal(err)
			}
			if code := wstest.MustCloseCode(t, c); code != websocket.CloseProtocolError {
				t.Fatalf("close code %d, want 1002", code)
			}
			eventually(t, "disconnect counted as other (1002)", func() bool {
				return metricValue(t, ts, `wsgate_disconnects_total{code="other"}`) == 1
			})
		})
	}
}

// A client's close is echoed with its code, and the client is released.
func TestClientCloseEchoed(t *testing.T) {
	ts := newTestServer(t, nil)
	c, _ := ts.connect(t)
	msg := websocket.FormatCloseMessage(4001, "bye")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if code := wstest.MustCloseCode(t, c); code != 4001 {
		t.Fatalf("echoed close code %d, want 4001", code)
	}
	eventually(t, "client gone", func() bool { return ts.Connections() == 0 })
}

// A message sent one byte per write, split across many reads, arrives whole
// (here: at the client message counters).
func TestClientMessageInPieces(t *testing.T) {
	ts := newTestServer(t, nil)
	c, _ := ts.connect(t)
	payload := strings.Repeat("x", 300) // 16-bit length form
	frame := []byte{0x81, 0xFE, 0x01, 0x2C, 1, 2, 3, 4}
	mask := []byte{1, 2, 3, 4}
	for i := range len(payload) {
		frame = append(frame, payload[i]^mask[i%4])
	}
	for _, b := range frame {
		if _, err := c.NetConn().Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "message counted", func() bool {
		return metricValue(t, ts, "wsgate_client_messages_total") == 1 && metricValue(t, ts, "wsgate_client_message_bytes_total") == 300
	})
}

// rawHandshake sends req on a new connection to the ws socket and returns
// the response status and the bytes of the first read.
func rawHandshake(t *testing.T, ts *testServer, req string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("unix", ts.wsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(buf[:n]))), nil)
	if err != nil {
		t.Fatalf("%v in %q", err, buf[:n])
	}
	return resp.StatusCode, buf[:n]
}

const upgradeRequest = "GET /ws HTTP/1.1\r\nHost: wsgate\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

// The 101 and the welcome leave in one write, so they arrive in one read.
func TestHandshakeAndWelcomeInOneWrite(t *testing.T) {
	ts := newTestServer(t, nil)
	status, got := rawHandshake(t, ts, upgradeRequest+"\r\n")
	if status != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", status)
	}
	head, frame, _ := strings.Cut(string(got), "\r\n\r\n")
	if !strings.Contains(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
		t.Fatalf("101 without the RFC 6455 accept key: %q", head)
	}
	if len(frame) < 2 || frame[0] != 0x81 || !strings.Contains(frame, "http://") {
		t.Fatalf("no welcome frame in the first read after the 101: %q", frame)
	}
}

// The welcome is the first frame even when the keepalive timer fires
// before it is written: no ping (nor idle close) overtakes it.
func TestWelcomeBeforeAnyPing(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.PingInterval = config.Duration(time.Nanosecond)
		c.Log.Level = "info"
	})
	for i := 0; i < 100; i++ {
		_, got := rawHandshake(t, ts, upgradeRequest+"\r\n")
		if _, frame, _ := strings.Cut(string(got), "\r\n\r\n"); len(frame) < 2 || frame[0] != 0x81 {
			t.Fatalf("handshake %d: the first frame is not the welcome: %q", i, frame)
		}
	}
}

// Requests that cannot be a handshake are answered and closed.
func TestBadHandshakes(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"garbage", "HELLO\r\n\r\n", 400},
		{"headers over 16 KiB", upgradeRequest + "X-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431},
		{"request line over 16 KiB", "GET /ws?" + strings.Repeat("a", 20<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n", 431},
		{"body", upgradeRequest + "Content-Length: 2\r\n\r\nhi", 400},
		{"no key", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", 400},
		{"POST", strings.Replace(upgradeRequest, "GET", "POST", 1) + "\r\n", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, got := rawHandshake(t, ts, tc.req)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %q", status, tc.status, got)
			}
			_, body, _ := strings.Cut(string(got), "\r\n\r\n")
			if !strings.Contains(strings.ToLower(body), strings.ToLower(http.StatusText(status))) {
				t.Fatalf("the body does not say what is wrong: %q", got)
			}
		})
	}
	if ts.Connections() != 0 {
		t.Fatalf("%d clients after refused handshakes", ts.Connections())
	}
}

// A client that trickles bytes of a frame it never finishes is idle: only
// complete frames count as activity.
func TestTrickleIsIdle(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.WebSocket.PingInterval = config.Duration(50 * time.Millisecond)
		c.WebSocket.IdleTimeout = config.Duration(200 * time.Millisecond)
	})
	c, _ := ts.connect(t)
	c.SetPingHandler(func(string) error { return nil }) // no pongs
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		// A binary frame of 60000 bytes, one byte every 20ms.
		frame := append([]byte{0x82, 0xFE, 0xEA, 0x60, 1, 2, 3, 4}, make([]byte, 60000)...)
		for _, b := range frame {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := c.NetConn().Write([]byte{b}); err != nil {
				return
			}
		}
	}()
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001 (idle)", code)
	}
}

// At the shutdown deadline a handshake still reading its request is failed,
// not left behind the stopped server.
func TestShutdownEndsStalledHandshake(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.ShutdownTimeout = config.Duration(200 * time.Millisecond)
	})
	conn, err := net.Dial("unix", ts.wsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: wsgate\r\n") // and no more
	eventually(t, "handshake accepted", func() bool {
		n := 0
		ts.pending.Range(func(any, any) bool { n++; return true })
		return n == 1
	})
	ts.shutdown(t)
	conn.SetReadDeadline(time.Now().Add(3 * time.Second)) // the handshake timeout is 10s
	_, err = io.ReadAll(conn)
	if err != nil {
		t.Fatalf("stalled handshake not ended at the shutdown deadline: %v", err)
	}
}

// A text message that is not UTF-8 ends the client with 1007.
func TestTextNotUTF8Closed1007(t *testing.T) {
	ts := newTestServer(t, nil)
	c, _ := ts.connect(t)
	if err := c.WriteMessage(websocket.TextMessage, []byte("ok\xff")); err != nil {
		t.Fatal(err)
	}
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseInvalidFramePayloadData {
		t.Fatalf("close code %d, want 1007", code)
	}
}
