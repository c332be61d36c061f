package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
)

const (
	levelDebug = slog.LevelDebug

	// gorilla's Conn, made by each upgrade and dropped after it (see
	// wsConn), allocates its read buffer at once; 1 gets its minimum
	// (125 B). A write buffer pool, never used, spares it a write buffer.
	upgradeReadBuffer = 1
)

// Server is one sidecar instance: WebSocket clients on one listener, the
// push API on the other.
type Server struct {
	cfg      *config.Config
	instance int
	log      *slog.Logger
	reg      *registry
	welcome  welcomer
	upgrader websocket.Upgrader
	metrics  *metrics
	poller   *poller
	up       *upstream // nil without upstream.url
	epoch    time.Time
	version  string

	// From cfg, for the hot paths.
	location     string
	maxBody      int64
	maxBatch     int64
	maxMessage   int64
	queueLen     int
	queueBytes   int64
	dropSlow     bool
	pingInterval time.Duration
	idleTimeout  time.Duration
	writeTimeout time.Duration
	// proxyProtocol: each ws connection starts with a PROXY protocol
	// header (nginx.client_proxy = "stream").
	proxyProtocol bool
	proxyWarned   atomic.Int64 // when a missing PROXY header was last logged, unix ns
	pushTimeouts  pushTimeouts

	// Ids whose handshake is at the upstream's connect or after it, to a
	// channel closed once the client is registered or the handshake
	// failed: a push to such an id waits instead of answering 404.
	handshakes sync.Map

	clients     sync.WaitGroup // one per accepted WebSocket, until finish
	handshaking sync.WaitGroup // one per connection accepted on ws, until upgraded or refused
	pending     sync.Map       // those connections (net.Conn), for the shutdown deadline
	stopping    atomic.Bool
	cutting     atomic.Bool // the shutdown deadline passed: a client registered now is cut
}

// Option sets what a Server reports about itself.
type Option func(*Server)

// WithVersion sets the version /status and wsgate_build_info report
// (default "dev").
func WithVersion(v string) Option { return func(s *Server) { s.version = v } }

// New returns the server for instance of a validated configuration.
func New(c *config.Config, instance int, log *slog.Logger, opts ...Option) *Server {
	s := &Server{
		cfg:           c,
		instance:      instance,
		log:           log.With("instance", instance),
		reg:           newRegistry(),
		welcome:       newWelcomer(c, instance),
		epoch:         time.Now(),
		version:       "dev",
		location:      c.Location,
		maxBody:       int64(c.Push.MaxBody),
		maxBatch:      int64(c.Push.MaxBatch),
		maxMessage:    int64(c.WebSocket.MaxMessage),
		queueLen:      c.WebSocket.SendQueue,
		queueBytes:    int64(c.WebSocket.SendQueueBytes),
		dropSlow:      c.WebSocket.SlowClient == "drop",
		pingInterval:  c.WebSocket.PingInterval.D(),
		idleTimeout:   c.WebSocket.IdleTimeout.D(),
		writeTimeout:  c.WebSocket.WriteTimeout.D(),
		proxyProtocol: c.Stream(),
		pushTimeouts:  defaultPushTimeouts,
	}
	for _, o := range opts {
		o(s)
	}
	s.metrics = newMetrics(s.version, func() float64 { return float64(s.reg.len()) })
	s.up = newUpstream(s)
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: s.writeTimeout,
		ReadBufferSize:   upgradeReadBuffer,
		WriteBufferPool:  &sync.Pool{},
		CheckOrigin:      s.checkOrigin,
		Error:            s.handshakeError,
	}
	return s
}

// sharedPoller is the process's one poller, for all its Servers.
var sharedPoller = sync.OnceValues(newPoller)

// now is the server clock: monotonic nanoseconds since New.
func (s *Server) now() int64 { return int64(time.Since(s.epoch)) }

// Connections is the number of clients connected now.
func (s *Server) Connections() int { return s.reg.len() }

