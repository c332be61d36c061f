package integration

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/metrictest"
	"github.com/wsgate/wsgate/internal/testapp"
	"github.com/wsgate/wsgate/internal/wstest"
)

// dialHeader opens a WebSocket with request headers; on a refused
// handshake it returns the response's status and body.
func dialHeader(t *testing.T, target string, h http.Header) (*websocket.Conn, string, int, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	c, resp, err := d.Dial(target, h)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		return nil, "", resp.StatusCode, string(body)
	}
	t.Cleanup(func() { c.Close() })
	_, welcome := wstest.ReadMessage(t, c)
	return c, string(welcome), 101, ""
}

// metric reads one sample from a sidecar's /metrics on its push port.
func metric(t *testing.T, pushHost, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + pushHost + "/metrics")
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

// Through nginx, to a backend on TCP and on a unix socket: connect carries
// the id, the push URLs and the cookie, and a 403 refuses the handshake
// with its body; hundreds of text and binary messages sent at once arrive
// in order and their replies reach the client; disconnect has the close
// code.
func TestUpstreamThroughNginx(t *testing.T) {
	for _, unix := range []bool{false, true} {
		t.Run(fmt.Sprintf("unix=%v", unix), func(t *testing.T) {
			a := testapp.Start(t, unix, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
				switch e.Kind() {
				case "connect":
					if e.Header.Get("Cookie") != "session=ok" {
						http.Error(w, "log in first", http.StatusForbidden)
					}
				case "message":
					w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
					w.Write(append([]byte("re:"), e.Body...))
				}
			})
			g := startUp(t, 2, "127.0.0.1", fmt.Sprintf("[upstream]\nurl = %q\n", a.URL))

			if _, _, status, body := dialHeader(t, g.clientWS, nil); status != 403 || body != "log in first\n" {
				t.Fatalf("without the cookie: %d %q, want the backend's 403", status, body)
			}
			a.Next(t)

			c, welcome, status, _ := dialHeader(t, g.clientWS, http.Header{"Cookie": {"session=ok"}})
			if status != 101 {
				t.Fatalf("with the cookie: %d", status)
			}
			u, _ := url.Parse(firstURL(welcome))
			id := u.User.Username()
			e := a.Next(t)
			for k, want := range map[string]string{
				"Wsgate-Event": "connect", "Wsgate-Id": id, "Wsgate-Push-Url": welcome,
				"Cookie": "session=ok", "X-Forwarded-For": "127.0.0.1", "X-Test-Path": "/events",
			} {
				if got := e.Header.Get(k); got != want {
					t.Errorf("connect %s = %q, want %q", k, got, want)
				}
			}

			const n = 300
			msg := func(j int) (int, []byte) {
				if j%3 == 2 {
					return websocket.BinaryMessage, []byte{0xff, byte(j), byte(j >> 8)}
				}
				return websocket.TextMessage, []byte("m" + strconv.Itoa(j))
			}
			for j := 0; j < n; j++ {
				if err := c.WriteMessage(msg(j)); err != nil {
					t.Fatal(err)
				}
			}
			for j := 0; j < n; j++ {
				kind, want := msg(j)
				e := a.Next(t)
				ct := map[int]string{websocket.TextMessage: "text/plain; charset=utf-8", websocket.BinaryMessage: "application/octet-stream"}[kind]
				if e.Kind() != "message" || e.Header.Get("Wsgate-Id") != id || e.Header.Get("Content-Type") != ct || !bytes.Equal(e.Body, want) {
					t.Fatalf("message %d: %s %q %q, want %s %q", j, e.Kind(), e.Header.Get("Content-Type"), e.Body, ct, want)
				}
			}
			for j := 0; j < n; j++ {
				wantKind, want := msg(j)
				if kind, got := wstest.ReadMessage(t, c); kind != wantKind || !bytes.Equal(got, append([]byte("re:"), want...)) {
					t.Fatalf("reply %d: %d %q", j, kind, got)
				}
			}

			c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "done"))
			e = a.Next(t)
			if e.Kind() != "disconnect" || e.Header.Get("Wsgate-Id") != id || e.Header.Get("Wsgate-Close-Code") != "4001" || e.Header.Get("Wsgate-Close-Reason") != "done" {
				t.Fatalf("disconnect: %v", e.Header)
			}
		})
	}
}

