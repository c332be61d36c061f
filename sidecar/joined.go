package sidecar

import (
	"errors"
	"net"
	"strings"
	"sync"
)

// joinListeners returns ls as one listener: ls[0] itself when it is the
// only one, else a joinedListener.
func joinListeners(ls []net.Listener) net.Listener {
	if len(ls) == 1 {
		return ls[0]
	}
	j := &joinedListener{ls: ls, conns: make(chan net.Conn), errs: make(chan error), closed: make(chan struct{})}
	for _, l := range ls {
		go j.acceptFrom(l)
	}
	return j
}

// joinedListener accepts on several listeners at once: a sidecar's push
// port on each push.listen address (nginx.push_proxy = "none"). Accept
// returns the first error of any of them; Close closes them all (one
// closed already is no error).
type joinedListener struct {
	ls        []net.Listener
	conns     chan net.Conn
	errs      chan error // accept errors, temporary ones included
	closed    chan struct{}
	closeOnce sync.Once
}

// acceptFrom passes l's connections to Accept, one at a time: until one is
// taken the next waits in l's backlog. A connection accepted as the
// listener closes is closed.
func (j *joinedListener) acceptFrom(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case j.errs <- err:
			case <-j.closed:
				return
			}
			if ne, ok := err.(net.Error); ok && ne.Temporary() { //nolint:staticcheck // Server.accept retries it
				continue
			}
			return
		}
		select {
		case j.conns <- c:
		case <-j.closed:
			c.Close()
			return
		}
	}
}

func (j *joinedListener) Accept() (net.Conn, error) {
	select {
	case c := <-j.conns:
		return c, nil
	case err := <-j.errs:
		return nil, err
	case <-j.closed:
		return nil, net.ErrClosed
	}
}

func (j *joinedListener) Close() error {
	var err error
	j.closeOnce.Do(func() {
		close(j.closed)
		for _, l := range j.ls {
			if cerr := l.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
				err = cerr
			}
		}
	})
	return err
}

// Addr is every listener's address: its String lists them.
func (j *joinedListener) Addr() net.Addr {
	a := make(joinedAddr, len(j.ls))
	for i, l := range j.ls {
		a[i] = l.Addr()
	}
	return a
}

// joinedAddr is a joinedListener's addresses.
type joinedAddr []net.Addr

func (a joinedAddr) Network() string { return a[0].Network() }

func (a joinedAddr) String() string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}
