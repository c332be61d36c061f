package main

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

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
// is the process tree under root (0: the CPU profile only). Both perf
// processes start with their events off and are turned on together once
// both are ready, so the recording holds the phase from its start and
// neither holds the other's start. nil, nil when dir is empty.
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
	if root != 0 {
		pids := make([]string, 0, 8)
		for _, pid := range append(proctree.Descendants(root), root) {
			if pid != p.cpu.cmd.Process.Pid { // a server of wsbench's own (tests)
				pids = append(pids, strconv.Itoa(pid))
			}
		}
		p.calls, err = startPerf("stat", "-e", "raw_syscalls:sys_enter", "--per-thread", "-x", ",",
			"-p", strings.Join(pids, ","), "-o", p.base+".syscalls.raw")
		if err != nil {
			p.cpu.kill()
			return nil, err
		}
	}
	for _, r := range p.runs() {
		if err = r.command("enable"); err != nil {
			break
		}
	}
	if err != nil {
		var said []string
		for _, r := range p.runs() {
			if s := r.kill(); s != "" {
				said = append(said, s)
			}
		}
		os.Remove(p.base + ".syscalls.raw")
		return nil, fmt.Errorf("%w: %s", err, strings.Join(said, "; "))
	}
	return p, nil
}

func (p *profile) runs() []*perfRun {
	if p.calls == nil {
		return []*perfRun{p.cpu}
	}
	return []*perfRun{p.calls, p.cpu}
}

// stop ends the recording of a phase of ops operations and writes the
// system calls per operation. Both perf processes turn their events off
// first, so that neither counts the other's ending (perf record's can take
// seconds). nil does nothing.
func (p *profile) stop(ops int) error {
	if p == nil {
		return nil
	}
	raw := p.base + ".syscalls.raw"
	defer os.Remove(raw)
	var err error
	for _, r := range p.runs() {
		if err2 := r.command("disable"); err == nil {
			err = err2
		}
	}
	for _, r := range p.runs() {
		if err2 := r.stop(); err == nil {
			err = err2
		}
	}
	if err != nil || p.calls == nil {
		return err
	}
	out, err := os.ReadFile(raw)
	if err != nil {
		return err
	}
	per, total := syscallsPerOp(out, ops)
	var b strings.Builder
	fmt.Fprintf(&b, "server system calls per %s (%d operations):\n", p.phase, ops)
	split := make([]string, 0, len(per))
	for _, comm := range slices.Sorted(maps.Keys(per)) {
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
		if len(f) < 4 { // the header, blank lines
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

// perfRun is one perf process, started with its events off, driven
// through its control pipe and stopped by SIGINT, on which it writes what
// it has.
type perfRun struct {
	cmd    *exec.Cmd
	ctl    *os.File // perf's control pipe ("enable", "disable")
	ack    *os.File // its answers
	acks   *bufio.Reader
	stderr strings.Builder
}

// ackWait bounds the wait for perf's answer to a command.
const ackWait = 30 * time.Second

// startPerf starts perf with args (a record or stat command without its
// control options) and its events off.
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
	r := &perfRun{cmd: exec.Command("perf", args...), ctl: ctlW, ack: ackR, acks: bufio.NewReader(ackR)}
	r.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	r.cmd.Stderr = &r.stderr
	// A wsbench that dies leaves no perf recording every CPU behind.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	err = r.cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		ctlW.Close()
		ackR.Close()
		return nil, fmt.Errorf("perf %s: %w", args[0], err)
	}
	return r, nil
}

// command sends perf a control command and waits for its answer.
func (r *perfRun) command(cmd string) error {
	r.ack.SetReadDeadline(time.Now().Add(ackWait))
	_, err := r.ctl.WriteString(cmd + "\n")
	var answer string
	if err == nil {
		answer, err = r.acks.ReadString('\n')
	}
	// perf writes "ack\n" with its C string's NUL, which the next read
	// finds first.
	if err == nil && strings.Trim(answer, "\x00\n") != "ack" {
		err = fmt.Errorf("answered %q", answer)
	}
	if err != nil {
		return fmt.Errorf("perf %s: %s: %w", r.cmd.Args[1], cmd, err)
	}
	return nil
}

// kill ends a perf whose recording is not wanted, and returns what it
// said (why it did not answer, say).
func (r *perfRun) kill() string {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.ctl.Close()
	r.ack.Close()
	return strings.TrimSpace(r.stderr.String())
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
