package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// perf stat's per-thread lines are summed by process name, whatever the
// name holds, and threads that made no system call are left out.
func TestSyscallsPerOp(t *testing.T) {
	out := `# started on Sun Nov 29 17:01:38 2026

nginx-4502,3000,,raw_syscalls:sys_enter,50475,100.00,,
nginx-4503,1000,,raw_syscalls:sys_enter,50475,100.00,,
wsgate-4505,1500,,raw_syscalls:sys_enter,40000,100.00,,
idle-4509,<not counted>,,raw_syscalls:sys_enter,0,100.00,,
php-fpm-7-99,500,,raw_syscalls:sys_enter,1,100.00,,
`
	per, total := syscallsPerOp([]byte(out), 500)
	want := map[string]float64{"nginx": 8, "wsgate": 3, "php-fpm-7": 1}
	if len(per) != len(want) || total != 12 {
		t.Fatalf("got %v, %v in all; want %v, 12", per, total, want)
	}
	for comm, n := range want {
		if per[comm] != n {
			t.Fatalf("got %v; want %v", per, want)
		}
	}
	if per, total := syscallsPerOp([]byte(out), 0); len(per) != 0 || total != 0 {
		t.Fatalf("no operations: got %v, %v", per, total)
	}
}

// -perf records each phase with the real perf: a CPU profile that holds
// samples, and the server's system calls per operation (the server here
// is this test process, which serves nchanLike).
func TestPerfRecordsPhases(t *testing.T) {
	if _, err := exec.LookPath("perf"); err != nil {
		t.Skip("perf is not installed (apt-get install linux-perf)")
	}
	// Counting a tracepoint of another process takes root (tracefs,
	// perf_event_paranoid); what perf says without it is not ours to test.
	if out, err := exec.Command("perf", "stat", "-e", "raw_syscalls:sys_enter", "-p", "1", "--", "true").CombinedOutput(); err != nil {
		t.Skipf("perf may not count system calls here: %v\n%s", err, out)
	}
	o := nchanLike(t, false, ^uint64(0))
	o.perfDir, o.rootPID, o.label = t.TempDir(), os.Getpid(), "test"
	if _, err := run(o); err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	for _, phase := range []string{"handshake", "push"} {
		base := filepath.Join(o.perfDir, "test-"+phase)
		if st, err := os.Stat(base + ".data"); err != nil || st.Size() == 0 {
			t.Fatalf("%s.data: %v", base, err)
		}
		out, err := exec.Command("perf", "report", "-i", base+".data", "--stdio", "-g", "none", "--sort", "comm").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "of event 'cpu-clock") {
			t.Fatalf("perf report %s.data: %v\n%s", base, err, out)
		}
		calls, err := os.ReadFile(base + ".syscalls")
		if err != nil {
			t.Fatal(err)
		}
		// The server's process name, with its calls per operation.
		name := strings.TrimSpace(string(comm))
		var all float64
		for _, line := range strings.Split(string(calls), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "all" {
				all, _ = strconv.ParseFloat(f[1], 64)
			}
		}
		if !strings.Contains(string(calls), "per "+phase+" (") || !strings.Contains(string(calls), name+" ") || all <= 0 {
			t.Fatalf("%s.syscalls has no calls of %s:\n%s", base, name, calls)
		}
		if _, err := os.Stat(base + ".syscalls.raw"); err == nil {
			t.Fatalf("%s.syscalls.raw left behind", base)
		}
	}
}
