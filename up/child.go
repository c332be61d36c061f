package up

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Restart backoff for a child that keeps dying.
const (
	firstBackoff = 50 * time.Millisecond
	maxBackoff   = 5 * time.Second
	stableAfter  = 10 * time.Second // a run this long resets the backoff
)

// child is one supervised process: a sidecar, restarted when it dies, or
// nginx.
type child struct {
	name       string
	log        *slog.Logger
	cmd        func() *exec.Cmd
	restart    bool
	stopSignal syscall.Signal // default SIGTERM
	files      []*os.File     // sockets held for the child, closed by closeFiles
	paths      []string       // their paths, removed by closeFiles

	exited  chan struct{} // closed when the child has exited for good
	exitErr error         // set before exited is closed

	mu       sync.Mutex // guards the fields below
	proc     *os.Process
	stopping bool
	stopCh   chan struct{} // closed by stop: cuts a restart backoff short
}

// start runs the child and supervises it in the background. A child that
// could not start counts as exited, so that stop returns at once.
func (c *child) start() error {
	c.exited = make(chan struct{})
	c.stopCh = make(chan struct{})
	c.mu.Lock()
	cmd, err := c.spawnLocked()
	c.mu.Unlock()
	if err != nil {
		c.exitErr = err
		close(c.exited)
		return err
	}
	go c.supervise(cmd)
	return nil
}

func (c *child) spawnLocked() (*exec.Cmd, error) {
	cmd := c.cmd()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so the terminal's Ctrl-C reaches only up,
		// which stops the children in order.
		Setpgid: true,
		// Should up itself be killed, the child is told to stop.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c.proc = cmd.Process
	c.log.Debug("started", "child", c.name, "pid", cmd.Process.Pid)
	return cmd, nil
}

// supervise waits for the child and, for a sidecar, restarts it on the same
// sockets with backoff until stop is called.
func (c *child) supervise(cmd *exec.Cmd) {
	backoff := firstBackoff
	for {
		started := time.Now()
		reapGroup(cmd.Process.Pid)
		err := cmd.Wait()
		c.mu.Lock()
		stopping := c.stopping
		c.mu.Unlock()
		if stopping || !c.restart {
			c.exitErr = err
			close(c.exited)
			return
		}
		if time.Since(started) > stableAfter {
			backoff = firstBackoff
		}
		c.log.Warn("exited; restarting on the same sockets", "child", c.name, "error", errText(err), "in", backoff.String())
		for {
			select {
			case <-c.stopCh:
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			c.mu.Lock()
			if c.stopping {
				c.mu.Unlock()
				c.exitErr = err
				close(c.exited)
				return
			}
			cmd, err = c.spawnLocked()
			c.mu.Unlock()
			if err == nil {
				break
			}
			c.log.Error("restart failed", "child", c.name, "error", err)
		}
	}
}

// signal sends sig to the running child, if any.
func (c *child) signal(sig os.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		c.proc.Signal(sig)
	}
}

// stop asks the child to exit and kills it after timeout.
func (c *child) stop(timeout time.Duration) {
	c.mu.Lock()
	if !c.stopping {
		c.stopping = true
		close(c.stopCh)
	}
	c.mu.Unlock()
	sig := c.stopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	c.signal(sig)
	select {
	case <-c.exited:
	case <-time.After(timeout):
		c.log.Warn("did not stop in time; killing", "child", c.name)
		c.signal(syscall.SIGKILL)
		<-c.exited
	}
}

// reapGroup waits until the child pid has exited without reaping it, then
// kills whatever it left in its process group (nginx workers whose master
// was killed). Until Wait reaps it, the zombie keeps its pid and so its
// process group id: neither can have been reused by another process, as
// they can once it is reaped.
func reapGroup(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// pid is the child's process id, 0 before it started.
func (c *child) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return 0
	}
	return c.proc.Pid
}

// closeFiles closes the sockets held for the child and removes their files.
func (c *child) closeFiles() {
	for _, f := range c.files {
		f.Close()
	}
	for _, p := range c.paths {
		os.Remove(p)
	}
}

func errText(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ProcessState.String()
	}
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
