package sidecar

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
)

// maxDrainReply bounds what is read and dropped of a reply longer than
// wanted, to keep its connection.
const maxDrainReply = 64 << 10

// drainTime bounds how long the rest of such a reply is waited for: a
// reply not done by then costs its connection, not the event's time.
const drainTime = 100 * time.Millisecond

// maxRefusalBody bounds the body of a connect refusal passed on to the client.
const maxRefusalBody = 64 << 10

// refusalHeaders are the reply headers a connect refusal passes on.
var refusalHeaders = []string{"Content-Type", "Www-Authenticate", "Retry-After", "Location"}

// upstream sends client events to the backend at upstream.url (see
// UPSTREAM.md): connect synchronously before the upgrade, messages and
// disconnect through each client's outbox (events.go).
type upstream struct {
	srv     *Server
	m       *upstreamMetrics
	target  string // the URL requested; for a unix socket, http://localhost/...
	hc      *http.Client
	timeout time.Duration
	forward []string // request headers connect forwards
	allow   bool     // on_error = "allow"
	queue   int      // upstream.message_queue

	onConnect, onMessage, onDisconnect bool

	slots   chan struct{}      // one per request in flight, upstream.concurrency
	ctx     context.Context    // parent of message and disconnect requests
	cancel  context.CancelFunc // at the shutdown deadline: abandon the rest
	senders sync.WaitGroup     // outbox senders running
}

// newUpstream returns nil when no upstream is configured.
func newUpstream(s *Server) *upstream {
	c := &s.cfg.Upstream
	if c.URL == "" {
		return nil
	}
	socket, target, _ := config.SplitURL(c.URL) // validated
	u := &upstream{
		srv:          s,
		m:            newUpstreamMetrics(s.metrics.reg),
		target:       target,
		hc:           newUpstreamClient(socket, c.Concurrency),
		timeout:      c.Timeout.D(),
		forward:      c.ForwardHeaders,
		allow:        c.OnError == "allow",
		queue:        c.MessageQueue,
		onConnect:    c.Has(config.EventConnect),
		onMessage:    c.Has(config.EventMessage),
		onDisconnect: c.Has(config.EventDisconnect),
		slots:        make(chan struct{}, c.Concurrency),
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	return u
}

// newUpstreamClient returns the one keep-alive client for the backend, over
// the unix socket when socket is set. It does not follow redirects (a 3xx
// to connect refuses the handshake like any non-2xx) nor use proxies.
func newUpstreamClient(socket string, conns int) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 5 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	if socket != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		}
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// reply is the backend's answer to one event.
type reply struct {
	status    int
	header    http.Header
	body      []byte
	truncated bool // the body was longer than the limit asked for
}

func (r reply) ok() bool { return r.status >= 200 && r.status < 300 }

// header returns the headers every event carries.
func (u *upstream) header(id string) http.Header {
	return http.Header{
		"User-Agent":      {"wsgate"},
		"Wsgate-Id":       {id},
		"Wsgate-Push-Url": {strings.Join(u.srv.welcome.urls(id), ",")},
		// Replayable for net/http: resent once on a new connection when a
		// kept-alive one was closed by the backend as we sent on it (an
		// empty value is not sent).
		"Idempotency-Key": nil,
	}
}

// send POSTs one event and reads up to limit bytes of the reply. Waiting
// for a free slot counts against upstream.timeout, like the request itself.
// Errors are counted by reason; a non-2xx reply is counted as "status".
func (u *upstream) send(ctx context.Context, event string, h http.Header, body []byte, limit int64) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	start := time.Now()
	rep, err := u.roundTrip(ctx, event, h, body, limit)
	u.m.latency.WithLabelValues(event).Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		u.m.errors.WithLabelValues(event, errorReason(err)).Inc()
	case !rep.ok():
		u.m.errors.WithLabelValues(event, "status").Inc()
	}
	return rep, err
}