// Serve serves clients on ws and pushes on push until ctx is done, then
// shuts down gracefully within shutdown_timeout: it stops accepting, answers
// pushes in flight, sends each client what was queued for it and a close
// frame with 1012 (service restart), and finally cuts the clients that did
// not finish in time. It returns the first error that stopped a listener.
// push is one socket, or with push_proxy = "none" one per push.listen
// address.
func (s *Server) Serve(ctx context.Context, ws net.Listener, push ...net.Listener) error {
	if len(push) == 0 {
		return errors.New("sidecar: no push socket to serve")
	}
	p, err := sharedPoller()
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	s.poller = p
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	pushSrv := &http.Server{
		Handler:           http.HandlerFunc(s.servePush),
		ReadHeaderTimeout: s.pushTimeouts.header,
		ReadTimeout:       s.pushTimeouts.read,
		WriteTimeout:      s.pushTimeouts.write,
		IdleTimeout:       s.pushTimeouts.idle,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          errLog,
	}
	busy := &busyConns{state: map[net.Conn]bool{}}
	pushes := newPushListener(s, push)
	pushSrv.ConnState = func(c net.Conn, st http.ConnState) {
		busy.track(c, st)
		if pc, ok := c.(*prefixConn); ok && st == http.StateNew {
			pushes.forget(pc.Conn) // handed over: counted by busy now
		}
	}
	failed := make(chan error, 2)
	wsDone, pushDone := make(chan struct{}), make(chan struct{})
	run := func(serve func() error, done chan struct{}) {
		err := serve()
		if !s.stopping.Load() && !errors.Is(err, http.ErrServerClosed) {
			failed <- err
		}
		close(done)
	}
	go run(func() error { return s.acceptWS(ws) }, wsDone)
	go run(func() error { return pushSrv.Serve(pushes) }, pushDone)
	s.log.Info("serving", "ws", ws.Addr().String(), "push", pushes.addrs())

	select {
	case <-ctx.Done():
	case err = <-failed:
		s.log.Error("listener failed", "error", err)
	}
	start := time.Now()
	deadline, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.D())
	defer cancel()
	s.stopping.Store(true)
	// Answers end their connections from now on, on net/http's path as
	// on the fast path (and idle ones close): a backend's next push goes
	// on a new connection, to the next process.
	pushSrv.SetKeepAlivesEnabled(false)
	s.log.Info("shutting down", "clients", s.reg.len())
	// Stop accepting: what is not accepted yet waits in the socket's
	// backlog for the next process (systemd or `wsgate up` hold the
	// socket). Then let every push connection already accepted get the
	// answer to the request it is reading, on the fast path or net/http
	// (which keeps taking the fast path's handovers), before
	// http.Server.Shutdown, which would drop a request it reads after
	// shutdown began without answering it.
	ws.Close()
	pushes.closeSockets()
	<-wsDone
	if s.up != nil {
		context.AfterFunc(deadline, s.up.cancel) // what the upstream still has then is abandoned
	}
	go s.waitHandshakes(deadline) // a handshake ends by the deadline; its client closes itself (stopping)
	for busy.count()+pushes.busy() > 0 && deadline.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	pushes.drain(deadline)
	s.shutdown(deadline, pushSrv)
	<-pushDone
	if s.up != nil {
		s.up.drain() // disconnect events, within the same deadline
	}
	s.log.Info("stopped", "took", time.Since(start).Round(time.Millisecond).String())
	return err
}

// waitHandshakes waits for the handshakes under way; at the deadline it
// fails the ones still reading their request and waits for them to return.
// Every client is registered (and closed with 1012) or refused after it.
func (s *Server) waitHandshakes(deadline context.Context) {
	done := waitChan(&s.handshaking)
	select {
	case <-done:
		return
	case <-deadline.Done():
	}
	s.pending.Range(func(conn, _ any) bool {
		conn.(net.Conn).SetReadDeadline(time.Unix(1, 0))
		return true
	})
	<-done
}

