package up

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A sidecar that could not be started does not hold up stopping the ones
// that were: up once waited for it forever, past Ctrl-C.
func TestStopAfterFailedStart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ok := &child{name: "ok", log: log, cmd: func() *exec.Cmd { return exec.Command("sleep", "60") }, restart: true}
	bad := &child{name: "bad", log: log, cmd: func() *exec.Cmd { return exec.Command("/nonexistent/wsgate-test") }, restart: true}
	if err := ok.start(); err != nil {
		t.Fatal(err)
	}
	if err := bad.start(); err == nil {
		t.Fatal("a missing binary started")
	}
	done := make(chan struct{})
	go func() {
		stopAll([]*child{ok, bad}, time.Second)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("stopAll did not return")
	}
	select {
	case <-ok.exited:
	default:
		t.Fatal("the started child was not stopped")
	}
}

// The state and runtime directories get read and search permission for
// everyone, and keep whatever else they had: a shared /tmp stays 1777.
func TestOpenToOthers(t *testing.T) {
	for _, c := range []struct{ before, after os.FileMode }{
		{0o700, 0o755},
		{0o777 | os.ModeSticky, 0o777 | os.ModeSticky},
		{0o770 | os.ModeSetgid, 0o775 | os.ModeSetgid},
		{0o755, 0o755},
	} {
		d := t.TempDir()
		if err := os.Chmod(d, c.before); err != nil {
			t.Fatal(err)
		}
		if err := openToOthers(d); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSticky | os.ModeSetgid); got != c.after {
			t.Errorf("%v: %v, want %v", c.before, got, c.after)
		}
	}
}

// stop must never signal by a pid the child no longer owns: once the child
// has been reaped its pid (and so its process group id) may belong to
// another process. Forces the reuse with ns_last_pid, in a pid namespace
// of its own (root only), so as not to steer the machine's other pids.
func TestStopDoesNotSignalReusedPID(t *testing.T) {
	const inner = "WSGATE_TEST_PIDNS"
	if os.Getenv(inner) == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root: a pid namespace and ns_last_pid")
		}
		cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc",
			os.Args[0], "-test.run=^TestStopDoesNotSignalReusedPID$", "-test.v")
		cmd.Env = append(os.Environ(), inner+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--- PASS") {
			t.Fatalf("in a pid namespace: %v\n%s", err, out)
		}
		return
	}
	const lastPid = "/proc/sys/kernel/ns_last_pid"
	if err := os.WriteFile(lastPid, []byte("1000"), 0); err != nil {
		t.Fatal("cannot set ns_last_pid:", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Like nginx in up: not restarted; it dies on its own (a crash), and up
	// stops it later, after stopping the sidecars.
	c := &child{name: "nginx", log: log, cmd: func() *exec.Cmd { return exec.Command("true") }}
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	pid := c.proc.Pid

	// Another process group leader now gets that pid.
	var victim *exec.Cmd
	for try := 0; try < 50 && victim == nil; try++ {
		os.WriteFile(lastPid, []byte(fmt.Sprint(pid-1)), 0)
		v := exec.Command("sleep", "60")
		v.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := v.Start(); err != nil {
			t.Fatal(err)
		}
		if v.Process.Pid == pid {
			victim = v
		} else {
			v.Process.Kill()
			v.Wait()
		}
	}
	if victim == nil {
		t.Skip("could not get the pid reused")
	}
	defer victim.Process.Kill()
	waited := make(chan error, 1)
	go func() { waited <- victim.Wait() }()

	c.stop(time.Second)
	select {
	case err := <-waited:
		t.Fatalf("stopping the exited child killed pid %d's new owner: %v", pid, err)
	case <-time.After(300 * time.Millisecond):
	}
}

// What a stopped child leaves in its process group (nginx workers whose
// master died) is killed with it.
func TestStopKillsGroupLeftovers(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pidFile := t.TempDir() + "/worker.pid"
	c := &child{name: "nginx", log: log, cmd: func() *exec.Cmd {
		return exec.Command("sh", "-c", `sleep 60 & echo $! >`+pidFile+`; exec sleep 61`)
	}}
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	var worker int
	for i := 0; i < 200 && worker == 0; i++ {
		b, _ := os.ReadFile(pidFile)
		fmt.Sscan(string(b), &worker)
		time.Sleep(10 * time.Millisecond)
	}
	if worker == 0 {
		t.Fatal("no worker pid")
	}
	c.stop(time.Second)
	// The worker was reparented to init (or a subreaper), which reaps it.
	for i := 0; i < 200; i++ {
		if syscall.Kill(worker, 0) != nil {
			return
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", worker))
		if len(b) > 0 && bytesContainsState(b, 'Z') {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the child's leftover %d survived stop", worker)
}

func bytesContainsState(stat []byte, st byte) bool {
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] == st
		}
	}
	return false
}
