package sidecar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

func TestPushStatusCodes(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.Push.MaxBody = 4096 })
	c, id := ts.connect(t)
	other := strings.Repeat("A", len(id)) // valid shape, never issued

	exact := bytes.Repeat([]byte("x"), 4096)
	cases := []struct {
		name, method, path, user, ctype string
		body                            []byte
		status                          int
		errorHas                        string
		deliver                         []byte // what the client must get
		binary                          bool
	}{
		{"text via basic auth", "POST", "/ws", id, "text/plain; charset=utf-8", []byte("héllo"), 204, "", []byte("héllo"), false},
		{"text via path", "POST", "/ws/" + id, "", "", []byte("by path"), 204, "", []byte("by path"), false},
		{"binary", "POST", "/ws", id, "application/octet-stream", []byte{0, 0xff, 0xfe, 1}, 204, "", []byte{0, 0xff, 0xfe, 1}, true},
		{"binary with params", "POST", "/ws", id, "Application/Octet-Stream; x=y", []byte{0xc3}, 204, "", []byte{0xc3}, true},
		{"empty body", "POST", "/ws", id, "", nil, 204, "", []byte{}, false},
		{"exactly max_body", "POST", "/ws", id, "", exact, 204, "", exact, false},
		{"max_body+1", "POST", "/ws", id, "", append(exact, 'y'), 413, "max_body", nil, false},
		{"no id", "POST", "/ws", "", "", []byte("x"), 400, "no client id", nil, false},
		{"not UTF-8", "POST", "/ws", id, "text/plain", []byte{0xff, 0xfe}, 400, "UTF-8", nil, false},
		{"unknown id", "POST", "/ws", other, "", []byte("x"), 404, "no such client", nil, false},
		{"malformed id", "POST", "/ws/not:an:id", "", "", []byte("x"), 404, "no such client", nil, false},
		{"GET", "GET", "/ws", id, "", nil, 405, "not allowed", nil, false},
		{"PUT", "PUT", "/ws/" + id, "", "", []byte("x"), 405, "not allowed", nil, false},
		{"other path", "POST", "/elsewhere", id, "", []byte("x"), 404, "no such path", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := ts.do(t, tc.method, tc.path, tc.user, tc.ctype, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d (%s)", status, tc.status, body)
			}
			if tc.status == 204 {
				kind, msg := wstest.ReadMessage(t, c)
				if want := map[bool]int{true: websocket.BinaryMessage, false: websocket.TextMessage}[tc.binary]; kind != want {
					t.Errorf("frame type %d, want %d", kind, want)
				}
				if !bytes.Equal(msg, tc.deliver) {
					t.Errorf("delivered %d bytes %q..., want %d bytes", len(msg), trunc(msg), len(tc.deliver))
				}
				return
			}
			var e struct{ Error string }
			if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Error, tc.errorHas) {
				t.Errorf("error body %q, want JSON error containing %q", body, tc.errorHas)
			}
		})
	}
	// Refused pushes delivered nothing: the next message is the marker.
	if ts.pushText(t, id, "marker") != 204 {
		t.Fatal("marker push failed")
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "marker" {
		t.Fatalf("got %q after refused pushes, want the marker", msg)
	}
}

func trunc(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func TestPushMethodNotAllowedHasAllow(t *testing.T) {
	ts := newTestServer(t, nil)
	req, _ := http.NewRequest("GET", "http://push/ws", nil)
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST, DELETE" {
		t.Fatalf("status %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestPushChunkedBodyLimit(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.Push.MaxBody = 1000 })
	c, id := ts.connect(t)
	for _, n := range []int{1000, 1001, 5000} {
		// A reader of unknown length makes the client send chunked, with
		// no Content-Length for the server to check first.
		req, _ := http.NewRequest("POST", "http://push/ws/"+id, struct{ *bytes.Reader }{bytes.NewReader(bytes.Repeat([]byte("z"), n))})
		resp, err := ts.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := 204
		if n > 1000 {
			want = 413
		}
		if resp.StatusCode != want {
			t.Fatalf("%d bytes chunked: status %d, want %d", n, resp.StatusCode, want)
		}
	}
	if _, msg := wstest.ReadMessage(t, c); len(msg) != 1000 {
		t.Fatalf("delivered %d bytes, want 1000", len(msg))
	}
}

func TestPushOrder(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.WebSocket.SendQueue = 2000 })
	c, id := ts.connect(t)
	const n = 1000
	got := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			_, msg, err := c.ReadMessage()
			if err != nil {
				got <- err
				return
			}
			if want := fmt.Sprintf("m%d", i); string(msg) != want {
				got <- fmt.Errorf("message %d is %q", i, msg)
				return
			}
		}
		got <- nil
	}()
	for i := 0; i < n; i++ {
		if s := ts.pushText(t, id, fmt.Sprintf("m%d", i)); s != 204 {
			t.Fatalf("push %d: status %d", i, s)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}

// Many clients pushed to concurrently each get exactly their own messages.
func TestConcurrentPushesReachTheirClients(t *testing.T) {
	ts := newTestServer(t, nil)
	const clients, each = 50, 40
	conns := make([]*websocket.Conn, clients)
	ids := make([]string, clients)
	for i := range conns {
		conns[i], ids[i] = ts.connect(t)
	}
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if s := ts.pushText(t, ids[i], fmt.Sprintf("%s/%d", ids[i], j)); s != 204 {
					t.Errorf("push: %d", s)
				}
			}
		}()
	}
	wg.Wait()
	for i, c := range conns {
		for j := 0; j < each; j++ {
			if _, msg := wstest.ReadMessage(t, c); string(msg) != fmt.Sprintf("%s/%d", ids[i], j) {
				t.Fatalf("client %d message %d: %q", i, j, msg)
			}
		}
	}
}

