package sidecar

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Push connections. Each is served first by the fast path, on the
// connection's own goroutine: the requests parseFastPush takes are read,
// carried out and answered here, without net/http's work per request (a
// goroutine watching the connection while the handler runs, deadlines set
// and reset, the request's maps), which was about a third of the sidecar's
// CPU per push. At the first request the fast path does not take, the
// connection, with what was read of that request, goes to net/http, which
// serves it from then on.

// pushTimeouts are the push socket's timeouts, the same on both paths.
type pushTimeouts struct {
	idle   time.Duration // for the next request on a kept-alive connection
	header time.Duration // for a request's header, from its first byte
	read   time.Duration // for a whole request
	write  time.Duration // for an answer
}

var defaultPushTimeouts = pushTimeouts{idle: 5 * time.Minute, header: 10 * time.Second, read: time.Minute, write: time.Minute}

const (
	// A deadline set is kept while it is less than this (or a sixteenth
	// of its timeout) short of where it should be: setting one costs more
	// than the rest of a push's bookkeeping. A timeout may so fire that
	// much early.
	deadlineSlack = time.Second
	// A connection that has not sent its first request for this long
	// counts as idle at shutdown, as net/http counts its own.
	newConnGrace = 5 * time.Second
	// How long a connection closed with requests possibly unread stays
	// half open first, so that a reset does not overtake its last answer
	// (net/http's rstAvoidanceDelay).
	lingerBeforeClose = 500 * time.Millisecond
	// net/http skips up to this many CR or LF bytes before a request that
	// follows a POST (RFC 9112 §2.2, for clients that end a body with
	// CRLF).
	maxCRLFAfterPost = 4
)

// pushListener is the push sockets as net/http sees them: it accepts every
// connection on each for the fast path (one socket, or with push_proxy =
// "none" one per push.listen address), and Accept returns those the fast
// path hands over, until net/http closes it. A connection is taken from a
// socket's backlog only to be served at once: what is not taken when the
// sockets close stays there for the next process.
type pushListener struct {
	socks      []net.Listener
	s          *Server
	handoff    chan net.Conn
	closed     chan struct{} // closed by Close: no more handovers
	closeOnce  sync.Once
	acceptDone chan struct{} // closed when every socket stopped accepting
	failed     chan struct{} // closed if that was not shutdown's doing
	failOnce   sync.Once
	acceptErr  error // why the first socket stopped, once acceptDone or failed is closed
	errOnce    sync.Once
	serving    sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]connState // connections on the fast path
}

// connState is a fast-path connection's state, for shutdown.
type connState struct {
	busy     bool      // reading or answering a request
	accepted time.Time // zero once it has sent a request
}

// waitsFor reports whether shutdown waits for the connection: it is reading
// or answering a request, or was accepted less than newConnGrace ago.
func (st connState) waitsFor() bool {
	return st.busy && (st.accepted.IsZero() || time.Since(st.accepted) < newConnGrace)
}

func newPushListener(s *Server, socks []net.Listener) *pushListener {
	pl := &pushListener{
		socks:      socks,
		s:          s,
		handoff:    make(chan net.Conn),
		closed:     make(chan struct{}),
		acceptDone: make(chan struct{}),
		failed:     make(chan struct{}),
		conns:      map[net.Conn]connState{},
	}
	var loops sync.WaitGroup
	for _, sock := range socks {
		loops.Add(1)
		go func() {
			defer loops.Done()
			pl.acceptLoop(sock)
		}()
	}
	go func() {
		loops.Wait()
		close(pl.acceptDone)
	}()
	return pl
}

// acceptLoop serves sock's connections until it fails or is closed.
func (l *pushListener) acceptLoop(sock net.Listener) {
	for {
		c, err := l.s.accept(sock)
		if err != nil {
			l.errOnce.Do(func() { l.acceptErr = err })
			if !l.s.stopping.Load() {
				l.failOnce.Do(func() { close(l.failed) })
			}
			return
		}
		c = newRawConn(c)
		l.setState(c, connState{busy: true, accepted: time.Now()})
		l.serving.Add(1)
		go func() {
			defer l.serving.Done()
			l.serve(c)
		}()
	}
}