// waitChan returns a channel closed once wg's counter is zero.
func waitChan(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// busyConns counts connections that are new or serving a request, which
// shutdown lets finish.
type busyConns struct {
	mu    sync.Mutex
	state map[net.Conn]bool // busy or idle, until closed or hijacked
	n     int
}

func (b *busyConns) track(c net.Conn, st http.ConnState) {
	busy := st == http.StateNew || st == http.StateActive
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state[c] {
		b.n--
	}
	if busy {
		b.n++
	}
	if st == http.StateHijacked || st == http.StateClosed {
		delete(b.state, c)
	} else {
		b.state[c] = busy
	}
}

func (b *busyConns) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// shutdown closes idle push connections, closes every client behind what
// was queued for it, and cuts the clients still there at the deadline.
func (s *Server) shutdown(ctx context.Context, pushSrv *http.Server) {
	if err := pushSrv.Shutdown(ctx); err != nil {
		pushSrv.Close()
	}

	// Close every client behind what was queued for it.
	for _, c := range s.reg.snapshot() {
		c.closeQueued(closeServerRestart, "service restart")
	}
	done := waitChan(&s.clients)
	select {
	case <-done:
	case <-ctx.Done():
		s.cutting.Store(true)
		cut := s.reg.snapshot()
		for _, c := range cut {
			c.cut()
		}
		s.log.Warn("shutdown timeout: cut clients", "clients", len(cut))
		<-done
	}
}

// serveWS upgrades one WebSocket client, queues its welcome and hands its
// socket to the poller. It returns the client, whose writer the caller
// runs to send the welcome, or nil when the handshake failed.
func (s *Server) serveWS(w *handshakeResponse, r *http.Request) *client {
	// A handshake accepted while shutdown begins is still welcomed (and
	// then closed with 1012, below): answering 503 would reach the client
	// through nginx as a refused connection.
	id := newID()
	start := time.Now()
	var greeting *frame
	connected := false // the upstream accepted connect: a disconnect must follow
	if s.up != nil && s.up.asked(r) {
		// The backend learns the id from connect and may push the moment
		// it has replied, before its reply even reaches us.
		done := make(chan struct{})
		s.handshakes.Store(id, done)
		defer func() {
			s.handshakes.Delete(id)
			close(done)
		}()
		if greeting, connected = s.up.connect(w, r, id); !connected {
			return nil // refused by the upstream
		}
	}
	// fail ends a handshake that failed after connect was accepted, which
	// must still be paired with a disconnect.
	fail := func() *client {
		if connected && s.up.onDisconnect {
			s.up.disconnect(&client{id: id, srv: s, start: start}, closeAbnormal, "")
		}
		return nil
	}
	// gorilla checks the handshake and writes the 101, which w holds back
	// for the first frame; its Conn is not used after that (see wsConn).
	if _, err := s.upgrader.Upgrade(w, r, nil); err != nil {
		return fail() // s.handshakeError answered and counted it
	}
	conn := w.conn.Conn
	sc, ok := conn.(syscall.Conn)
	if !ok {
		conn.Close()
		s.log.Error("WebSocket listener gives connections without a file descriptor")
		return fail()
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		conn.Close()
		return fail()
	}
	c := &client{id: id, srv: s, ws: newWSConn(conn, raw, w.conn.held), raw: raw, remote: remoteAddr(r), start: start}
	c.fr.max, c.fr.keep = s.maxMessage, s.up != nil && s.up.onMessage
	now := s.now()
	c.lastRecv.Store(now)
	c.lastSend.Store(now)
	c.lastPing.Store(now)
	c.mu.Lock() // tick takes c.mu before it uses the timer, however soon it fires
	c.keepalive = time.AfterFunc(s.pingInterval, c.tick)
	c.mu.Unlock()
	// The welcome is the first frame in the queue, and the writer starts
	// only once the client is registered: a push made the moment the client
	// has read its welcome finds it, and no push can overtake the welcome.
	// Neither counts against the send queue's limits: the backend may push
	// as soon as it has the connect event, and its push must fit.
	welcome := s.welcome.frame(c.id)
	c.queue, c.writing = []frame{{kind: websocket.TextMessage, data: welcome, at: welcomeFrame, free: true}}, true
	s.metrics.queued.Inc()
	if greeting != nil { // connect's reply body, right behind the welcome
		greeting.free = true
		c.queue = append(c.queue, *greeting)
		s.metrics.queued.Inc()
	}
	s.reg.add(c)
	s.metrics.connects.Inc()
	if s.stopping.Load() { // shutdown began while we accepted; it may have missed us
		c.closeQueued(closeServerRestart, "service restart")
	}
	if s.cutting.Load() { // and its deadline passed: so may have its cut
		defer c.cut()
	}
	c.debug = s.log.Enabled(r.Context(), levelDebug)
	if c.debug {
		s.log.Debug("connect", "id", c.id, "remote", c.remote)
	}
	if err := s.poller.add(c); err != nil {
		s.log.Error("watching a client's socket", "id", c.id, "error", err)
		s.end(c, err)
	}
	return c
}

// end releases c once its connection ended: it answers a client's close or
// protocol error with a close frame, and reports the disconnect.
func (s *Server) end(c *client, err error) {
	if !c.ended.CompareAndSwap(false, true) {
		return
	}
	defer s.clients.Done()
	var pe *protocolError
	var pc *peerClose
	switch {
	case errors.As(err, &pe):
		c.sendClose(websocket.FormatCloseMessage(pe.code, pe.text))
	case errors.As(err, &pc):
		c.mu.Lock()
		sent := c.closeSent
		c.mu.Unlock()
		if !sent { // echo the client's code, as RFC 6455 §5.5.1 asks
			var reply []byte
			if pc.code != websocket.CloseNoStatusReceived {
				reply = websocket.FormatCloseMessage(pc.code, "")
			}
			_ = c.ws.write(opClose, reply, time.Now().Add(s.writeTimeout))
		}
	}
	code, reason := c.finish(err)
	if s.up != nil && s.up.onDisconnect {
		s.up.disconnect(c, code, reason)
	}
	s.metrics.disconnects.WithLabelValues(closeCodeLabel(code)).Inc()
	if c.debug {
		s.log.Debug("close", "id", c.id, "remote", c.remote, "code", code,
			"duration", time.Since(c.start).Round(time.Millisecond).String(),
			"in", c.in.Load(), "out", c.out.Load())
	}
}

// checkOrigin allows a handshake without an Origin header (not a browser)
// or with one listed in websocket.allowed_origins; an empty list allows all.
func (s *Server) checkOrigin(r *http.Request) bool {
	allowed := s.cfg.WebSocket.AllowedOrigins
	origin := r.Header.Get("Origin")
	if len(allowed) == 0 || origin == "" {
		return true
	}
	for _, a := range allowed {
		if strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return true
		}
	}
	return false
}