// A backend that is down refuses handshakes with 502; one that answers
// messages with 500 gets its clients closed with 1011; one that is slow
// makes the sidecar stop reading from the client at upstream.message_queue
// (memory stays bounded) and then receives everything in order.
func TestUpstreamFailuresThroughNginx(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/events"
	l.Close()

	var mu sync.Mutex
	mode := "ok"
	release := make(chan struct{})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce)
	a := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		mu.Lock()
		m := mode
		mu.Unlock()
		switch {
		case e.Kind() == "connect" && m == "redirect":
			w.Header().Set("Location", "/login?return="+strings.Repeat("x", 2000))
			w.WriteHeader(http.StatusFound)
		case e.Kind() != "message":
		case m == "500":
			http.Error(w, "broken", http.StatusInternalServerError)
		case m == "slow":
			<-release
		}
	})
	setMode := func(m string) {
		mu.Lock()
		mode = m
		mu.Unlock()
	}

	t.Run("down", func(t *testing.T) {
		g := startUp(t, 1, "127.0.0.1", fmt.Sprintf("[upstream]\nurl = %q\n", dead))
		if _, _, status, _ := dialHeader(t, g.clientWS, nil); status != 502 {
			t.Fatalf("backend down: handshake %d, want 502", status)
		}
		push := "127.0.0.1:" + strconv.Itoa(g.portBase)
		if v := metric(t, push, `wsgate_upstream_errors_total{event="connect",reason="unreachable"}`); v != 1 {
			t.Fatalf("unreachable counted %v times", v)
		}
	})

	const queue = 4
	g := startUp(t, 1, "127.0.0.1", fmt.Sprintf("[upstream]\nurl = %q\nmessage_queue = %d\ntimeout = \"10m\"\n", a.URL, queue))
	push := "127.0.0.1:" + strconv.Itoa(g.portBase)

	t.Run("500", func(t *testing.T) {
		setMode("500")
		c, _, _, _ := dialHeader(t, g.clientWS, nil)
		c.WriteMessage(websocket.TextMessage, []byte("x"))
		if code := wstest.MustCloseCode(t, c); code != 1011 {
			t.Fatalf("closed with %d, want 1011", code)
		}
		for e := a.Next(t); e.Kind() != "disconnect"; e = a.Next(t) {
		}
	})

	// A refusal with headers over nginx's 1k proxy_buffer_size: nginx
	// would answer 502 and, after max_fails, refuse every handshake for
	// fail_timeout; the sidecar leaves the long header out instead.
	t.Run("long refusal", func(t *testing.T) {
		setMode("redirect")
		for i := 0; i < 5; i++ {
			if _, _, status, _ := dialHeader(t, g.clientWS, nil); status != http.StatusFound {
				t.Fatalf("refusal %d with a 2 KB Location: %d, want the backend's 302", i, status)
			}
			a.Next(t)
		}
		setMode("ok")
		c, _, status, _ := dialHeader(t, g.clientWS, nil)
		if status != 101 {
			t.Fatalf("after the refusals: %d, want 101", status)
		}
		c.Close()
		for e := a.Next(t); e.Kind() != "disconnect"; e = a.Next(t) {
		}
	})

	t.Run("slow", func(t *testing.T) {
		setMode("slow")
		c, _, _, _ := dialHeader(t, g.clientWS, nil)
		a.Next(t) // connect
		const sent = 200
		base := metric(t, push, "wsgate_client_messages_total")
		for j := 0; j < sent; j++ {
			if err := c.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(j))); err != nil {
				t.Fatal(err)
			}
		}
		// One in flight, queue waiting, one in the reader's hands; the
		// rest waits in socket buffers.
		waitFor(t, 20*time.Second, "the reader to stop", func() bool {
			return metric(t, push, "wsgate_client_messages_total") == base+queue+2
		})
		if v := metric(t, push, "wsgate_upstream_queue_events"); v != queue {
			t.Fatalf("%v events queued, want message_queue %d", v, queue)
		}
		releaseOnce()
		for j := 0; j < sent; j++ {
			if e := a.Next(t); string(e.Body) != strconv.Itoa(j) {
				t.Fatalf("message %d is %q", j, e.Body)
			}
		}
	})
}

