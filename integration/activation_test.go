package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
)

// startActivated runs `wsgate serve` the way systemd does: the listening
// sockets as fds 3 and 4, LISTEN_FDS, LISTEN_FDNAMES, and LISTEN_PID set to
// the child's own pid (the shell's $$ survives exec).
func startActivated(t *testing.T, cfg string, ws, push *os.File) (*exec.Cmd, *wstest.Output) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`,
		wsgateBin, "serve", "-config", cfg, "-instance", "1", "-log-level", "debug")
	cmd.Env = append(os.Environ(), "LISTEN_FDS=2", "LISTEN_FDNAMES=ws:push")
	cmd.ExtraFiles = []*os.File{ws, push}
	out := &wstest.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("wsgate serve output:\n%s", out)
		}
	})
	return cmd, out
}

func TestServeBySocketActivation(t *testing.T) {
	dir := t.TempDir()
	wsPath, pushPath := filepath.Join(dir, "a-ws.sock"), filepath.Join(dir, "a-push.sock")
	ws, push := unixListener(t, wsPath), unixListener(t, pushPath)
	runtime := filepath.Join(dir, "runtime") // must stay empty: the sockets come from activation
	cfg := writeConfig(t, dir, `instances = 1
runtime_dir = "`+runtime+`"
shutdown_timeout = "5s"
`)
	cmd, out := startActivated(t, cfg, ws, push)

	c, welcome := mustDial(t, "ws://wsgate/ws", wsPath)
	url := firstURL(welcome)
	if !strings.HasPrefix(url, "http://") || !strings.HasSuffix(url, "@127.0.0.1:48775/ws") {
		t.Fatalf("welcome %q", welcome)
	}
	id := strings.TrimPrefix(url[:strings.IndexByte(url, '@')], "http://")
	hc := httpClient(pushPath)
	if s, body := post(t, hc, "http://push/ws/"+id, "text/plain", []byte("activated")); s != 204 {
		t.Fatalf("push: %d %s", s, body)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "activated" {
		t.Fatalf("got %q", msg)
	}
	if entries, _ := os.ReadDir(runtime); len(entries) > 0 {
		t.Fatalf("serve bound sockets itself in %s: %v", runtime, entries)
	}
	if !strings.Contains(out.String(), "activated=true") {
		t.Errorf("log does not report activation:\n%s", out)
	}

	// SIGTERM: the client is closed with 1012 and the process exits 0.
	cmd.Process.Signal(syscall.SIGTERM)
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseServiceRestart {
		t.Fatalf("close code %d, want 1012", code)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}

	// The sockets outlive the process: a client that connects while no
	// sidecar runs waits in the backlog and is served by the next one.
	type result struct {
		welcome string
		err     error
	}
	pending := make(chan result, 1)
	go func() {
		c, w, err := dialWS("ws://wsgate/ws", wsPath)
		if err == nil {
			c.Close()
		}
		pending <- result{w, err}
	}()
	time.Sleep(100 * time.Millisecond) // let the dial reach the backlog first
	startActivated(t, cfg, ws, push)
	if r := <-pending; r.err != nil || !strings.Contains(r.welcome, "@127.0.0.1:48775/ws") {
		t.Fatalf("client during restart: %v %q", r.err, r.welcome)
	}
}

// A push socket that is not what nginx.push_proxy wants (systemd's unix
// wsgate-push@.socket without the drop-in that makes it the push port, for
// "none") would leave every push URL unanswered: serve refuses to start,
// saying so.
func TestServeRefusesMismatchedPushSocket(t *testing.T) {
	dir := t.TempDir()
	ws, push := unixListener(t, filepath.Join(dir, "m-ws.sock")), unixListener(t, filepath.Join(dir, "m-push.sock"))
	cfg := writeConfig(t, dir, "instances = 1\nruntime_dir = \""+dir+"\"\n[nginx]\npush_proxy = \"none\"\n")
	cmd, out := startActivated(t, cfg, ws, push)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("serve still runs on a unix push socket with push_proxy = \"none\":\n%s", out)
	}
	if err == nil || !strings.Contains(out.String(), "wants one TCP socket on each of 127.0.0.1:48775") || !strings.Contains(out.String(), "wsgate-push@1.socket drop-in") {
		t.Fatalf("exit %v:\n%s", err, out)
	}
}

func TestServeBindsSocketsWithoutActivation(t *testing.T) {
	dir := t.TempDir()
	runtime := filepath.Join(dir, "run")
	cfg := writeConfig(t, dir, `instances = 2
runtime_dir = "`+runtime+`"
[websocket]
welcome = "json"
`)
	cmd := exec.Command(wsgateBin, "serve", "-config", cfg, "-instance", "2")
	out := &wstest.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit: %v\n%s", err, out)
		}
		if _, err := os.Stat(filepath.Join(runtime, "ws-2.sock")); err == nil {
			t.Error("socket file left behind after a clean exit")
		}
	}()
	wsPath := filepath.Join(runtime, "ws-2.sock")
	waitFor(t, 10*time.Second, "ws-2.sock", func() bool { _, err := os.Stat(filepath.Join(runtime, "push-2.sock")); return err == nil })
	_, welcome := mustDial(t, "ws://wsgate/ws", wsPath)
	if !strings.Contains(welcome, `"push":["http://`) || !strings.Contains(welcome, "@127.0.0.1:48776/ws") {
		t.Fatalf("welcome %q", welcome)
	}
}

func TestServeRejectsBadFlags(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "instances = 2\nruntime_dir = \""+dir+"\"\n")
	for _, args := range [][]string{
		{"serve"},
		{"serve", "-config", cfg, "-instance", "3"},
		{"serve", "-config", cfg, "-instance", "0"},
		{"serve", "-config", filepath.Join(dir, "missing.toml"), "-instance", "1"},
		{"serve", "-config", cfg, "-instance", "1", "-log-level", "chatty"},
	} {
		out, err := exec.Command(wsgateBin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("%v: exit 0\n%s", args, out)
		}
	}
}