// handshakeError answers a refused handshake and counts it.
func (s *Server) handshakeError(w http.ResponseWriter, r *http.Request, status int, reason error) {
	label := "bad_handshake"
	if status == http.StatusForbidden {
		label = "origin"
	}
	s.metrics.handshakeRejects.WithLabelValues(label).Inc()
	if s.log.Enabled(r.Context(), levelDebug) {
		s.log.Debug("handshake refused", "status", status, "error", reason.Error(), "remote", remoteAddr(r))
	}
	http.Error(w, http.StatusText(status)+": "+reason.Error(), status)
}

// remoteAddr is the client's address as nginx reports it (X-Real-IP), or the
// peer address of a direct connection.
func remoteAddr(r *http.Request) string {
	if ip := r.Header.Get("X-Real-IP"); ip != "" {
		return ip
	}
	return r.RemoteAddr
}

func closeCodeLabel(code int) string {
	switch code {
	case closeNormal:
		return "1000"
	case closeIdle:
		return "1001"
	case closeSlow:
		return "1008"
	case websocket.CloseMessageTooBig:
		return "1009"
	case closeUpstreamError:
		return "1011"
	case closeServerRestart:
		return "1012"
	case closeAbnormal:
		return "1006"
	}
	if code >= 1000 && code < 5000 {
		return "other"
	}
	return "invalid"
}
