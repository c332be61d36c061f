package sidecar

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

func TestListenersBindWithoutActivation(t *testing.T) {
	t.Setenv("LISTEN_PID", "") // no activation
	cfg := config.Default()
	cfg.RuntimeDir = filepath.Join(t.TempDir(), "run")
	ws, push, activated, err := Listeners(&cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	defer push.Close()
	if activated {
		t.Fatal("reported activation without LISTEN_FDS")
	}
	for _, p := range []string{cfg.WSSocket(2), cfg.PushSocket(2)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != socketMode {
			t.Errorf("%s: mode %v, want a socket with %o", p, fi.Mode(), socketMode)
		}
	}
	if ws.Addr().String() != cfg.WSSocket(2) || push.Addr().String() != cfg.PushSocket(2) {
		t.Errorf("ws on %s, push on %s", ws.Addr(), push.Addr())
	}
}

func TestBindUnixReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	old, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close() // leaves the file behind, as a crashed process does
	l, err := BindUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
}

func TestBindUnixRefusesLiveSocketAndOtherFiles(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.sock")
	l, err := net.Listen("unix", live)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := BindUnix(live); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("bound over a live socket: %v", err)
	}
	// Nor over one whose backlog is full (a sidecar restarting under
	// load), which a connection attempt finds busy, not refused.
	full := filepath.Join(dir, "full.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: full}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	for range 8 { // until the backlog is full
		c, err := net.Dial("unix", full)
		if err != nil {
			break
		}
		defer c.Close()
	}
	before, _ := os.Stat(full)
	if l, err := BindUnix(full); err == nil || !strings.Contains(err.Error(), "in use") {
		if l != nil {
			l.Close()
		}
		t.Errorf("bound over a live socket with a full backlog: %v", err)
	}
	if after, err := os.Stat(full); err != nil || !os.SameFile(before, after) {
		t.Errorf("the live socket's file was replaced: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep me"), 0o644)
	if _, err := BindUnix(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("bound over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("regular file was touched")
	}
}

func TestPickActivatedListeners(t *testing.T) {
	listen := func() net.Listener {
		l, err := net.Listen("unix", filepath.Join(t.TempDir(), "x.sock"))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ws, push := listen(), listen()
	gotWS, gotPush, err := pick(map[string][]net.Listener{"ws": {ws}, "push": {push}})
	if err != nil || gotWS != ws || gotPush != push {
		t.Fatalf("pick: %v", err)
	}
	for name, named := range map[string]map[string][]net.Listener{
		"missing push": {"ws": {listen()}},
		"unnamed":      {"LISTEN_FD_3": {listen()}, "LISTEN_FD_4": {listen()}},
		"two ws":       {"ws": {listen(), listen()}, "push": {listen()}},
		"extra socket": {"ws": {listen()}, "push": {listen()}, "other": {listen()}},
	} {
		if _, _, err := pick(named); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// flakyListener fails its first fails Accepts with a temporary error.
type flakyListener struct {
	net.Listener
	fails int
	calls int
}

type temporaryError struct{}

func (temporaryError) Error() string   { return "accept4: too many open files" }
func (temporaryError) Timeout() bool   { return false }
func (temporaryError) Temporary() bool { return true }

func (l *flakyListener) Accept() (net.Conn, error) {
	l.calls++
	if l.calls <= l.fails {
		return nil, temporaryError{}
	}
	return l.Listener.Accept()
}

// accept, which both listeners accept with, retries a temporary error (out
// of file descriptors) with a logged warning instead of stopping; any other
// error is returned.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	ts := newTestServer(t, nil)
	l, err := net.Listen("unix", t.TempDir()+"/flaky.sock")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyListener{Listener: l, fails: 2}
	go func() {
		if c, err := net.Dial("unix", l.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := ts.accept(flaky)
	if err != nil || flaky.calls != 3 {
		t.Fatalf("accept after 2 temporary errors: %v, %d calls", err, flaky.calls)
	}
	c.Close()
	if n := strings.Count(ts.log.String(), "too many open files"); n != 2 {
		t.Fatalf("%d warnings logged, want 2:\n%s", n, ts.log)
	}
	l.Close()
	if _, err := ts.accept(flaky); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on a closed listener: %v", err)
	}
}
