package sidecar

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

// wsConn's frames, in every length form, read by gorilla's client, with
// the held 101 in front of the first; then a close, after which nothing
// more is written.
func TestWSConnFrames(t *testing.T) {
	server, client := unixPair(t)
	sizes := []int{0, 5, 125, 126, 65535, 65536, 200000}
	errs := make(chan error, 1)
	go func() {
		req, err := http.ReadRequest(bufio.NewReader(server))
		if err != nil {
			errs <- err
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		w := newWSConn(server, rawConnOf(t, server), []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+
			base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n"))
		deadline := time.Now().Add(5 * time.Second)
		for i, n := range sizes {
			op := byte(opText)
			if i%2 == 1 {
				op = opBinary
			}
			if err := w.write(op, bytes.Repeat([]byte{'a' + byte(i)}, n), deadline); err != nil {
				errs <- err
				return
			}
		}
		if err := w.write(opPing, []byte("p"), deadline); err != nil {
			errs <- err
			return
		}
		if err := w.write(opClose, websocket.FormatCloseMessage(1000, "done"), deadline); err != nil {
			errs <- err
			return
		}
		if err := w.write(opText, []byte("late"), deadline); err != websocket.ErrCloseSent {
			errs <- errors.New("a write after close: " + errString(err))
			return
		}
		errs <- nil
	}()
	c, _, err := websocket.NewClient(client, &url.URL{Scheme: "ws", Host: "wsgate", Path: "/ws"}, nil, 1024, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pinged := false
	c.SetPingHandler(func(string) error { pinged = true; return nil })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i, n := range sizes {
		kind, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if want := bytes.Repeat([]byte{'a' + byte(i)}, n); kind != []int{websocket.TextMessage, websocket.BinaryMessage}[i%2] || !bytes.Equal(msg, want) {
			t.Fatalf("message %d: kind %d, %d bytes; want %d bytes", i, kind, len(msg), n)
		}
	}
	_, _, err = c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 1000 || ce.Text != "done" || !pinged {
		t.Fatalf("after the messages: %v, pinged %v", err, pinged)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// A write waits for the one under way only until its deadline; a write
// error is returned again by every later write.
func TestWSConnTimeoutAndBroken(t *testing.T) {
	server, client := unixPair(t)
	w := newWSConn(server, rawConnOf(t, server), nil)
	w.lock <- struct{}{} // a write under way
	if err := w.write(opText, []byte("x"), time.Now().Add(50*time.Millisecond)); err != errWriteTimeout {
		t.Fatalf("write behind a stuck one: %v, want %v", err, errWriteTimeout)
	}
	<-w.lock
	client.Close()
	var first error
	for first == nil { // the peer's close shows on the first write or soon after
		first = w.write(opText, bytes.Repeat([]byte("x"), 1<<16), time.Now().Add(time.Second))
	}
	if err := w.write(opPing, nil, time.Now().Add(time.Second)); err != first {
		t.Fatalf("after %v: %v", first, err)
	}
}

// The writer's path (a frame, a flush) allocates nothing per
// write, as tryWrite does not: the frame header is in the pooled rawOp.
func TestWSConnWritesWithoutAllocating(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	server, client := unixPair(t)
	go io.Copy(io.Discard, client)
	w := newWSConn(server, rawConnOf(t, server), nil)
	payload := bytes.Repeat([]byte("x"), 64)
	deadline := time.Now().Add(time.Minute)
	for name, write := range map[string]func() error{
		"write": func() error { return w.write(opText, payload, deadline) },
		"flush": func() error { return w.flush(deadline) },
	} {
		var err error
		if n := testing.AllocsPerRun(100, func() { err = errors.Join(err, write()) }); n != 0 || err != nil {
			t.Errorf("%s: %v allocations per write, error %v", name, n, err)
		}
	}
}

// A control frame written while a push's frame is only partly out (the
// pushing goroutine wrote what the socket took; its writer has yet to
// send the rest) goes after that frame, not into it: here a pong, which
// the reading goroutine writes.
func TestControlFrameAfterPartFrame(t *testing.T) {
	// One P: the writer push starts cannot run before the pong is
	// written, which is the order that once put the pong inside.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	ts := newTestServer(t, nil)
	server, peer := unixPair(t)
	raw := rawConnOf(t, server)
	c := &client{id: "partial", srv: ts.Server, ws: newWSConn(server, raw, nil), raw: raw}
	payload := bytes.Repeat([]byte("a"), 4<<20) // far more than the socket takes at once
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(10+len(payload)+3)))
		got <- b
	}()
	if r := c.push(frame{kind: websocket.BinaryMessage, data: payload}); r != queued {
		t.Fatalf("push: %v", r)
	}
	if err := c.ping([]byte("p")); err != nil {
		t.Fatal(err)
	}
	b := <-got
	head, size := frameHeader(websocket.BinaryMessage, len(payload))
	pong := []byte{0x8a, 1, 'p'}
	if !bytes.Equal(b[:size], head[:size]) || !bytes.Equal(b[size:size+len(payload)], payload) || !bytes.Equal(b[size+len(payload):], pong) {
		t.Fatalf("not the data frame and then the pong: the pong at %d of %d bytes", bytes.Index(b, pong), len(b))
	}
}

// The rest of a frame the socket took only in part counts as queued bytes
// until it is written: a client that does not read holds at most
// send_queue_bytes, not that much more.
func TestPartFrameCountsAsQueued(t *testing.T) {
	ts := newTestServer(t, nil)
	server, peer := unixPair(t)
	defer peer.Close() // and never read
	raw := rawConnOf(t, server)
	c := &client{id: "partial", srv: ts.Server, ws: newWSConn(server, raw, nil), raw: raw}
	payload := bytes.Repeat([]byte("a"), int(ts.queueBytes))
	if r := c.push(frame{kind: websocket.BinaryMessage, data: payload}); r != queued {
		t.Fatalf("first push: %v", r)
	}
	if r := c.push(frame{kind: websocket.BinaryMessage, data: payload}); r != full {
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Fatalf("a second push of send_queue_bytes while most of the first is unsent: %v (%d bytes queued), want full", r, c.bytes)
	}
}

// What is left of a partly written frame never shares memory with its
// header, which is in a pooled rawOp: an empty push whose header went only
// in part once came back as a slice of it, and a later write rewrote it.
func TestFrameRestIsNotTheHeader(t *testing.T) {
	for _, c := range []struct {
		payload string
		n       int
		want    string
	}{
		{"", 1, "\x00"},
		{"ab", 1, "\x02ab"},
		{"ab", 2, "ab"},
		{"ab", 3, "b"},
	} {
		head, size := frameHeader(opText, len(c.payload))
		rest := frameRest(head[:size], []byte(c.payload), c.n)
		got := string(rest)
		for i := range head {
			head[i] = 0xff // the next write's header
		}
		if got != c.want || string(rest) != got {
			t.Errorf("payload %q, %d bytes sent: rest %q, then %q once the header is reused; want %q", c.payload, c.n, got, rest, c.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// rawConnOf returns c's RawConn.
func rawConnOf(t testing.TB, c net.Conn) syscall.RawConn {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// unixPair is a connected pair of unix sockets.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	path := t.TempDir() + "/pair.sock"
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// Pushes to a client that is not reading: the first go out from the
// pushing goroutine, one only partly (the socket's buffer fills), and the
// writer sends its rest and the ones queued behind before anything else.
// The client then gets every message whole and in order.
func TestPushPartlyWritten(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) {
		c.Push.MaxBody = 1 << 20
		c.WebSocket.SendQueueBytes = 64 << 20
	})
	c, id := ts.connect(t)
	// Over half the socket's send buffer each (a write is cut into
	// pieces of about half of it), so that one ends partly written.
	const n = 6
	msg := func(i int) []byte { return bytes.Repeat([]byte{'A' + byte(i)}, 300000+i) }
	for i := range n {
		status, body := ts.do(t, "POST", "/ws", id, "application/octet-stream", msg(i))
		if status != 204 {
			t.Fatalf("push %d: %d %s", i, status, body)
		}
	}
	for i := range n {
		kind, got := wstest.ReadMessage(t, c)
		if kind != websocket.BinaryMessage || !bytes.Equal(got, msg(i)) {
			t.Fatalf("message %d: kind %d, %d bytes of %q..., want %d of %q", i, kind, len(got), got[:min(len(got), 1)], len(msg(i)), msg(i)[:1])
		}
	}
}