func TestDeleteClosesAfterQueuedPushes(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	for i := 0; i < 3; i++ {
		ts.pushText(t, id, fmt.Sprint(i))
	}
	if s, body := ts.do(t, "DELETE", "/ws", id, "", nil); s != 204 {
		t.Fatalf("DELETE: %d %s", s, body)
	}
	for i := 0; i < 3; i++ {
		if _, msg := wstest.ReadMessage(t, c); string(msg) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, msg)
		}
	}
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseNormalClosure {
		t.Fatalf("close code %d, want 1000", code)
	}
	if s := ts.pushText(t, id, "late"); s != 404 {
		t.Fatalf("push after DELETE: %d, want 404", s)
	}
	if s, _ := ts.do(t, "DELETE", "/ws/"+id, "", "", nil); s != 404 {
		t.Fatalf("second DELETE: %d, want 404", s)
	}
}

func TestClientMessagesAreDiscarded(t *testing.T) {
	ts := newTestServer(t, nil)
	c, id := ts.connect(t)
	for i := 0; i < 5; i++ {
		if err := c.WriteMessage(websocket.TextMessage, []byte("hello server")); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "5 messages counted", func() bool { return metricValue(t, ts, "wsgate_client_messages_discarded_total") == 5 })
	ts.pushText(t, id, "marker")
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "marker" {
		t.Fatalf("client got %q: client messages must not be echoed", msg)
	}
}

func TestClientMessageOverMaxIsClosed1009(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.WebSocket.MaxMessage = 100 })
	c, _ := ts.connect(t)
	c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("a"), 100)) // fits
	c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("a"), 101))
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	eventually(t, "client gone", func() bool { return ts.Connections() == 0 })
}

// A push refused before its body was read through (413 by length or
// chunked, 404, 405, a batch over max_batch by length) still has its body
// read, before the answer, so the backend can send all of it and go on
// using the connection. Closing with unread data would reset the
// connection, and with nginx.push_proxy = "stream" the reset reaches the
// backend and can overtake the answer.
// A push's declared length costs memory only as its bytes come: many
// connections that declare push.max_body and then stall hold little, on
// the fast path and on net/http's (here by an unusual Connection header).
func TestStalledBodiesHoldLittle(t *testing.T) {
	const conns, maxBody = 40, 8 << 20
	ts := newTestServer(t, func(c *config.Config) { c.Push.MaxBody, c.WebSocket.SendQueueBytes = maxBody, maxBody })
	_, id := ts.connect(t)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range conns {
		p := ts.rawPush(t)
		header := ""
		if i%2 == 1 {
			header = "Connection: te\r\n"
		}
		p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\n%sContent-Length: %d\r\n\r\nthe start", id, header, maxBody)
		eventually(t, "the sidecar reading it", func() bool { return unreadBySidecar(t, p) == 0 })
	}
	if n := metricValue(t, ts, "wsgate_push_handovers_total"); n != conns/2+1 { // and the /metrics one
		t.Fatalf("%v connections handed to net/http, want %d", n, conns/2+1)
	}
	time.Sleep(100 * time.Millisecond) // for the handlers to be reading
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > conns*maxBody/16 {
		t.Fatalf("%d stalled pushes declaring %d MiB each: the heap grew by %d MiB", conns, maxBody>>20, grown>>20)
	}
}

