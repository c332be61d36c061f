// Package integration tests wsgate as it runs: the real binary, real nginx,
// real unix sockets and real socket activation. Tests that need nginx skip
// with a message when it is not installed; CI installs it, so CI never skips.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// wsgateBin is the wsgate binary built for this test run.
var wsgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wsgate-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wsgateBin = filepath.Join(dir, "wsgate")
	build := exec.Command("go", "build", "-race", "-o", wsgateBin, "../cmd/wsgate")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building wsgate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