func (u *upstream) roundTrip(ctx context.Context, event string, h http.Header, body []byte, limit int64) (reply, error) {
	select {
	case u.slots <- struct{}{}:
		defer func() { <-u.slots }()
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
	ctx, cancel := context.WithCancel(ctx) // also ends a drain that takes too long
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.target, bytes.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	req.Header = h
	h.Set("Wsgate-Event", event)
	resp, err := u.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 599 {
		// A 101 (net/http returns no other 1xx) would leave Body the
		// switched connection, read without a deadline; a 1xx or an
		// out-of-range status is no answer to relay to a client.
		return reply{}, errBadStatus
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return reply{}, err
	}
	rep := reply{status: resp.StatusCode, header: resp.Header, body: b}
	if int64(len(b)) > limit {
		rep.body, rep.truncated = b[:limit], true
		// Read what is left (bounded) so that the connection is reused.
		stop := time.AfterFunc(drainTime, cancel)
		io.CopyN(io.Discard, resp.Body, maxDrainReply)
		stop.Stop()
	}
	return rep, nil
}

// errBadStatus is a reply whose status is not a final HTTP status (1xx,
// or outside 100..599).
var errBadStatus = errors.New("the upstream answered with a status that is not a final HTTP status")

// errorReason is the metrics label of a failed request.
func errorReason(err error) string {
	switch {
	case errors.Is(err, errBadStatus):
		return "bad_reply"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "unreachable"
}

// asked reports whether handshake r is sent to the backend as connect:
// with the connect event on, for WebSocket handshakes the Origin check
// allows. The rest are left to the upgrader.
func (u *upstream) asked(r *http.Request) bool {
	return u.onConnect && websocket.IsWebSocketUpgrade(r) && u.srv.checkOrigin(r)
}

// connect asks the backend whether to accept the handshake r as client
// id. It returns ok false after refusing the handshake itself, and a
// greeting frame when a 2xx reply had a body.
func (u *upstream) connect(w http.ResponseWriter, r *http.Request, id string) (greeting *frame, ok bool) {
	h := u.header(id)
	for _, name := range u.forward {
		if v := r.Header.Values(name); len(v) > 0 {
			h[http.CanonicalHeaderKey(name)] = v
		}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(u.ctx, cancel)() // the shutdown deadline ends it too
	rep, err := u.send(ctx, config.EventConnect, h, nil, max(maxRefusalBody, u.srv.maxBody))
	switch {
	case err != nil && u.allow:
		return nil, true
	case err != nil:
		status := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusGatewayTimeout
		}
		u.srv.metrics.handshakeRejects.WithLabelValues("upstream").Inc()
		http.Error(w, "wsgate: the upstream did not answer connect ("+errorReason(err)+")", status)
		return nil, false
	case !rep.ok():
		u.srv.metrics.handshakeRejects.WithLabelValues("upstream").Inc()
		for _, k := range refusalHeaders {
			if v := rep.header.Values(k); len(v) > 0 {
				w.Header()[k] = v
			}
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(rep.status)
		w.Write(rep.body[:min(len(rep.body), maxRefusalBody)])
		return nil, false
	case len(rep.body) > 0:
		if f, ok := u.replyFrame(config.EventConnect, rep); ok {
			return &f, true
		}
	}
	return nil, true
}

// replyFrame turns a 2xx reply body into a frame for the client: binary
// for application/octet-stream, else text that must be valid UTF-8, at
// most push.max_body like a push. A bad body is counted and not sent.
func (u *upstream) replyFrame(event string, rep reply) (frame, bool) {
	kind := pushKind(rep.header.Get("Content-Type"))
	if rep.truncated || int64(len(rep.body)) > u.srv.maxBody || !validPayload(kind, rep.body) {
		u.m.errors.WithLabelValues(event, "bad_reply").Inc()
		return frame{}, false
	}
	return frame{kind: kind, data: rep.body, at: u.srv.now()}, true
}

// drain waits for the senders to finish the events queued, which they do
// at once after u.cancel.
func (u *upstream) drain() {
	u.senders.Wait()
	u.cancel()
	u.hc.CloseIdleConnections()
}