// readBody reads exactly the declared length, from what was read already
// and from the reader, whatever the size of its reads.
func TestReadBody(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 30000) // 300 kB: grows past bodyStep
	for _, have := range []int{0, 5, bodyStep + 7} {
		got, err := readBody(iotest.OneByteReader(bytes.NewReader(data[have:])), int64(len(data)), data[:have])
		if err != nil || !bytes.Equal(got, data) || cap(got) != len(data) {
			t.Fatalf("have %d: %d bytes (capacity %d), %v", have, len(got), cap(got), err)
		}
		got, err = readBody(iotest.HalfReader(bytes.NewReader(data[have:])), int64(len(data)), data[:have])
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("have %d, half reads: %d bytes, %v", have, len(got), err)
		}
	}
	if _, err := readBody(bytes.NewReader(data[:100]), int64(len(data)), nil); err != io.ErrUnexpectedEOF {
		t.Fatalf("a short body: %v", err)
	}
	if got, err := readBody(bytes.NewReader(data), 10, nil); err != nil || string(got) != "0123456789" {
		t.Fatalf("more than declared: %q %v", got, err)
	}
	if got, err := readBody(bytes.NewReader(nil), 0, nil); got != nil || err != nil {
		t.Fatalf("empty: %q %v", got, err)
	}
}

func TestRefusedBodyIsRead(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.Push.MaxBody, c.Push.MaxBatch = 1000, 2000 })
	_, id := ts.connect(t)
	p := ts.rawPush(t)
	// Far more than net/http reads of an unread body on its own (256 KiB).
	body := bytes.Repeat([]byte("x"), 1<<20)
	send := func(method, path string, chunked bool, body []byte) (int, string) {
		t.Helper()
		sent := make(chan error, 1)
		go func() {
			head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: push\r\nContent-Length: %d\r\n\r\n", method, path, len(body))
			if chunked {
				head = fmt.Sprintf("%s %s HTTP/1.1\r\nHost: push\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", method, path, len(body))
			}
			_, err := p.Write(append([]byte(head), body...))
			if err == nil && chunked {
				_, err = p.Write([]byte("\r\n0\r\n\r\n"))
			}
			sent <- err
		}()
		status, _, answer := p.answer(t)
		if err := <-sent; err != nil {
			t.Fatalf("%s %s: sending the body after the answer %d: %v", method, path, status, err)
		}
		return status, answer
	}
	for _, c := range []struct {
		method, path string
		chunked      bool
		want         int
	}{
		{"POST", "/ws/" + id, false, 413},
		{"POST", "/ws/" + id, true, 413},
		{"POST", "/ws/AAAAAAAAAAAAAAAAAAAAAA", false, 404},
		{"PUT", "/ws/" + id, false, 405},
		{"POST", "/elsewhere", false, 404},
		{"POST", "/ws/batch", false, 413},
		{"PUT", "/ws/batch", true, 405},
		{"POST", "/metrics", false, 405},
		{"DELETE", "/status", true, 405},
	} {
		if status, answer := send(c.method, c.path, c.chunked, body); status != c.want || !strings.Contains(answer, `"error"`) {
			t.Errorf("%s %s (chunked %v): %d %s, want %d", c.method, c.path, c.chunked, status, answer, c.want)
		}
	}
	if status, answer := send("POST", "/ws/"+id, false, []byte("still served")); status != 204 {
		t.Fatalf("the push after: %d %s", status, answer)
	}
	// A batch found too large as it is read has the rest read and is
	// answered, and its connection serves on.
	if status, answer := send("POST", "/ws/batch", true, append(bytes.Repeat([]byte("{}\n"), 1000), body...)); status != 200 || !strings.Contains(answer, `"status":413`) {
		t.Fatalf("chunked batch over max_batch: %d %s", status, answer)
	}
	if status, answer := send("POST", "/ws/"+id, false, []byte("served after the batch")); status != 204 {
		t.Fatalf("the push after the batch: %d %s", status, answer)
	}

	// A client that waits for "100 Continue" before sending a body that
	// is too large is answered at once and need not send it.
	p = ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", id, len(body))
	if status, _, _ := p.answer(t); status != 413 {
		t.Fatalf("Expect: 100-continue over max_body: %d", status)
	}

	// One asked for its body, as a chunked body is read before it is
	// found too large, has the rest of it read too.
	p = ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n", id)
	if status, _, _ := p.answer(t); status != 100 {
		t.Fatalf("chunked with Expect: 100-continue: %d, want 100 first", status)
	}
	p.send(t, "%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	if status, _, _ := p.answer(t); status != 413 {
		t.Fatalf("chunked with Expect: 100-continue over max_body: %d", status)
	}
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: 2\r\n\r\nok", id)
	if status, _, _ := p.answer(t); status != 204 {
		t.Fatalf("the push after: %d", status)
	}

	// Nor is a body declared longer than maxDrain read: its connection is
	// closed with data left either way.
	p = ts.rawPush(t)
	p.send(t, "POST /ws/%s HTTP/1.1\r\nHost: push\r\nContent-Length: %d\r\n\r\n", id, maxDrain+1)
	if status, _, _ := p.answer(t); status != 413 {
		t.Fatalf("Content-Length over maxDrain: %d", status)
	}
}
