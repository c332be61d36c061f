package sidecar

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

// rawPush is a connection to a test server's push socket that writes
// requests as given and reads answers.
type rawPush struct {
	net.Conn
	br *bufio.Reader
}

func (ts *testServer) rawPush(t *testing.T) *rawPush {
	t.Helper()
	c, err := net.Dial("unix", ts.pushPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawPush{Conn: c, br: bufio.NewReader(c)}
}

func (p *rawPush) send(t *testing.T, format string, args ...any) {
	t.Helper()
	if _, err := fmt.Fprintf(p, format, args...); err != nil {
		t.Fatal(err)
	}
}

// answer reads one answer: its status, headers and body; a Connection:
// close header is not among the headers but sets closing.
func (p *rawPush) answer(t *testing.T) (int, http.Header, string) {
	status, h, body, _ := p.answerClosing(t)
	return status, h, body
}

func (p *rawPush) answerClosing(t *testing.T) (status int, h http.Header, body string, closing bool) {
	t.Helper()
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		t.Fatalf("reading an answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading an answer's body: %v", err)
	}
	return resp.StatusCode, resp.Header, string(b), resp.Close
}

// The fast path serves pushes as net/http does: pipelined, by path and by
// Basic auth, text and binary, empty, DELETE; refusals with their JSON
// error; and hands no connection over for them.
func TestFastPathServesPushes(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	p := ts.rawPush(t)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"))

	// Three requests in one write.
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 3\r\n\r\none"+
		"POST /ws HTTP/1.1\r\nHost: push\r\nAuthorization: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\ntwo"+
		"POST /ws/ HTTP/1.1\r\nHost: push\r\nauthorization: %s\r\ncontent-length: 0\r\n\r\n", id, auth, auth)
	for i := 0; i < 3; i++ {
		if status, h, body := p.answer(t); status != 204 || h.Get("Date") == "" || body != "" {
			t.Fatalf("answer %d: %d %v %q", i, status, h, body)
		}
	}
	for _, want := range []struct {
		kind int
		data string
	}{{websocket.TextMessage, "one"}, {websocket.BinaryMessage, "two"}, {websocket.TextMessage, ""}} {
		if kind, msg := wstest.ReadMessage(t, c); kind != want.kind || string(msg) != want.data {
			t.Fatalf("got %d %q, want %d %q", kind, msg, want.kind, want.data)
		}
	}

	for _, refused := range []struct {
		request string
		status  int
		error   string
	}{
		{"POST /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: push\r\nContent-Length: 1\r\n\r\nx", 404, "no such client"},
		{"POST /ws HTTP/1.1\r\nHost: push\r\nContent-Length: 1\r\n\r\nx", 400, "no client id"},
		{"POST /ws/" + id + " HTTP/1.1\r\nHost: push\r\nContent-Length: 2\r\n\r\n\xc3\x28", 400, "UTF-8"},
	} {
		p.send(t, "%s", refused.request)
		status, h, body := p.answer(t)
		var e struct{ Error string }
		if status != refused.status || h.Get("Content-Type") != "application/json" || h.Get("X-Content-Type-Options") != "nosniff" ||
			json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, refused.error) {
			t.Errorf("%q: %d %v %q, want %d with %q", refused.request, status, h, body, refused.status, refused.error)
		}
	}

	p.send(t, "DELETE /ws/%s HTTP/1.1\r\nHost: push\r\n\r\n", id)
	if status, _, _ := p.answer(t); status != 204 {
		t.Fatalf("DELETE: %d", status)
	}
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseNormalClosure {
		t.Fatalf("close %d, want 1000", code)
	}
	if got := counterValue(ts.metrics.handovers); got != 0 {
		t.Fatalf("%v connections handed over, want none", got)
	}
	if got := metricValue(t, ts, `wsgate_pushes_total{code="204"}`); got != 4 {
		t.Fatalf("%v pushes counted 204, want 4", got)
	}
}

