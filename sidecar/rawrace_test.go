//go:build race

package sidecar

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The race detector sees what raw reads write and raw writes read
// (rawrace.go): a copy of this test binary that reads a buffer while a
// raw read fills it, and writes one while a raw write sends it, is
// reported twice.
func TestRaceDetectorSeesRawIO(t *testing.T) {
	if os.Getenv("WSGATE_RACY") == "1" {
		racyRawIO(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestRaceDetectorSeesRawIO$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WSGATE_RACY=1", "GORACE=halt_on_error=0")
	out, err := cmd.CombinedOutput()
	if err == nil || strings.Count(string(out), "WARNING: DATA RACE") != 2 ||
		!strings.Contains(string(out), "runtime.racewriterange()") || !strings.Contains(string(out), "runtime.racereadrange()") {
		t.Fatalf("want two data races, seen by rawRead's and rawWritev's annotations; got %v:\n%s", err, out)
	}
}

// racyRawIO races on purpose; only the copy TestRaceDetectorSeesRawIO
// starts runs it.
func racyRawIO(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	in, out := make([]byte, 8), []byte("racy")
	if _, errno := rawWritev(uintptr(fds[1]), []byte("12345678")); errno != 0 {
		t.Fatal(errno)
	}
	done := make(chan struct{})
	go func() {
		rawRead(uintptr(fds[0]), in)
		rawWritev(uintptr(fds[1]), out)
		close(done)
	}()
	_ = in[0]    // read while rawRead writes it
	out[0] = 'R' // written while rawWritev reads it
	<-done
}
