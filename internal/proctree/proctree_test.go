package proctree

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A shell with a sleeping child: both are descendants of this test, the
// child is found at depth two, and neither is alive once killed.
func TestDescendants(t *testing.T) {
	sh := exec.Command("/bin/sh", "-c", "sleep 30 & wait")
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	var sleep int
	for deadline := time.Now().Add(10 * time.Second); sleep == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shell's child never appeared")
		}
		for _, pid := range Descendants(os.Getpid()) {
			if strings.HasPrefix(Cmdline(pid), "sleep 30") {
				sleep = pid
			}
		}
	}
	if d := Descendants(os.Getpid()); !slices.Contains(d, sh.Process.Pid) {
		t.Fatalf("descendants %v lack the shell %d", d, sh.Process.Pid)
	}
	if !Alive(sleep) {
		t.Fatal("running child not alive")
	}
	syscall.Kill(sleep, syscall.SIGKILL)
	sh.Process.Kill()
	sh.Wait()
	for deadline := time.Now().Add(10 * time.Second); Alive(sleep); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("killed child still alive")
		}
	}
}

// CPU names this test binary and counts the time it spins on the CPU.
func TestCPU(t *testing.T) {
	comm, before, ok := CPU(os.Getpid())
	if !ok || comm != "proctree.test" {
		t.Fatalf("CPU(self) = %q, %v, %v", comm, before, ok)
	}
	x := 0
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); x++ {
		if _, used, _ := CPU(os.Getpid()); used > before {
			return
		}
	}
	t.Fatalf("CPU time stayed at %v after %d spins", before, x)
}
