package sidecar

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
)

// testServer is a Server on unix listeners the test created, handed over the
// way socket activation hands them.
type testServer struct {
	*Server
	wsPath, pushPath string
	http             *http.Client
	stop             context.CancelFunc
	done             chan error
	log              *testWriter // what the server logged
}

func newTestServer(t testing.TB, mutate func(*config.Config), opts ...Option) *testServer {
	t.Helper()
	cfg := config.Default()
	cfg.RuntimeDir = t.TempDir()
	cfg.ShutdownTimeout = config.Duration(5 * time.Second)
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		wsPath:   filepath.Join(cfg.RuntimeDir, "ws-1.sock"),
		pushPath: filepath.Join(cfg.RuntimeDir, "push-1.sock"),
		done:     make(chan error, 1),
	}
	ws, err := net.Listen("unix", ts.wsPath)
	if err != nil {
		t.Fatal(err)
	}
	push, err := net.Listen("unix", ts.pushPath)
	if err != nil {
		t.Fatal(err)
	}
	ts.log = &testWriter{t: t}
	log := slog.New(slog.NewTextHandler(ts.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts.Server = New(&cfg, 1, log, opts...)
	var ctx context.Context
	ctx, ts.stop = context.WithCancel(context.Background())
	go func() { ts.done <- ts.Serve(ctx, ws, push) }()
	ts.http = &http.Client{Transport: unixTransport(ts.pushPath)}
	t.Cleanup(func() { ts.shutdown(t) })
	return ts
}

// unixTransport sends every request to the unix socket at path.
func unixTransport(path string) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}
}

// shutdown stops the server and waits for Serve to return.
func (ts *testServer) shutdown(t testing.TB) {
	t.Helper()
	ts.stop()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- err // later calls return at once
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
}

// testWriter sends log output to t.Log and keeps it.
type testWriter struct {
	t testing.TB
	wstest.Output
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return w.Output.Write(p)
}

// dial connects a WebSocket client and returns it with the welcome frame.
func (ts *testServer) dial(t testing.TB, header http.Header) (*websocket.Conn, string) {
	t.Helper()
	c, welcome, err := ts.tryDial(header)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, welcome
}

func (ts *testServer) tryDial(header http.Header) (*websocket.Conn, string, error) {
	d := websocket.Dialer{
		NetDial:          func(_, _ string) (net.Conn, error) { return net.Dial("unix", ts.wsPath) },
		HandshakeTimeout: 5 * time.Second,
	}
	c, resp, err := d.Dial("ws://wsgate/ws", header)
	if err != nil {
		if resp != nil {
			return nil, "", &handshakeErr{resp.StatusCode, err}
		}
		return nil, "", err
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	kind, msg, err := c.ReadMessage()
	if err != nil || kind != websocket.TextMessage {
		c.Close()
		return nil, "", err
	}
	c.SetReadDeadline(time.Time{})
	return c, string(msg), nil
}

type handshakeErr struct {
	status int
	err    error
}

func (e *handshakeErr) Error() string { return e.err.Error() }

// connect dials and returns the client with its id.
func (ts *testServer) connect(t testing.TB) (*websocket.Conn, string) {
	t.Helper()
	c, welcome := ts.dial(t, nil)
	return c, idFromURL(t, strings.Split(welcome, ",")[0])
}

// idFromURL returns the user name of a push URL.
func idFromURL(t testing.TB, u string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(u, "http://")
	at := strings.IndexByte(rest, '@')
	if !ok || at < 0 {
		t.Fatalf("not a push URL: %q", u)
	}
	return rest[:at]
}

// do sends a push API request and returns the status and the body.
func (ts *testServer) do(t *testing.T, method, path, user, contentType string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://push"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, "")
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// pushText POSTs a text message to id with Basic auth.
func (ts *testServer) pushText(t *testing.T, id, msg string) int {
	t.Helper()
	status, _ := ts.do(t, "POST", "/ws", id, "text/plain", []byte(msg))
	return status
}

// eventually fails unless cond becomes true within 10s.
// staller returns what a test backend calls to answer a request never:
// it returns only when the request is canceled, or when the test ends.
func staller(t testing.TB) func(*http.Request) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return func(r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