// A request the fast path does not take goes to net/http with what was
// read of it, and net/http serves the connection from then on: here a
// push that expects 100 Continue, then a plain one. Connection: close is
// honoured on both paths.
func TestFastPathHandsOver(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	p := ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 4\r\n\r\nfast", id)
	if status, _, _ := p.answer(t); status != 204 {
		t.Fatalf("fast push: %d", status)
	}
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n", id)
	if status, _, _ := p.answer(t); status != 100 {
		t.Fatalf("Expect: 100-continue got %d, want 100 from net/http", status)
	}
	p.send(t, "slow")
	if status, _, _ := p.answer(t); status != 204 {
		t.Fatalf("push after 100 Continue: %d", status)
	}
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 5\r\nConnection: close\r\n\r\nafter", id)
	if status, h, _, closing := p.answerClosing(t); status != 204 || !closing {
		t.Fatalf("push with Connection: close on net/http: %d %v", status, h)
	}
	if _, err := p.br.ReadByte(); err != io.EOF {
		t.Fatalf("net/http left the connection open: %v", err)
	}
	for _, want := range []string{"fast", "slow", "after"} {
		if _, msg := wstest.ReadMessage(t, c); string(msg) != want {
			t.Fatalf("got %q, want %q", msg, want)
		}
	}
	if got := counterValue(ts.metrics.handovers); got != 1 {
		t.Fatalf("%v connections handed over, want 1", got)
	}

	// The fast path closes after answering Connection: close.
	p = ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nConnection: close\r\nContent-Length: 4\r\n\r\nlast", id)
	if status, h, _, closing := p.answerClosing(t); status != 204 || !closing {
		t.Fatalf("fast push with Connection: close: %d %v", status, h)
	}
	if _, err := p.br.ReadByte(); err != io.EOF {
		t.Fatalf("the fast path left the connection open: %v", err)
	}
}

// Slow and silent push connections are closed by the fast path's
// timeouts, each after its own: a new connection that sends nothing (the
// header timeout, from accept), a kept-alive one that sends nothing more
// (idle), a header that stops, and a body that stops (answered 400 first,
// as net/http does); a header longer than the fast path reads goes to
// net/http, which refuses one over 16 KiB.
func TestFastPathTimeouts(t *testing.T) {
	timeouts := pushTimeouts{idle: time.Second, header: 200 * time.Millisecond, read: 600 * time.Millisecond, write: time.Second}
	ts := newTestServer(t, nil, func(s *Server) { s.pushTimeouts = timeouts })
	_, id := ts.connect(t)
	for _, c := range []struct {
		name    string
		before  string // a request answered first
		partial string
		timeout time.Duration
		answer  int
	}{
		{"new", "", "", timeouts.header, 0},
		{"idle", "POST /ws/" + id + " HTTP/1.1\r\nHost: push\r\nContent-Length: 1\r\n\r\nx", "", timeouts.idle, 0},
		{"header", "", "POST /ws/" + id + " HTTP/1.1\r\nHost: pu", timeouts.header, 0},
		{"body", "", "POST /ws/" + id + " HTTP/1.1\r\nHost: push\r\nContent-Length: 10\r\n\r\nonly5", timeouts.read, 400},
	} {
		p := ts.rawPush(t)
		if c.before != "" {
			p.send(t, "%s", c.before)
			if status, _, _ := p.answer(t); status != 204 {
				t.Fatalf("%s: the push before: %d", c.name, status)
			}
		}
		start := time.Now()
		p.send(t, "%s", c.partial)
		if c.answer != 0 {
			if status, _, body, closing := p.answerClosing(t); status != c.answer || !closing || !strings.Contains(body, "reading body") || strings.Contains(body, ".sock") {
				t.Errorf("%s: %d %q closing %v, want %d reading body (without the socket's path), closing", c.name, status, body, closing, c.answer)
			}
		}
		_, err := p.br.ReadByte()
		// A deadline may fire up to a sixteenth of its timeout early.
		if took := time.Since(start); err != io.EOF || took < c.timeout*7/8 {
			t.Errorf("%s: %v after %v, want the sidecar to close the connection after %v", c.name, err, took, c.timeout)
		}
	}

	p := ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nX-Long: %s\r\nContent-Length: 4\r\n\r\nlong", id, strings.Repeat("x", maxFastHeader))
	if status, _, _ := p.answer(t); status != 204 {
		t.Errorf("a header over %d bytes: %d, want 204 from net/http", maxFastHeader, status)
	}
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nX-Long: %s\r\nContent-Length: 4\r\n\r\nlong", id, strings.Repeat("x", 32<<10))
	if status, _, _ := p.answer(t); status != 431 {
		t.Errorf("a header over 16 KiB: %d, want 431", status)
	}
}

