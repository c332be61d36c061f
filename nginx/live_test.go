package nginx

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// TestLive runs nginx on the standalone config in front of stand-in
// sidecars and checks what the generated directives are for: WebSocket
// upgrades reach a sidecar with the forwarding headers, a refused sidecar is
// skipped, pushes reach their own instance intact, and nginx's own push
// errors are JSON.
func TestLive(t *testing.T) {
	bin := nginxBinary(t)
	// Workers may run as another user (nobody, when nginx starts as root
	// with no user directive): make the sockets reachable.
	dir, err := os.MkdirTemp("", "wsgate-live-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Instances = 2
	c.RuntimeDir = dir
	c.Push.MaxBody = 1024
	c.Listen = []string{fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1))}
	c.Push.PortBase = freePorts(t, 2)

	// Instance 1 has no ws socket, instance 2 no push socket.
	wsHeaders := make(chan http.Header, 10)
	serveUnix(t, c.WSSocket(2), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsHeaders <- r.Header
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw) // echo
	}))
	pushes := make(chan string, 10)
	serveUnix(t, c.PushSocket(1), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		user, _, _ := r.BasicAuth()
		pushes <- r.Method + " " + r.URL.Path + " " + user + " " + string(b)
		w.WriteHeader(http.StatusNoContent)
	}))

	startNginx(t, bin, &c)
	base := "http://" + c.Listen[0]

	t.Run("placeholder", func(t *testing.T) {
		code, body := do(t, "GET", base+"/", "", strings.NewReader(""))
		if code != 200 || body != "wsgate: connect a WebSocket to /ws\n" {
			t.Errorf("GET / = %d %q", code, body)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		for range 3 { // each one skips the refused instance 1
			upgrade(t, c.Listen[0])
			h := <-wsHeaders
			for k, want := range map[string]string{
				"Upgrade": "websocket", "Connection": "upgrade", "X-Real-Ip": "127.0.0.1",
				"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("sidecar saw %s: %q, want %q", k, got, want)
				}
			}
		}
	})
	t.Run("only the location", func(t *testing.T) {
		// Paths that start like it stay the server's own.
		for _, p := range []string{"/wsdl", "/ws/x", "/ws-docs"} {
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close() // unread: the fake sidecar's answer never ends
			if resp.StatusCode != 404 {
				t.Errorf("GET %s = %d, want nginx's 404", p, resp.StatusCode)
			}
		}
		if len(wsHeaders) > 0 {
			t.Errorf("a request for another path reached the sidecar: %v", <-wsHeaders)
		}
	})
	push1 := fmt.Sprintf("http://client-id@127.0.0.1:%d/ws", c.PushPort(1))
	t.Run("push", func(t *testing.T) {
		body := strings.Repeat("x", 1024)
		if code, _ := do(t, "POST", push1, "", strings.NewReader(body)); code != 204 {
			t.Fatalf("push = %d, want 204", code)
		}
		if got, want := <-pushes, "POST /ws client-id "+body; got != want {
			t.Errorf("sidecar got %.40q..., want %.40q...", got, want)
		}
	})
	t.Run("too large", func(t *testing.T) {
		want := `{"error":"body exceeds push.max_body (1024 bytes)"}` + "\n"
		for _, body := range []io.Reader{
			strings.NewReader(strings.Repeat("x", 1025)),                 // Content-Length
			io.MultiReader(strings.NewReader(strings.Repeat("x", 1025))), // chunked
		} {
			code, got := do(t, "POST", push1, "", body)
			if code != 413 || got != want {
				t.Errorf("oversized push = %d %q, want 413 %q", code, got, want)
			}
		}
	})
	t.Run("stub_status", func(t *testing.T) {
		url := fmt.Sprintf("http://127.0.0.1:%d/nginx_status", c.PushPort(1))
		if code, body := do(t, "GET", url, "", nil); code != 200 || !strings.HasPrefix(body, "Active connections: ") {
			t.Errorf("GET %s = %d %q, want nginx's stub_status", url, code, body)
		}
		if code, body := do(t, "GET", base+"/nginx_status", "", nil); code != 404 || strings.Contains(body, "Active connections") {
			t.Errorf("stub_status on the client listener: %d %q", code, body)
		}
	})
	t.Run("sidecar down", func(t *testing.T) {
		push2 := fmt.Sprintf("http://127.0.0.1:%d/ws", c.PushPort(2))
		want := `{"error":"wsgate instance 2 is not answering"}` + "\n"
		for _, url := range []string{push2, push2 + "/batch"} {
			if code, got := do(t, "POST", url, "", strings.NewReader("x")); code != 502 || got != want {
				t.Errorf("POST %s to a stopped instance = %d %q, want 502 %q", url, code, got, want)
			}
		}
	})
}

// freePorts finds n consecutive free TCP ports on 127.0.0.1 and returns the first.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	// Below Linux's ephemeral range (32768..60999 by default), so that the
	// outgoing connections of tests running alongside do not take them.
next:
	for range 200 {
		first := 10000 + rand.IntN(20000)
		for p := first; p < first+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				continue next
			}
			l.Close()
		}
		return first
	}
	t.Fatal("no free ports")
	return 0
}

// serveUnix serves h on a unix socket any user can connect to.
func serveUnix(t *testing.T, path string, h http.Handler) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// startNginx runs nginx in the foreground on the standalone config until
// the test ends.
func startNginx(t *testing.T, bin string, c *config.Config) {
	t.Helper()
	state := filepath.Join(c.RuntimeDir, "nginx")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := Standalone(c, Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(state, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := Command(bin, "-p", state+"/", "-c", file)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT)
		cmd.Wait()
		if log, _ := os.ReadFile(filepath.Join(state, "error.log")); t.Failed() && len(log) > 0 {
			t.Logf("nginx error.log:\n%s", log)
		}
	})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", c.Listen[0]); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx did not start listening")
		}
	}
}

// do makes one request and returns the status and body.
func do(t *testing.T, method, url, contentType string, body io.Reader) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// upgrade opens a WebSocket-style upgraded connection through nginx and
// checks that bytes pass both ways.
func upgrade(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade = %s", resp.Status)
	}
	io.WriteString(conn, "frame")
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "frame" {
		t.Fatalf("echo through nginx = %q, %v", got, err)
	}
}
