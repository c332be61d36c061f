package sidecar

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
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
	// A deadline set is kept while it is within this of where it should
	// be: setting one costs more than the rest of a push's bookkeeping.
	deadlineSlack = time.Second
	// A connection that has not sent its first request for this long
	// counts as idle at shutdown, as net/http counts its own.
	newConnGrace = 5 * time.Second
)

// pushListener is the push socket as net/http sees it: it accepts every
// connection for the fast path, and Accept returns those the fast path
// hands over.
type pushListener struct {
	net.Listener
	s         *Server
	handoff   chan net.Conn
	accepting chan struct{} // closed when the socket stops accepting
	err       error         // why, once accepting is closed
	closeOnce sync.Once

	mu    sync.Mutex
	conns map[net.Conn]connState // connections on the fast path
}

// connState is a fast-path connection's state, for shutdown.
type connState struct {
	busy     bool      // reading or answering a request
	accepted time.Time // zero once it has sent a request
}

func newPushListener(s *Server, l net.Listener) *pushListener {
	pl := &pushListener{
		Listener:  l,
		s:         s,
		handoff:   make(chan net.Conn),
		accepting: make(chan struct{}),
		conns:     map[net.Conn]connState{},
	}
	go pl.acceptLoop()
	return pl
}

func (l *pushListener) acceptLoop() {
	for {
		c, err := l.s.accept(l.Listener)
		if err != nil {
			l.err = err
			close(l.accepting)
			return
		}
		c = newRawConn(c)
		l.setState(c, connState{busy: true, accepted: time.Now()})
		go l.serve(c)
	}
}

// Accept returns the next connection handed over to net/http.
func (l *pushListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.accepting:
		return nil, l.err
	}
}

// Close closes the socket; the connections it accepted stay open.
func (l *pushListener) Close() error {
	var err error
	l.closeOnce.Do(func() { err = l.Listener.Close() })
	return err
}

func (l *pushListener) setState(c net.Conn, st connState) {
	l.mu.Lock()
	l.conns[c] = st
	l.mu.Unlock()
}

func (l *pushListener) forget(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// busy counts the fast path's connections that are reading or answering
// a request, or were accepted less than newConnGrace ago.
func (l *pushListener) busy() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, st := range l.conns {
		if st.busy && (st.accepted.IsZero() || time.Since(st.accepted) < newConnGrace) {
			n++
		}
	}
	return n
}

// closeIdle closes the fast path's connections that are not busy, or all
// of them.
func (l *pushListener) closeIdle(all bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c, st := range l.conns {
		if all || !st.busy || !st.accepted.IsZero() && time.Since(st.accepted) >= newConnGrace {
			c.Close()
		}
	}
}

// serve is the fast path of one connection.
func (l *pushListener) serve(c net.Conn) {
	s := l.s
	defer l.forget(c)
	var (
		buf           = make([]byte, maxFastHeader)
		start, end    int // buf[start:end] is read and not yet used
		readDeadline  time.Time
		writeDeadline time.Time
		out           []byte
	)
	setRead := func(d time.Time) {
		if d.Before(readDeadline) || d.Sub(readDeadline) > deadlineSlack {
			c.SetReadDeadline(d)
			readDeadline = d
		}
	}
	for {
		if start > 0 {
			end = copy(buf, buf[start:end])
			start = 0
		}
		req, n, res := fastPush{}, 0, needMore
		var first time.Time // when the request began to arrive
		if end > 0 {
			// Pipelined behind the last one.
			l.setState(c, connState{busy: true})
			first = time.Now()
			req, n, res = parseFastPush(buf[:end], s.location, s.maxBody)
		}
		for res == needMore {
			switch {
			case end == 0:
				setRead(time.Now().Add(s.pushTimeouts.idle))
			case first.IsZero():
				first = time.Now()
				fallthrough
			default:
				setRead(first.Add(s.pushTimeouts.header))
			}
			m, err := c.Read(buf[end:])
			if m > 0 && end == 0 {
				l.setState(c, connState{busy: true})
			}
			end += m
			if err != nil {
				c.Close() // EOF, a timeout, or closed at shutdown
				return
			}
			req, n, res = parseFastPush(buf[:end], s.location, s.maxBody)
		}
		if res == notFast {
			l.handOver(c, buf[:end])
			return
		}
		arrived := s.now()
		if first.IsZero() {
			first = time.Now()
		}

		var body []byte
		if req.contentLength > 0 {
			body = make([]byte, req.contentLength)
		}
		got := copy(body, buf[n:end])
		start = n + got
		if got < len(body) {
			setRead(first.Add(s.pushTimeouts.read))
			if _, err := io.ReadFull(c, body[got:]); err != nil {
				c.Close()
				return
			}
		}

		err := s.fastPush(&req, body, arrived)
		s.pushed(req.id, err)
		closing := req.close || s.stopping.Load()
		out = appendAnswer(out[:0], err, closing)
		if d := time.Now().Add(s.pushTimeouts.write); d.Sub(writeDeadline) > deadlineSlack {
			c.SetWriteDeadline(d)
			writeDeadline = d
		}
		if _, err := c.Write(out); err != nil || closing {
			c.Close()
			return
		}
		l.setState(c, connState{})
	}
}

// handOver gives c, with what was read of its next request, to net/http;
// after the socket stopped accepting, c is closed instead (shutdown).
func (l *pushListener) handOver(c net.Conn, read []byte) {
	l.forget(c)
	l.s.metrics.handovers.Inc()
	select {
	case l.handoff <- &prefixConn{Conn: c, pending: read}:
	case <-l.accepting:
		c.Close()
	}
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	pending []byte
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

// fastPush carries out a push the fast path read; nil means 204.
func (s *Server) fastPush(req *fastPush, body []byte, arrived int64) *pushError {
	c, err := s.target(req.method, req.id)
	if c == nil {
		return err
	}
	kind := pushKind(req.contentType)
	if kind == websocket.TextMessage && !utf8.Valid(body) {
		return errNotUTF8
	}
	return s.deliver(c, frame{kind: kind, data: body, at: arrived})
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
