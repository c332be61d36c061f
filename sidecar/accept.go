package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// handshakeTimeout bounds reading a handshake request.
	handshakeTimeout = 10 * time.Second
	// maxHandshakeBytes is the largest handshake request head accepted.
	maxHandshakeBytes = 16 << 10
)

// WebSocket handshakes are read without net/http's server, whose
// per-connection goroutine, 4 KiB reader and 4 KiB writer a hijacked
// connection leaves behind as garbage: the request is parsed with
// http.ReadRequest from a pooled reader, gorilla's Upgrader takes the
// connection from a small http.ResponseWriter, and both buffers go back to
// their pools once the 101 is out.
var (
	handshakeReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	handshakeWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 512) }}
)

// acceptWS accepts WebSocket connections on l until l is closed, handing
// each to its own goroutine for the handshake. Like net/http, it backs off
// on temporary errors such as running out of file descriptors.
func (s *Server) acceptWS(l net.Listener) error {
	for {
		conn, err := s.accept(l)
		if err != nil {
			return err
		}
		conn = newRawConn(conn)
		s.handshaking.Add(1)
		s.clients.Add(1) // until the client ends, or the handshake fails
		s.pending.Store(conn, nil)
		go func() {
			// Once upgraded, this goroutine writes the welcome (and
			// the 101 held with it) instead of starting a writer; it is
			// a writer like any other then, which shutdown closes and
			// cuts at its deadline, no longer a handshake it waits for.
			if c := s.handshake(conn); c != nil {
				c.writeLoop()
			} else {
				s.clients.Done()
			}
		}()
	}
}

// accept accepts the next connection on l. A temporary error (out of file
// descriptors, say) is logged and retried after a delay that doubles from
// 5 ms to 1 s, as net/http does; any other is returned.
func (s *Server) accept(l net.Listener) (net.Conn, error) {
	var delay time.Duration
	for {
		conn, err := l.Accept()
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Temporary() { //nolint:staticcheck // as net/http does
			return conn, err
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		s.log.Warn("accept", "listener", l.Addr().String(), "error", err, "retry_in", delay.String())
		time.Sleep(delay)
	}
}

// handshake reads one request from conn and upgrades it, returning the
// client, or answers it with an error, closes conn and returns nil.
func (s *Server) handshake(conn net.Conn) *client {
	defer s.handshaking.Done()
	defer s.pending.Delete(conn)
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	limited := &io.LimitedReader{R: conn, N: maxHandshakeBytes}
	br := handshakeReaders.Get().(*bufio.Reader)
	br.Reset(limited)
	bw := handshakeWriters.Get().(*bufio.Writer)
	bw.Reset(conn)
	defer func() {
		br.Reset(nil)
		bw.Reset(nil)
		handshakeReaders.Put(br)
		handshakeWriters.Put(bw)
	}()

	// With the stream module in front, the client's address comes first.
	var client netip.AddrPort
	var err error
	if s.proxyProtocol {
		client, err = readProxyHeader(br)
	}
	var r *http.Request
	if err == nil {
		r, err = http.ReadRequest(br)
	}
	if err != nil {
		status := http.StatusBadRequest
		if limited.N == 0 { // a request line or header over the limit, which ReadRequest may see as EOF
			status = http.StatusRequestHeaderFieldsTooLarge
		}
		if errors.Is(err, errProxyHeader) {
			s.warnNoProxyHeader(err)
		}
		if limited.N == 0 || !errors.Is(err, io.EOF) { // not a connection closed before a request
			s.metrics.handshakeRejects.WithLabelValues("bad_handshake").Inc()
			w := &handshakeResponse{conn: &corkedConn{Conn: conn}, header: http.Header{}}
			http.Error(w, "wsgate: "+strings.ToLower(http.StatusText(status)), status)
			w.send()
		}
		conn.Close()
		return nil
	}
	if s.proxyProtocol {
		setClientAddr(r, client)
	} else if a := conn.RemoteAddr(); a != nil {
		r.RemoteAddr = a.String()
	}
	w := &handshakeResponse{conn: &corkedConn{Conn: conn}, rw: bufio.NewReadWriter(br, bw), header: http.Header{}}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		s.handshakeError(w, r, http.StatusBadRequest, errors.New("websocket: handshake with a body"))
	} else if c := s.serveWS(w, r); c != nil {
		return c
	}
	if !w.hijacked {
		if dropped := w.send(); dropped != nil {
			s.log.Warn("refused a handshake without headers that would not fit nginx's proxy_buffer_size",
				"headers", dropped, "status", w.status, "max_head", maxRefusalHead, "remote", remoteAddr(r))
		}
		conn.Close()
	}
	return nil
}

