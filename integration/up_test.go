package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/proctree"
	"github.com/wsgate/wsgate/internal/wstest"
)

// gateway is a running `wsgate up`: real nginx and real sidecars.
type gateway struct {
	cmd      *exec.Cmd
	out      *wstest.Output
	dir      string // state dir
	clientWS string // ws://host:port/ws
	portBase int
	stopped  bool
}

// needNginx skips the test when nginx is not installed; CI installs it.
func needNginx(t *testing.T) {
	t.Helper()
	for _, p := range []string{"nginx", "/usr/sbin/nginx"} {
		if _, err := exec.LookPath(p); err == nil {
			return
		}
	}
	t.Skip("nginx is not installed (apt-get install nginx); .ci/run installs it")
}

// startUp runs `wsgate up` with a config built from the given TOML lines
// plus free loopback ports, and waits until it is serving. host is
// "127.0.0.1" or "::1".
func startUp(t *testing.T, instances int, host string, extra string) *gateway {
	t.Helper()
	return startUpAs(t, instances, host, extra, nil)
}

// startUpAs is startUp with the command line prefixed by as (e.g. setpriv
// to run as another user); with as set, the test's directory is writable by
// everyone and up runs a copy of the binary placed in it.
func startUpAs(t *testing.T, instances int, host string, extra string, as []string) *gateway {
	t.Helper()
	return launch(t, instances, host, []string{host}, extra, as)
}

// launch is startUpAs with the push ports on every one of pushHosts.
func launch(t *testing.T, instances int, host string, pushHosts []string, extra string, as []string) *gateway {
	t.Helper()
	needNginx(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // nginx workers (www-data when root) reach the sockets
	os.Chmod(filepath.Dir(dir), 0o755)
	base := wstest.FreePorts(t, host, instances+1, pushHosts...)
	client := net.JoinHostPort(host, strconv.Itoa(base+instances))
	cfg := writeConfig(t, dir, fmt.Sprintf(`instances = %d
runtime_dir = %q
listen = [%q]
shutdown_timeout = "5s"
%s
[push]
listen = [%s]
port_base = %d
max_body = "64KiB"
max_batch = "256KiB"
%s
[nginx]
worker_processes = 2
worker_connections = 4096
%s`, instances, filepath.Join(dir, "run"), client, topLevel(extra), tomlStrings(pushHosts), base, tables(extra), nginxKeys(extra)))
	g := &gateway{dir: dir, clientWS: "ws://" + client + "/ws", portBase: base, out: &wstest.Output{}}
	args := []string{wsgateBin, "up", "-config", cfg, "-state", filepath.Join(dir, "state")}
	if as != nil {
		os.Chmod(dir, 0o777)
		bin, err := os.ReadFile(wsgateBin)
		if err != nil {
			t.Fatal(err)
		}
		args[0] = filepath.Join(dir, "wsgate")
		if err := os.WriteFile(args[0], bin, 0o755); err != nil {
			t.Fatal(err)
		}
		args = append(as, args...)
	}
	g.cmd = exec.Command(args[0], args[1:]...)
	g.cmd.Stdout, g.cmd.Stderr = g.out, g.out
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !g.stopped {
			g.cmd.Process.Signal(syscall.SIGTERM)
			g.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("wsgate up output:\n%s", g.out)
		}
	})
	waitFor(t, 30*time.Second, "wsgate up", func() bool {
		if g.cmd.ProcessState != nil {
			t.Fatalf("wsgate up exited:\n%s", g.out)
		}
		return strings.Contains(g.out.String(), "wsgate is up")
	})
	return g
}

// tomlStrings is ss as the items of a TOML array of strings.
func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// topLevel and tables split extra TOML into top-level keys and [tables],
// so tests can add both.
func topLevel(extra string) string {
	if i := strings.Index(extra, "["); i >= 0 {
		return extra[:i]
	}
	return extra
}

func tables(extra string) string {
	t, _, _ := strings.Cut(extra[len(topLevel(extra)):], "[nginx]\n")
	return t
}

// nginxKeys are the keys of extra's [nginx] table, its last, which join
// the ones startUp sets there.
func nginxKeys(extra string) string {
	_, keys, _ := strings.Cut(extra, "[nginx]\n")
	return keys
}

// stop sends SIGTERM to up and waits for it to exit.
func (g *gateway) stop(t *testing.T) {
	t.Helper()
	g.stopped = true
	g.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- g.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wsgate up exit: %v\n%s", err, g.out)
		}
	case <-time.After(60 * time.Second):
		g.cmd.Process.Kill()
		t.Fatal("wsgate up did not exit after SIGTERM")
	}
}

// stopExpecting1012 stops up while every conn waits for its close, and
// fails unless each got code 1012 (service restart).
func (g *gateway) stopExpecting1012(t *testing.T, conns []*websocket.Conn) {
	t.Helper()
	errs := make(chan error, len(conns))
	for _, c := range conns {
		go func() {
			code, err := wstest.CloseCode(c)
			if err == nil && code != websocket.CloseServiceRestart {
				err = fmt.Errorf("close %d, want 1012", code)
			}
			errs <- err
		}()
	}
	g.stop(t)
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// pids lists up's descendants, pid to command line: its sidecars, nginx
// master and nginx workers.
func (g *gateway) pids() map[int]string {
	out := map[int]string{}
	for _, pid := range proctree.Descendants(g.cmd.Process.Pid) {
		out[pid] = proctree.Cmdline(pid)
	}
	return out
}

// alive reports which of pids still run (zombies excluded).
func alive(pids map[int]string) []string {
	var out []string
	for pid, line := range pids {
		if proctree.Alive(pid) {
			out = append(out, fmt.Sprintf("%d %s", pid, line))
		}
	}
	return out
}

// sidecarPID returns the pid of the running sidecar instance i.
func (g *gateway) sidecarPID(t *testing.T, i int) int {
	t.Helper()
	for pid, line := range g.pids() {
		if strings.Contains(line, " serve ") && strings.HasSuffix(line, "-instance "+strconv.Itoa(i)) {
			return pid
		}
	}
	t.Fatalf("no sidecar %d running", i)
	return 0
}
