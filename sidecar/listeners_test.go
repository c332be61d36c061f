package sidecar

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
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
	defer push[0].Close()
	if activated || len(push) != 1 {
		t.Fatalf("activated %v, %d push sockets: want no activation and one socket", activated, len(push))
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
	if ws.Addr().String() != cfg.WSSocket(2) || push[0].Addr().String() != cfg.PushSocket(2) {
		t.Errorf("ws on %s, push on %s", ws.Addr(), push[0].Addr())
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
	if err != nil || gotWS != ws || len(gotPush) != 1 || gotPush[0] != push {
		t.Fatalf("pick: %v", err)
	}
	// One push socket per push.listen address (push_proxy = "none").
	push2 := listen()
	if _, gotPush, err = pick(map[string][]net.Listener{"ws": {ws}, "push": {push, push2}}); err != nil || len(gotPush) != 2 {
		t.Fatalf("pick with two push sockets: %v", err)
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

// With nginx.push_proxy = "none" and no activation, a sidecar binds its
// push port on each push.listen address, each in its own family (so that
// "0.0.0.0" and "::" go together, as in nginx).
func TestListenersDirectPush(t *testing.T) {
	needIPv6(t)
	t.Setenv("LISTEN_PID", "")
	cfg := config.Default()
	cfg.RuntimeDir = filepath.Join(t.TempDir(), "run")
	cfg.Nginx.PushProxy = "none"
	cfg.Push.PortBase = wstest.FreePorts(t, "127.0.0.1", 2, "::1")
	cfg.Push.Listen = []string{"0.0.0.0", "::"}
	ws, push, activated, err := Listeners(&cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, l := range push {
		defer l.Close()
	}
	if activated || len(push) != 2 {
		t.Fatalf("activated %v, %d push sockets: want no activation and two", activated, len(push))
	}
	if _, err := os.Stat(cfg.PushSocket(2)); err == nil {
		t.Errorf("bound %s too", cfg.PushSocket(2))
	}
	port := strconv.Itoa(cfg.PushPort(2))
	for i, want := range []string{"0.0.0.0:" + port, "[::]:" + port} {
		if got := push[i].Addr().String(); got != want {
			t.Errorf("push socket %d on %s, want %s", i, got, want)
		}
	}
	for i, a := range []string{"127.0.0.1", "::1"} {
		c, err := net.Dial("tcp", net.JoinHostPort(a, port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got, err := push[i].Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got.RemoteAddr().String() != c.LocalAddr().String() {
			t.Errorf("accepted %s, dialled from %s", got.RemoteAddr(), c.LocalAddr())
		}
		got.Close()
	}
	// A port taken is an error that closes what was bound.
	taken, err := net.Listen("tcp6", "[::1]:"+strconv.Itoa(cfg.PushPort(1)))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg.Push.Listen = []string{"127.0.0.1", "::1"}
	if _, _, _, err := Listeners(&cfg, 1); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("a taken push port: %v", err)
	}
	if l, err := net.Listen("tcp4", "127.0.0.1:"+strconv.Itoa(cfg.PushPort(1))); err != nil {
		t.Errorf("127.0.0.1 left bound after the error: %v", err)
	} else {
		l.Close()
	}
	if l, err := BindUnix(cfg.WSSocket(1)); err != nil {
		t.Errorf("ws socket left bound after the error: %v", err)
	} else {
		l.Close()
	}
}

// needIPv6 skips t on a machine without ::1.
func needIPv6(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no ::1 on this machine: %v", err)
	}
	l.Close()
}

// Activated push sockets must be what push_proxy wants: one unix socket
// for nginx to proxy to, or with "none" one TCP socket on each push.listen
// address at the instance's push port, which the push URLs name.
// Anything else would leave push URLs unanswered, so the sidecar refuses
// to start.
func TestCheckActivatedPush(t *testing.T) {
	needIPv6(t)
	cfg := config.Default()
	cfg.Push.PortBase = wstest.FreePorts(t, "127.0.0.1", 2, "::1")
	cfg.Push.Listen = []string{"127.0.0.1", "::1"}
	unixL, err := net.Listen("unix", filepath.Join(t.TempDir(), "push.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer unixL.Close()
	tcp := func(a string, port int) net.Listener {
		l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	p := cfg.PushPort(2)
	v4, v6, otherPort, otherAddr := tcp("127.0.0.1", p), tcp("::1", p), tcp("127.0.0.1", cfg.PushPort(1)), tcp("127.0.0.2", p)
	wants := fmt.Sprintf("wants one TCP socket on each of 127.0.0.1:%d, [::1]:%d", p, p)
	for _, tc := range []struct {
		proxy  string
		pushes []net.Listener
		err    string
	}{
		{"http", []net.Listener{unixL}, ""},
		{"stream", []net.Listener{unixL}, ""},
		{"none", []net.Listener{v4, v6}, ""},
		{"none", []net.Listener{v6, v4}, ""},
		{"http", []net.Listener{v4}, "drop-in left from push_proxy = \"none\""},
		{"stream", []net.Listener{unixL, unixL}, "wants one unix socket"},
		{"none", []net.Listener{unixL}, "wsgate-push@2.socket drop-in"},
		{"none", []net.Listener{v4, otherPort}, wants},
		{"none", []net.Listener{v4}, wants},
		{"none", []net.Listener{otherAddr, v6}, wants},
		{"none", []net.Listener{v4, v6, v4}, wants},
		{"none", []net.Listener{v4, v4}, wants},
	} {
		cfg.Nginx.PushProxy = tc.proxy
		err := checkPush(&cfg, 2, tc.pushes)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("push_proxy %q, %d sockets: %v, want %q", tc.proxy, len(tc.pushes), err, tc.err)
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