// proxyWarnEvery bounds how often a missing PROXY header is logged.
const proxyWarnEvery = time.Minute

// warnNoProxyHeader logs, at most once per proxyWarnEvery, a connection
// refused for its PROXY header: most likely nginx still runs a config
// rendered for client_proxy = "http", or another client reaches the socket.
func (s *Server) warnNoProxyHeader(err error) {
	now := time.Now().UnixNano()
	last := s.proxyWarned.Load()
	if last != 0 && now-last < int64(proxyWarnEvery) || !s.proxyWarned.CompareAndSwap(last, now) {
		return // logged lately, or by another connection just now
	}
	s.log.Warn("refused WebSocket connections without a valid PROXY protocol header (answered 400): "+
		"with nginx.client_proxy = \"stream\", nginx must proxy clients with the stream snippet (proxy_protocol on); "+
		"logged at most once a minute", "error", err)
}

// handshakeResponse is the http.ResponseWriter of one handshake: gorilla
// hijacks it, and a refusal is buffered and sent by send.
type handshakeResponse struct {
	conn     *corkedConn
	rw       *bufio.ReadWriter
	header   http.Header
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (w *handshakeResponse) Header() http.Header { return w.header }

func (w *handshakeResponse) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *handshakeResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p) // bodies here are short error texts
}

// Hijack hands the connection to gorilla, which writes the 101 to it.
func (w *handshakeResponse) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return w.conn, w.rw, nil
}

// maxRefusalHead bounds the head of a refused handshake's response: nginx
// reads it into one proxy_buffer_size buffer (1k, in the location it
// renders) and answers a longer one with 502, which it also counts as a
// failure of the sidecar (max_fails). An upstream's refusal headers can
// be long (a Location with a return URL).
const maxRefusalHead = 1024

// send writes the buffered response, which ends the connection. Headers
// that would make its head longer than maxRefusalHead are left out,
// longest first, and their names returned.
func (w *handshakeResponse) send() (dropped []string) {
	w.WriteHeader(http.StatusOK)
	w.header.Set("Content-Length", strconv.Itoa(w.body.Len()))
	w.header.Set("Connection", "close")
	var b bytes.Buffer
	for {
		b.Reset()
		fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", w.status, http.StatusText(w.status))
		w.header.Write(&b)
		b.WriteString("\r\n")
		if b.Len() <= maxRefusalHead {
			break
		}
		longest, size := "", 0
		for k, vs := range w.header {
			n := 0
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
			if n > size && k != "Content-Length" && k != "Connection" {
				longest, size = k, n
			}
		}
		if longest == "" {
			break
		}
		delete(w.header, longest)
		dropped = append(dropped, longest)
	}
	b.Write(w.body.Bytes())
	w.conn.Conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	w.conn.Conn.Write(b.Bytes())
	return dropped
}

// corkedConn is the connection as gorilla's Upgrader sees it. gorilla writes
// only once it has hijacked the connection, and only the 101 response: the
// conn keeps it for the client's first frame, so that the handshake costs
// one write and nginx gets the 101 and the welcome in one read. Responses
// to refused handshakes go to the Conn underneath (handshakeResponse.send).
type corkedConn struct {
	net.Conn
	held []byte
}

func (c *corkedConn) Write(p []byte) (int, error) {
	c.held = append(c.held, p...)
	return len(p), nil
}
