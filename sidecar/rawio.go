package sidecar

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The sidecar's sockets are non-blocking, so reading, writing and epoll
// calls that do not wait never block: the hot paths make them as raw
// system calls, which the Go runtime is not told of. That spares, per
// call, entering and leaving a system call in the scheduler, which in a
// sidecar that idles between bursts often wakes the sysmon thread with a
// futex: measured side by side, 17-19% less sidecar CPU per push (README,
// "Performance"). Waiting for a socket stays with the runtime's poller
// through syscall.RawConn, and with it the deadlines. Accept and
// connect still go through package net.

// rawRead is read(2) of fd into p.
func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	if len(p) == 0 {
		return 0, 0
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e == 0 {
		raceWritten(p[:n])
	}
	return int(n), e
}

// rawWritev is writev(2) to fd of the first four non-empty bufs.
func rawWritev(fd uintptr, bufs ...[]byte) (int, syscall.Errno) {
	var iov [4]unix.Iovec
	n := 0
	for _, b := range bufs {
		if len(b) > 0 && n < len(iov) {
			raceRead(b)
			iov[n].Base = &b[0]
			iov[n].SetLen(len(b))
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	w, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	return int(w), e
}

// rawOp is one read or write through a syscall.RawConn: its arguments,
// its results and the funcs handed to the RawConn, pooled so that the
// hot paths allocate nothing per call.
type rawOp struct {
	bufs                      [][]byte // read: bufs[0] is the buffer; write: what is left
	spare                     [4][]byte
	head                      [10]byte // a frame header, for tryWrite
	n                         int
	errno                     syscall.Errno
	read, readNow, write, try func(fd uintptr) bool
}

var rawOps = sync.Pool{New: func() any {
	op := new(rawOp)
	op.read, op.readNow, op.write, op.try = op.readFD, op.readNowFD, op.writeFD, op.tryFD
	return op
}}

func getRawOp(bufs ...[]byte) *rawOp {
	op := rawOps.Get().(*rawOp)
	op.bufs = append(op.spare[:0], bufs...)
	return op
}

func (op *rawOp) put() {
	clear(op.spare[:])
	op.bufs, op.n, op.errno = nil, 0, 0
	rawOps.Put(op)
}

// readFD reads once into bufs[0]; false (wait for input) on EAGAIN.
func (op *rawOp) readFD(fd uintptr) bool {
	for {
		op.n, op.errno = rawRead(fd, op.bufs[0])
		if op.errno != unix.EINTR {
			return op.errno != unix.EAGAIN
		}
	}
}

// readNowFD reads once into bufs[0] and never waits, on EAGAIN either:
// the caller's poller does.
func (op *rawOp) readNowFD(fd uintptr) bool {
	op.n, op.errno = rawRead(fd, op.bufs[0])
	return true
}

// writeFD writes until bufs is empty; false (wait for room) when the
// socket is full.
func (op *rawOp) writeFD(fd uintptr) bool {
	for {
		for len(op.bufs) > 0 && len(op.bufs[0]) == 0 {
			op.bufs = op.bufs[1:]
		}
		if len(op.bufs) == 0 {
			return true
		}
		n, e := rawWritev(fd, op.bufs...)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN || e == 0 && n == 0:
			return false
		case e != 0:
			op.errno = e
			return true
		}
		op.n += n
		for n > 0 {
			k := min(n, len(op.bufs[0]))
			op.bufs[0], n = op.bufs[0][k:], n-k
			if len(op.bufs[0]) == 0 {
				op.bufs = op.bufs[1:]
			}
		}
	}
}

// tryFD writes bufs with one writev, as far as the socket takes them, and
// never waits.
func (op *rawOp) tryFD(fd uintptr) bool {
	op.n, op.errno = rawWritev(fd, op.bufs...)
	return true
}

// writeAll writes all of bufs to rc's socket, waiting in the runtime's
// poller while it is full, until its write deadline.
func writeAll(rc syscall.RawConn, bufs ...[]byte) (int, error) {
	op := getRawOp(bufs...)
	defer op.put()
	return op.writeAll(rc)
}

// writeAll writes all of op.bufs to rc's socket, as writeAll does.
func (op *rawOp) writeAll(rc syscall.RawConn) (int, error) {
	err := rc.Write(op.write)
	if err == nil && op.errno != 0 {
		err = op.errno
	}
	return op.n, err
}

// rawConn is a socket whose Read and Write are raw system calls; the rest
// (deadlines, Close, addresses) is its net.Conn's.
type rawConn struct {
	net.Conn
	rc syscall.RawConn
}

// newRawConn returns c as a rawConn, or c itself when it has no file
// descriptor.
func newRawConn(c net.Conn) net.Conn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return &rawConn{Conn: c, rc: rc}
		}
	}
	return c
}

// SyscallConn returns the socket's RawConn.
func (c *rawConn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// CloseWrite shuts down the writing side, as net/http does before closing
// a connection it answered with "Connection: close".
func (c *rawConn) CloseWrite() error {
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { err = unix.Shutdown(int(fd), unix.SHUT_WR) }); cerr != nil {
		return cerr
	}
	return c.opError("shutdown", err)
}

// opError wraps a system call's error as package net would, so that
// net/http and logs see a *net.OpError naming the connection.
func (c *rawConn) opError(op string, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, err)}
}

func (c *rawConn) Read(p []byte) (int, error) {
	op := getRawOp(p)
	defer op.put()
	switch err := c.rc.Read(op.read); {
	case err != nil:
		return 0, err
	case op.errno != 0:
		return 0, c.opError("read", op.errno)
	case op.n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return op.n, nil
}

func (c *rawConn) Write(p []byte) (int, error) {
	n, err := writeAll(c.rc, p)
	if errno, ok := err.(syscall.Errno); ok {
		err = c.opError("write", errno)
	}
	return n, err
}

// epollCtl is epoll_ctl(2).
func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// epollPoll is epoll_pwait(2) with a zero timeout: it never waits.
func epollPoll(epfd int, events []unix.EpollEvent) (int, syscall.Errno) {
	// epoll_pwait with no signal mask: epoll_wait is missing on arm64.
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), e
}
