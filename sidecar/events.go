package sidecar

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
)

// closeUpstreamError closes a client whose message failed (5xx, timeout,
// unreachable) with upstream.on_error = "refuse".
const closeUpstreamError = websocket.CloseInternalServerErr

// Disconnect events are retried after a transport error or a 5xx reply,
// disconnectTries times in all, waiting retryDelay, then twice that.
const (
	disconnectTries = 3
	retryDelay      = 200 * time.Millisecond
)

// event is a client message or the client's disconnect, queued for the
// upstream.
type event struct {
	kind     int    // message: websocket.TextMessage or BinaryMessage; 0: disconnect
	data     []byte // message payload
	code     int    // disconnect: close code
	reason   string // disconnect: close reason
	duration time.Duration
}

// outbox is one client's events on their way to the upstream, in order. A
// sender goroutine runs only while it holds events, so an idle client has
// none. Its mutex is a leaf: nothing else is locked while holding it.
type outbox struct {
	mu      sync.Mutex
	events  []event
	sending bool          // a sender goroutine owns the outbox
	closed  bool          // the client is being closed for the upstream's sake: take no more messages
	room    chan struct{} // made by a reader waiting for room, closed by the sender
	waiting atomic.Bool   // the reader waits for room
}

// message queues a client message. While the client's outbox is full the
// reader waits here, so that it stops reading and TCP pushes back on the
// client: the sender frees a place within upstream.timeout, and the
// shutdown deadline ends the wait too, dropping the message.
func (u *upstream) message(c *client, kind int, data []byte) {
	o := &c.outbox
	for {
		o.mu.Lock()
		if o.closed {
			o.mu.Unlock()
			u.m.dropped.WithLabelValues("closed").Inc()
			return
		}
		if len(o.events) < u.queue {
			u.enqueueLocked(c, event{kind: kind, data: data})
			return
		}
		if o.room == nil {
			o.room = make(chan struct{})
		}
		room := o.room
		o.mu.Unlock()
		o.waiting.Store(true) // not idle: keepalive does not close it
		select {
		case <-room:
		case <-u.ctx.Done():
			o.waiting.Store(false)
			u.m.dropped.WithLabelValues("closed").Inc()
			return
		}
		o.waiting.Store(false)
		c.lastRecv.Store(u.srv.now())
	}
}

// disconnect queues the disconnect event behind the client's messages.
func (u *upstream) disconnect(c *client, code int, reason string) {
	c.outbox.mu.Lock()
	u.enqueueLocked(c, event{code: code, reason: reason, duration: time.Since(c.start)})
}

// enqueueLocked appends e, unlocks the outbox and starts a sender if none runs.
func (u *upstream) enqueueLocked(c *client, e event) {
	o := &c.outbox
	o.events = append(o.events, e)
	start := !o.sending
	o.sending = true
	o.mu.Unlock()
	u.m.queued.Inc()
	if start {
		u.senders.Add(1)
		go u.run(c)
	}
}

// run sends c's events in order until its outbox is empty.
func (u *upstream) run(c *client) {
	defer u.senders.Done()
	o := &c.outbox
	for {
		o.mu.Lock()
		if len(o.events) == 0 {
			o.events, o.sending = nil, false
			o.mu.Unlock()
			return
		}
		e := o.events[0]
		o.events[0] = event{}
		o.events = o.events[1:]
		o.signalRoom()
		o.mu.Unlock()
		u.m.queued.Dec()
		if e.kind != 0 {
			u.sendMessage(c, e)
		} else {
			u.sendDisconnect(c, e)
		}
	}
}

// sendMessage POSTs one client message. A 2xx reply's body goes back to the
// client. A 4xx reply drops the message: the backend refused it. A 5xx
// reply, a timeout or an unreachable backend drops it too and, with
// on_error = "refuse", closes the client with 1011 and drops the messages
// still queued, so that no message reaches the backend after a lost one.
func (u *upstream) sendMessage(c *client, e event) {
	h := u.header(c.id)
	h.Set("Content-Type", "text/plain; charset=utf-8")
	if e.kind == websocket.BinaryMessage {
		h.Set("Content-Type", "application/octet-stream")
	}
	rep, err := u.send(u.ctx, config.EventMessage, h, e.data, u.srv.maxBody)
	switch {
	case err == nil && rep.ok():
		u.m.forwarded.Inc()
		if len(rep.body) > 0 {
			if f, ok := u.replyFrame(config.EventMessage, rep); ok {
				u.srv.deliver(c, f)
			}
		}
	case err == nil && rep.status < 500:
		u.m.dropped.WithLabelValues("refused").Inc()
	case u.ctx.Err() != nil: // abandoned at the shutdown deadline
		u.m.dropped.WithLabelValues("closed").Inc()
	default:
		u.m.dropped.WithLabelValues("upstream_error").Inc()
		if !u.allow {
			u.refuse(c)
			go c.closeNow(closeUpstreamError, "upstream error")
		}
	}
}

// signalRoom wakes a reader waiting for room; o.mu is held.
func (o *outbox) signalRoom() {
	if o.room != nil {
		close(o.room)
		o.room = nil
	}
}

// refuse makes c's outbox take no more messages and drops the ones queued;
// a disconnect event stays.
func (u *upstream) refuse(c *client) {
	o := &c.outbox
	o.mu.Lock()
	o.closed = true
	kept := o.events[:0]
	for _, e := range o.events {
		if e.kind == 0 {
			kept = append(kept, e)
		}
	}
	dropped := len(o.events) - len(kept)
	clear(o.events[len(kept):])
	o.events = kept
	o.signalRoom()
	o.mu.Unlock()
	u.m.queued.Sub(float64(dropped))
	u.m.dropped.WithLabelValues("closed").Add(float64(dropped))
}

// sendDisconnect POSTs the disconnect event, retrying a transport error or
// a 5xx reply; shutdown's deadline cancels it.
func (u *upstream) sendDisconnect(c *client, e event) {
	h := u.header(c.id)
	h.Set("Wsgate-Close-Code", strconv.Itoa(e.code))
	h.Set("Wsgate-Close-Reason", percentEncode(e.reason))
	h.Set("Wsgate-Duration", strconv.FormatFloat(e.duration.Seconds(), 'f', 3, 64))
	for try := 1; ; try++ {
		rep, err := u.send(u.ctx, config.EventDisconnect, h.Clone(), nil, 0)
		if err == nil && rep.status < 500 || try == disconnectTries {
			return
		}
		select {
		case <-time.After(retryDelay << (try - 1)):
		case <-u.ctx.Done():
			return
		}
	}
}

// percentEncode makes s a header value: bytes outside printable ASCII, and
// '%', become %XX, so any UTF-8 close reason decodes back exactly.
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '%' || c == ' ' && (i == 0 || i == len(s)-1) {
			b.WriteString("%" + strings.ToUpper(strconv.FormatUint(uint64(c)|0x100, 16)[1:]))
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// validPayload reports whether data can be sent as a frame of kind: text
// must be valid UTF-8.
func validPayload(kind int, data []byte) bool {
	return kind == websocket.BinaryMessage || utf8.Valid(data)
}