// A new connection's first request must be whole within the header
// timeout from accept, as net/http times it, whether the fast path serves
// it or hands it over part read (net/http's own header deadline may not
// start afresh then): a client trickling bytes cannot stretch it.
func TestFastPathHeaderTimeFromAccept(t *testing.T) {
	timeouts := pushTimeouts{idle: time.Second, header: 400 * time.Millisecond, read: time.Second, write: time.Second}
	ts := newTestServer(t, nil, func(s *Server) { s.pushTimeouts = timeouts })
	_, id := ts.connect(t)
	head := "POST /ws/" + id + " HTTP/1.1\r\nHost: push\r\n"
	// Each part goes 250ms after the one before, so the last 500ms after
	// accept: past the 400ms, and within 400ms of the first part (which
	// hands the second case over, over the fast path's buffer).
	for name, parts := range map[string][]string{
		"slow start":         {head, "Content-Length: 1\r\n\r\nx"},
		"handed over slowly": {head + "X-Long: " + strings.Repeat("a", maxFastHeader), "\r\nContent-Length: 1\r\n\r\nx"},
	} {
		p := ts.rawPush(t)
		for _, part := range parts {
			time.Sleep(250 * time.Millisecond)
			p.Write([]byte(part))
		}
		if resp, err := http.ReadResponse(p.br, nil); err == nil && resp.StatusCode < 300 {
			t.Errorf("%s: %d for a request whole 500ms after accept, past the header timeout %v", name, resp.StatusCode, timeouts.header)
		}
	}
}

// A push to no client is answered 404 before its body is read, as on
// net/http's path: the body is read and dropped, so one that never comes
// whole still gets the 404 (and holds no memory meanwhile).
func TestFastPathUnknownClientBody(t *testing.T) {
	ts := newTestServer(t, nil)
	p := ts.rawPush(t)
	p.send(t, "POST /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: push\r\nContent-Length: 5\r\n\r\nab")
	p.Conn.(*net.UnixConn).CloseWrite()
	if status, _, body, closing := p.answerClosing(t); status != 404 || !closing {
		t.Errorf("%d %q closing %v, want 404 and the connection closed", status, body, closing)
	}
	// A header cut by the end of the connection: net/http's 400, not
	// silence.
	p = ts.rawPush(t)
	p.send(t, "POST /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: push\r\n")
	p.Conn.(*net.UnixConn).CloseWrite()
	if status, _, body, _ := p.answerClosing(t); status != 400 {
		t.Errorf("a header cut short: %d %q, want 400", status, body)
	}
	// A request line net/http refuses: its 400 at once, the connection
	// still open, not silence until the header timeout.
	p = ts.rawPush(t)
	p.send(t, "BAD\r\n")
	if status, _, body, _ := p.answerClosing(t); status != 400 {
		t.Errorf("a bad request line: %d %q, want 400", status, body)
	}
}

