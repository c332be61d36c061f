package up

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
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