// auth.URL: nginx's auth_request refuses a handshake without the cookie
// (401 from the auth backend) and lets it through with it; the subrequest
// goes to auth.url's path, "/" when it has none.
func TestAuthRequestThroughNginx(t *testing.T) {
	for path, want := range map[string]string{"/auth": "/auth", "": "/"} {
		t.Run("path="+want, func(t *testing.T) { testAuthRequest(t, path, want) })
	}
}

func testAuthRequest(t *testing.T, path, wantPath string) {
	auth := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		if e.Header.Get("Cookie") != "session=ok" {
			w.WriteHeader(http.StatusUnauthorized)
		}
	})
	authURL := strings.TrimSuffix(auth.URL, "/events") + path
	g := startUp(t, 2, "127.0.0.1", fmt.Sprintf("[auth]\nurl = %q\n", authURL))

	if _, _, status, _ := dialHeader(t, g.clientWS, nil); status != 401 {
		t.Fatalf("without the cookie: %d, want 401", status)
	}
	e := auth.Next(t)
	if e.Header.Get("X-Test-Path") != wantPath || e.Header.Get("X-Original-Uri") != "/ws" || len(e.Body) != 0 {
		t.Fatalf("auth subrequest: %v %q", e.Header, e.Body)
	}
	c, welcome, status, _ := dialHeader(t, g.clientWS, http.Header{"Cookie": {"session=ok"}})
	if status != 101 || !strings.HasPrefix(welcome, "http://") {
		t.Fatalf("with the cookie: %d %q", status, welcome)
	}
	if s, _ := post(t, httpClient(""), firstURL(welcome), "", []byte("in")); s != 204 {
		t.Fatalf("push: %d", s)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "in" {
		t.Fatalf("got %q", msg)
	}
}

// UPSTREAM.md's example backend, as written, behind `wsgate up`.
func TestUpstreamExampleBackend(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed")
	}
	doc, err := os.ReadFile("../UPSTREAM.md")
	if err != nil {
		t.Fatal(err)
	}
	_, code, _ := strings.Cut(string(doc), "```python\n")
	code, _, _ = strings.Cut(code, "```")
	script := filepath.Join(t.TempDir(), "backend.py")
	if err := os.WriteFile(script, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	port := wstest.FreePorts(t, "127.0.0.1", 1)
	backend := exec.Command(python, script, strconv.Itoa(port))
	stderr := &wstest.Output{}
	backend.Stderr = stderr
	if err := backend.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		backend.Process.Kill()
		backend.Wait()
	})
	waitFor(t, 20*time.Second, "the example backend", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	g := startUp(t, 1, "127.0.0.1", fmt.Sprintf("[upstream]\nurl = \"http://127.0.0.1:%d/events\"\n", port))

	if _, _, status, body := dialHeader(t, g.clientWS, nil); status != 403 || body != "log in first\n" {
		t.Fatalf("without a session: %d %q", status, body)
	}
	c, welcome, _, _ := dialHeader(t, g.clientWS, http.Header{"Cookie": {"session=1"}})
	c.WriteMessage(websocket.TextMessage, []byte("hi"))
	c.WriteMessage(websocket.BinaryMessage, []byte{0, 1})
	if kind, msg := wstest.ReadMessage(t, c); kind != websocket.TextMessage || string(msg) != "echo: hi" {
		t.Fatalf("reply %d %q", kind, msg)
	}
	if kind, msg := wstest.ReadMessage(t, c); kind != websocket.BinaryMessage || string(msg) != "echo: \x00\x01" {
		t.Fatalf("reply %d %q", kind, msg)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
	u, _ := url.Parse(firstURL(welcome))
	waitFor(t, 20*time.Second, "the disconnect logged", func() bool {
		return strings.Contains(stderr.String(), u.User.Username()+" left: 1000")
	})
}
