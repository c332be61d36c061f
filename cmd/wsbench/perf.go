package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/wsgate/wsgate/internal/proctree"
)

// profile is what -perf records of one phase of a run, into
// dir/<label>-<phase>.*:
//
//   - .data: a CPU profile (perf record) of every CPU: the server, the load
//     generator and the kernel's work for them (softirqs, idle) all show,
//     so it says where the machine's time went, not only the server's;
//   - .syscalls: the server's system calls per operation by process name,
//     counted exactly (perf stat on the raw_syscalls:sys_enter tracepoint
//     of every thread of the server's processes).
type profile struct {
	base  string // dir/<label>-<phase>
	phase string
	cpu   *perfRun
	calls *perfRun // nil without the server's process tree
}

// startProfile starts recording phase of a run labeled label; the server
// is the process tree under root (0: the CPU profile only). It returns
// once perf counts, so the recording holds the phase from its start. nil,
// nil when dir is empty.
func startProfile(dir, label, phase string, root int) (*profile, error) {
	if dir == "" {
		return nil, nil
	}
	p := &profile{base: filepath.Join(dir, label+"-"+phase), phase: phase}
	// It replaces an earlier one, which perf would keep as .old.
	for _, ext := range []string{".data", ".syscalls"} {
		if err := os.Remove(p.base + ext); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	var err error
	// cpu-clock: a software event, which works without a PMU (virtual
	// machines); every 1.001 ms, off the beat of timers.
	if p.cpu, err = startPerf("record", "-a", "-g", "-e", "cpu-clock/period=1001001/", "-q", "-o", p.base+".data"); err != nil {
		return nil, err
	}
	if root == 0 {
		return p, nil
	}
	pids := make([]string, 0, 8)
	for _, pid := range append(proctree.Descendants(root), root) {
		if pid != p.cpu.cmd.Process.Pid { // a server of wsbench's own (tests)
			pids = append(pids, strconv.Itoa(pid))
		}
	}
	p.calls, err = startPerf("stat", "-e", "raw_syscalls:sys_enter", "--per-thread", "-x", ",",
		"-p", strings.Join(pids, ","), "-o", p.base+".syscalls.raw")
	if err != nil {
		p.cpu.stop()
		return nil, err
	}
	return p, nil
}

// stop ends the recording of a phase of ops operations and writes the
// system calls per operation. nil does nothing.
func (p *profile) stop(ops int) error {
	if p == nil {
		return nil
	}
	err := p.cpu.stop()
	if p.calls == nil {
		return err
	}
	if err2 := p.calls.stop(); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	raw := p.base + ".syscalls.raw"
	out, err := os.ReadFile(raw)
	if err != nil {
		return err
	}
	os.Remove(raw)
	per, total := syscallsPerOp(out, ops)
	var b strings.Builder
	fmt.Fprintf(&b, "server system calls per %s (%d operations):\n", p.phase, ops)
	split := make([]string, 0, len(per))
	for _, comm := range sortedKeys(per) {
		fmt.Fprintf(&b, "  %-8s %6.1f\n", comm, per[comm])
		split = append(split, fmt.Sprintf("%s %.1f", comm, per[comm]))
	}
	fmt.Fprintf(&b, "  %-8s %6.1f\n", "all", total)
	progress("profile: %s.data; server system calls per %s %.1f (%s)", p.base, p.phase, total, strings.Join(split, ", "))
	return os.WriteFile(p.base+".syscalls", []byte(b.String()), 0o644)
}

// syscallsPerOp sums perf stat's per-thread counts (-x, lines
// "comm-tid,count,,event,...") by process name and divides them by ops.
func syscallsPerOp(out []byte, ops int) (per map[string]float64, total float64) {
	per = map[string]float64{}
	if ops <= 0 {
		return per, 0
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 4 || strings.HasPrefix(line, "#") {
			continue
		}
		dash := strings.LastIndexByte(f[0], '-')
		n, err := strconv.ParseFloat(f[1], 64)
		if dash <= 0 || err != nil { // "<not counted>": a thread that made none
			continue
		}
		per[f[0][:dash]] += n / float64(ops)
		total += n / float64(ops)
	}
	return per, total
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// perfRun is one perf process, started with its events off and stopped
// by SIGINT, on which it writes what it has.
type perfRun struct {
	cmd    *exec.Cmd
	ctl    *os.File // perf's control pipe ("enable")
	ack    *os.File // its answers
	stderr strings.Builder
}

// startPerf runs perf with args (a record or stat command without its
// control options) and returns once perf has acknowledged turning its
// events on.
func startPerf(args ...string) (*perfRun, error) {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	// -D -1: events off until "enable", on fd 3; answers on fd 4.
	args = append(args[:1:1], append([]string{"-D", "-1", "--control", "fd:3,4"}, args[1:]...)...)
	r := &perfRun{cmd: exec.Command("perf", args...), ctl: ctlW, ack: ackR}
	r.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	r.cmd.Stderr = &r.stderr
	err = r.cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		ctlW.Close()
		ackR.Close()
		return nil, fmt.Errorf("perf %s: %w", args[0], err)
	}
	if _, err := ctlW.WriteString("enable\n"); err != nil {
		return nil, r.fail(err)
	}
	answer, err := bufio.NewReader(ackR).ReadString('\n')
	if err == nil && strings.TrimSpace(answer) != "ack" {
		err = fmt.Errorf("answered %q to enable", answer)
	}
	if err != nil {
		return nil, r.fail(err)
	}
	return r, nil
}

// fail ends a perf that did not start and says why, with perf's own
// words (perf_event_paranoid, say).
func (r *perfRun) fail(err error) error {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.ctl.Close()
	r.ack.Close()
	return fmt.Errorf("perf %s: %w: %s", r.cmd.Args[1], err, strings.TrimSpace(r.stderr.String()))
}

// stop ends perf and waits until it has written what it recorded.
func (r *perfRun) stop() error {
	defer r.ctl.Close()
	defer r.ack.Close()
	r.cmd.Process.Signal(syscall.SIGINT)
	err := r.cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		// perf writes its data on SIGINT and then exits by it, or with
		// 128+SIGINT.
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && (ws.Signaled() && ws.Signal() == syscall.SIGINT || ws.ExitStatus() == 128+int(syscall.SIGINT)) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("perf %s: %w: %s", r.cmd.Args[1], err, strings.TrimSpace(r.stderr.String()))
	}
	return nil
}