// Accept returns the next connection handed over to net/http.
func (l *pushListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		l.s.metrics.handovers.Inc() // before net/http serves it, and so before any answer on it
		return c, nil
	case <-l.failed:
		return nil, l.acceptErr
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close ends the handovers and closes the sockets, if they are not closed
// already (shutdown closes them first, with closeSockets).
func (l *pushListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.closed)
		l.closeSockets()
	})
	return nil
}

// closeSockets stops accepting: what is not accepted yet waits in the
// sockets' backlogs (held by systemd or `wsgate up`) for the next process.
func (l *pushListener) closeSockets() {
	for _, sock := range l.socks {
		sock.Close()
	}
}

// Addr is the first socket's address.
func (l *pushListener) Addr() net.Addr { return l.socks[0].Addr() }

// addrs lists every socket's address, for the log.
func (l *pushListener) addrs() string {
	a := make([]string, len(l.socks))
	for i, sock := range l.socks {
		a[i] = sock.Addr().String()
	}
	return strings.Join(a, " ")
}

// drain waits, after the socket stopped accepting, until the fast path's
// connections are done: busy ones answer (and close, the server
// stopping), idle ones are closed; at the deadline, all are closed.
func (l *pushListener) drain(deadline context.Context) {
	<-l.acceptDone
	l.closeIdle(false)
	done := waitChan(&l.serving)
	select {
	case <-done:
	case <-deadline.Done():
		l.closeIdle(true)
		<-done
	}
}

func (l *pushListener) setState(c net.Conn, st connState) {
	l.mu.Lock()
	l.conns[c] = st
	l.mu.Unlock()
}

// forget drops c, once closed or taken by net/http.
func (l *pushListener) forget(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// busy counts the fast path's connections shutdown waits for.
func (l *pushListener) busy() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, st := range l.conns {
		if st.waitsFor() {
			n++
		}
	}
	return n
}

// closeIdle closes the fast path's connections shutdown does not wait
// for, or all of them.
func (l *pushListener) closeIdle(all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c, st := range l.conns {
		if all || !st.waitsFor() {
			c.Close()
		}
	}
}

