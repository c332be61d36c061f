package sidecar

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller waits for input on idle clients' sockets with one epoll set and
// one goroutine, so an idle client holds no goroutine of its own (a
// goroutine blocked reading costs a stack of 2–8 KiB per client). A socket
// that becomes readable is disarmed (EPOLLONESHOT) and its client's read
// runs in a new goroutine, which reads what is there without blocking and
// re-arms the socket.
type poller struct {
	epfd int

	mu      sync.Mutex
	clients map[int32]*client // by socket fd
}

func newPoller() (*poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// The epoll fd is itself pollable: Go's netpoller wakes run when it has
	// events, so no thread blocks in epoll_wait. (A goroutine blocked in
	// that syscall keeps its P, and the reads it starts can wait there.)
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "epoll")
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epfd: fd, clients: map[int32]*client{}}
	go p.run(raw)
	return p, nil
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// add watches c's socket; c.readable runs once it has input or is closed.
func (p *poller) add(c *client) error {
	return c.control(func(fd int) error {
		c.fd = int32(fd)
		p.mu.Lock()
		p.clients[int32(fd)] = c
		p.mu.Unlock()
		ev := unix.EpollEvent{Events: pollEvents, Fd: int32(fd)}
		if err := epollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			p.remove(c)
			return err
		}
		return nil
	})
}

// rearm watches c's socket again after a read found it drained.
func (p *poller) rearm(c *client) error {
	return c.control(func(fd int) error {
		ev := unix.EpollEvent{Events: pollEvents, Fd: int32(fd)}
		return epollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	})
}

// remove forgets c, before its socket is closed: closing the socket takes
// it out of the epoll set, and the fd number may then be reused. A late
// event for a reused number reaches the new client, which finds nothing to
// read and re-arms.
func (p *poller) remove(c *client) {
	p.mu.Lock()
	if p.clients[c.fd] == c {
		delete(p.clients, c.fd)
	}
	p.mu.Unlock()
}

// run hands each readable client to a goroutine of its own, forever.
func (p *poller) run(epoll syscall.RawConn) {
	events := make([]unix.EpollEvent, 128)
	var err syscall.Errno
	rerr := epoll.Read(func(uintptr) bool {
		for {
			var n int
			n, err = epollPoll(p.epfd, events)
			switch {
			case err == unix.EINTR:
				continue
			case err != 0:
				return true
			case n == 0:
				return false // wait until the epoll fd is readable
			}
			p.mu.Lock()
			for _, ev := range events[:n] {
				if c := p.clients[ev.Fd]; c != nil {
					go c.readable()
				}
			}
			p.mu.Unlock()
		}
	})
	panic(fmt.Sprintf("sidecar: epoll: %v %v", rerr, err)) // the fd is never closed: a bug
}