// What net/http tolerates, the fast path does too: CR and LF after a
// POST's body, lines ending in LF alone (for net/http).
func TestFastPathTolerance(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	p := ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 1\r\n\r\na\r\n", id)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 1\r\n\r\nb", id)
	p.send(t, "\r\nPOST /ws/%s HTTP/1.1\nHost: push\nContent-Length: 1\n\nc", id)
	for _, want := range []string{"a", "b", "c"} {
		if status, _, body := p.answer(t); status != 204 {
			t.Fatalf("push %s: %d %s", want, status, body)
		}
		if _, msg := wstest.ReadMessage(t, c); string(msg) != want {
			t.Fatalf("got %q, want %q", msg, want)
		}
	}
	if got := counterValue(ts.metrics.handovers); got != 1 {
		t.Fatalf("%v connections handed over, want 1 (at the LF-only request)", got)
	}
}

// At shutdown the push under way on the fast path is answered (with
// Connection: close) before the clients are closed, a request the fast
// path hands to net/http meanwhile is answered by net/http, and idle
// connections are closed.
func TestFastPathShutdown(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	idle, busy, other := ts.rawPush(t), ts.rawPush(t), ts.rawPush(t)
	for _, p := range []*rawPush{idle, busy, other} {
		p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 5\r\n\r\nfirst", id)
		if status, _, _ := p.answer(t); status != 204 {
			t.Fatalf("push: %d", status)
		}
		wstest.ReadMessage(t, c)
	}
	busy.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 6\r\n\r\nsec", id)
	eventually(t, "the sidecar reading the push", func() bool { return unreadBySidecar(t, busy) == 0 })
	ts.stop()
	eventually(t, "shutdown begun", func() bool { return strings.Contains(ts.log.String(), "shutting down") })

	batch := fmt.Sprintf("{\"id\":%q,\"text\":\"batched\"}\n", id)
	other.send(t, "POST /ws/batch HTTP/1.1\r\nHost: push\r\nContent-Length: %d\r\n\r\n%s", len(batch), batch)
	// Answered, and, as on the fast path, with the connection's end.
	if status, _, body, closing := other.answerClosing(t); status != 200 || !strings.Contains(body, `"status":204`) || !closing {
		t.Fatalf("batch handed to net/http at shutdown: %d %q, closing %v", status, body, closing)
	}
	busy.send(t, "ond")
	if status, _, _, closing := busy.answerClosing(t); status != 204 || !closing {
		t.Fatalf("push under way at shutdown: %d, closing %v", status, closing)
	}
	for name, p := range map[string]*rawPush{"busy": busy, "idle": idle, "other": other} {
		if _, err := p.br.ReadByte(); err != io.EOF {
			t.Errorf("%s connection after shutdown: %v, want EOF", name, err)
		}
	}
	for _, want := range []string{"batched", "second"} {
		if _, msg := wstest.ReadMessage(t, c); string(msg) != want {
			t.Fatalf("got %q, want %q", msg, want)
		}
	}
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseServiceRestart {
		t.Fatalf("close %d, want 1012", code)
	}
	ts.shutdown(t)
}

// unreadBySidecar is how many bytes p sent that the sidecar has not read.
func unreadBySidecar(t *testing.T, p *rawPush) int {
	t.Helper()
	rc, err := p.Conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	n := -1
	rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A 404 whose body (over maxDrain) the fast path will not read is still
// received whole: the connection lingers before it closes, as net/http's
// does, rather than resetting with the body unread.
func TestFastPathBigRefusedBodyLingers(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.Push.MaxBody = 128 << 20
		c.Push.MaxBatch = 128 << 20
		c.WebSocket.SendQueueBytes = 128 << 20
	})
	p := ts.rawPush(t)
	p.send(t, "POST /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: push\r\nContent-Length: %d\r\n\r\n", 100<<20)
	go p.Write(make([]byte, 100<<10)) // some of the body, in the socket when the answer goes
	if status, _, _, closing := p.answerClosing(t); status != 404 || !closing {
		t.Fatalf("%d closing %v, want 404 and the connection closed", status, closing)
	}
	if _, err := p.br.ReadByte(); err != io.EOF {
		t.Errorf("after the answer: %v, want EOF (a reset loses answers in flight)", err)
	}
}