// serve is the fast path of one connection, until it is closed or handed
// over.
func (l *pushListener) serve(c net.Conn) {
	s, t := l.s, l.s.pushTimeouts
	accepted := time.Now()
	var (
		buf        = make([]byte, maxFastHeader)
		start, end int // buf[start:end] is read and not yet used
		readDL     = lazyDeadline{set: c.SetReadDeadline}
		writeDL    = lazyDeadline{set: c.SetWriteDeadline}
		out        []byte
		afterPost  bool // the last request was a POST
		served     bool // a request was answered
	)
	closeConn := func(linger bool) {
		if linger {
			if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				time.Sleep(lingerBeforeClose)
			}
		}
		c.Close()
		l.forget(c)
	}
	for {
		if start > 0 {
			end = copy(buf, buf[start:end])
			start = 0
		}
		req, n, res := fastPush{}, 0, needMore
		var first time.Time // when the request began to arrive
		crlf := 0           // CR and LF skipped after a POST
		for {
			if afterPost {
				for start < end && crlf < maxCRLFAfterPost && (buf[start] == '\r' || buf[start] == '\n') {
					start++
					crlf++
				}
				if start == end {
					start, end = 0, 0
				}
			}
			if end > start {
				if first.IsZero() {
					first = time.Now()
					if !served {
						first = accepted // net/http times a connection's first request from accept
					}
					l.setState(c, connState{busy: true})
				}
				if req, n, res = parseFastPush(buf[start:end], s.location, s.maxBody); res != needMore {
					break
				}
				if end == len(buf) {
					res = notFast // a header longer than the buffer
					break
				}
			}
			switch {
			case !first.IsZero():
				readDL.move(first.Add(t.header), t.header)
			case !served:
				readDL.move(accepted.Add(t.header), t.header)
			default:
				readDL.move(time.Now().Add(t.idle), t.idle)
			}
			m, err := c.Read(buf[end:])
			end += m
			if err == io.EOF && end > start {
				l.handOver(c, buf[start:end], time.Time{}) // net/http answers a cut header 400
				return
			}
			if err != nil {
				closeConn(false) // EOF, a timeout, or closed at shutdown
				return
			}
		}
		if res == notFast {
			l.handOver(c, buf[start:end], first.Add(t.header))
			return
		}
		arrived := s.now()
		n += start

		start = n + int(min(int64(end-n), req.contentLength)) // after what is read of the body
		if int64(start-n) < req.contentLength {
			readDL.move(first.Add(t.read), t.read)
		}
		// The client first, as net/http's path does: a body nobody is
		// to get is read and dropped, not held, and answered the same.
		target, err := s.target(req.method, req.id)
		unread := false // body left in the socket
		if target != nil {
			body, rerr := readBody(c, req.contentLength, buf[n:start])
			if rerr != nil {
				err, req.close = bodyError(rerr), true
			} else {
				err = s.deliverPush(target, req.contentType, body, arrived)
			}
		} else if rest := req.contentLength - int64(start-n); req.contentLength > maxDrain {
			req.close, unread = true, rest > 0
		} else if rest > 0 {
			if _, derr := io.CopyN(io.Discard, c, rest); derr != nil {
				req.close = true
			}
		}
		s.pushed(req.id, err)
		closing := req.close || s.stopping.Load()
		out = appendAnswer(out[:0], err, closing)
		writeDL.move(time.Now().Add(t.write), t.write)
		if _, werr := c.Write(out); werr != nil || closing {
			closeConn(werr == nil && (start < end || unread || s.stopping.Load()))
			return
		}
		served, afterPost = true, req.method == http.MethodPost
		l.setState(c, connState{})
	}
}

// lazyDeadline is a socket deadline that is set only when it must move:
// earlier, or later by more than min(deadlineSlack, timeout/16).
type lazyDeadline struct {
	at  time.Time
	set func(time.Time) error
}

func (d *lazyDeadline) move(to time.Time, timeout time.Duration) {
	if to.Before(d.at) || to.Sub(d.at) > min(deadlineSlack, timeout/16) {
		d.set(to)
		d.at = to
	}
}

// handOver gives c, with what was read of its next request, to net/http,
// whose ConnState hook takes it off the fast path's books (forget); once
// net/http closed the listener (shutdown), c is closed instead.
func (l *pushListener) handOver(c net.Conn, read []byte, hdrDeadline time.Time) {
	select {
	case l.handoff <- &prefixConn{Conn: c, pending: read, clamp: hdrDeadline}:
	case <-l.closed:
		c.Close()
		l.forget(c)
	}
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pending []byte
	clamp   time.Time // net/http's header deadline may not pass the fast path's
}

func (c *prefixConn) SetReadDeadline(t time.Time) error {
	if !c.clamp.IsZero() {
		if t.IsZero() || t.After(c.clamp) {
			t = c.clamp
		}
		c.clamp = time.Time{}
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite shuts down the writing side, for net/http.
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// deliverPush queues a pushed body for c, as the frame its Content-Type
// says; nil means 204.
func (s *Server) deliverPush(c *client, contentType string, body []byte, arrived int64) *pushError {
	f, err := pushFrame(pushKind(contentType), body, arrived)
	if err != nil {
		return err
	}
	return s.deliver(c, f)
}

// appendAnswer appends to b the answer to a push: 204, or err's status
// with its JSON body, as writeError writes it.
func appendAnswer(b []byte, err *pushError, closing bool) []byte {
	var body []byte
	if err == nil {
		b = append(b, "HTTP/1.1 204 No Content\r\n"...)
	} else {
		body = errorJSON(err)
		b = append(b, "HTTP/1.1 "...)
		b = strconv.AppendInt(b, int64(err.status), 10)
		b = append(b, ' ')
		b = append(b, http.StatusText(err.status)...)
		b = append(b, "\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Date: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	if closing {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}
