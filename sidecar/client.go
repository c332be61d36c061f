package sidecar

import (
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"
)

// closeGrace is how long a client has to answer our close frame before its
// socket is closed anyway.
const closeGrace = 2 * time.Second

// Close codes wsgate sends (RFC 6455 §7.4.1, IANA registry).
const (
	closeNormal        = websocket.CloseNormalClosure   // DELETE on the push URL
	closeIdle          = websocket.CloseGoingAway       // nothing received for idle_timeout
	closeSlow          = websocket.ClosePolicyViolation // send queue full, slow_client = "close"
	closeServerRestart = websocket.CloseServiceRestart  // shutdown
	closeAbnormal      = websocket.CloseAbnormalClosure // no close frame (never sent on the wire)
)

// frame is one queued message, or the close that ends a client's queue.
type frame struct {
	kind int    // websocket.TextMessage, BinaryMessage or CloseMessage
	data []byte // payload; for CloseMessage the formatted close payload
	at   int64  // arrival on the server clock, for the latency histogram
	// free is set on the welcome and connect's greeting, queued before the
	// client is registered: they do not count against send_queue and
	// send_queue_bytes, which bound what pushes may queue.
	free bool
}

// welcomeFrame marks the welcome in frame.at: not a push, not counted.
const welcomeFrame = -1

// message is 1 for a frame that carries a message for the client (a push or
// an upstream reply), 0 for the welcome, the close and the rest of a frame
// begun by push (counted then).
func (f frame) message() int {
	if f.kind == websocket.CloseMessage || f.kind == kindRest || f.at == welcomeFrame {
		return 0
	}
	return 1
}

// enqueueResult is what became of a push.
type enqueueResult int

const (
	queued enqueueResult = iota
	gone                 // the client is closing or closed
	full                 // the send queue is at its limit
)

// client is one WebSocket connection.
type client struct {
	id     string
	srv    *Server
	ws     wsConn
	remote string
	start  time.Time

	// Last activity on the server clock; written by the reader, the writer
	// and keepalive.
	lastRecv atomic.Int64
	lastSend atomic.Int64
	lastPing atomic.Int64 // a ping was last tried, by tick
	welcomed atomic.Bool  // the welcome was written: keepalive may write now
	in, out  atomic.Int64 // messages, for the close log line

	// Set before the client is registered; stopped by finish.
	keepalive *time.Timer

	// The read side: the socket, for reads that never block, and the
	// frame parser, used by one read at a time.
	raw     syscall.RawConn
	fd      int32 // the socket's fd when it was registered with the poller
	reading atomic.Bool
	ended   atomic.Bool // end ran
	debug   bool        // log its close: debug logging was on when it connected
	fr      frameReader

	outbox outbox // messages and disconnect for the upstream

	mu        sync.Mutex  // guards the fields below
	queue     []frame     // frames not yet taken by the writer
	pending   int         // frames queued or being written, free ones excepted
	bytes     int64       // their payload bytes
	writing   bool        // a writer goroutine owns the write side
	closing   bool        // a close is queued or sent, or the reader ended: no more pushes
	closeSent bool        // a close frame is being written, or was (once only)
	closeDone bool        // and was written whole: the client can get it
	closeCode int         // the code we sent, if closeDone
	closeText string      // and its reason
	grace     *time.Timer // cuts the connection closeGrace after closeSent
	done      bool
}

// push queues a data frame, starting the writer when none is running.
func (c *client) push(f frame) enqueueResult {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return gone
	}
	if c.pending >= c.srv.queueLen || c.bytes+int64(len(f.data)) > c.srv.queueBytes {
		c.mu.Unlock()
		return full
	}
	if c.writing {
		c.enqueueLocked(f)
		return queued
	}
	// Idle: this goroutine writes f if the socket takes it at once, which
	// spares a writer goroutine and its wake-up; a writer sends what the
	// socket did not take, first, and whatever was queued meanwhile.
	c.writing = true
	c.mu.Unlock()
	rest, ok := c.ws.tryWrite(byte(f.kind), f.data)
	if ok {
		c.sent(f) // once its first bytes went, as for any write
	}
	c.mu.Lock()
	switch {
	case !ok:
		c.requeueLocked(f)
	case rest != nil: // the wsConn holds it, the writer flushes it; queued bytes count it
		c.requeueLocked(frame{kind: kindRest, data: rest})
	case len(c.queue) == 0:
		c.writing = false
		c.mu.Unlock()
		return queued
	}
	c.mu.Unlock()
	go c.writeLoop()
	return queued
}

// kindRest is a frame.kind: the rest of a frame that push began to write,
// which the wsConn holds, to be flushed; data is that rest, for the count
// of queued bytes only.
const kindRest = 0x100

// requeueLocked puts f in front of the queue.
func (c *client) requeueLocked(f frame) {
	c.queue = slices.Insert(c.queue, 0, f)
	c.pending++
	c.bytes += int64(len(f.data))
	c.srv.metrics.queued.Inc()
}

// closeQueued queues a close frame behind the frames already queued, so a
// client sees every push accepted before it. It reports false when the
// client was already closing.
func (c *client) closeQueued(code int, reason string) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.closing = true
	c.enqueueLocked(frame{kind: websocket.CloseMessage, data: websocket.FormatCloseMessage(code, reason)})
	return true
}

// enqueueLocked appends f and unlocks c.mu.
func (c *client) enqueueLocked(f frame) {
	c.queue = append(c.queue, f)
	c.pending++
	c.bytes += int64(len(f.data))
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	c.srv.metrics.queued.Inc()
	if start {
		go c.writeLoop()
	}
}

// errStop ends the writer after it wrote a close frame.
var errStop = errors.New("close frame written")

// writeLoop writes queued frames in order until the queue is empty, then
// exits; an idle client has no writer goroutine. After a write error or a
// close frame the remaining frames are dropped: the client cannot get them.
func (c *client) writeLoop() {
	var batch []frame
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.queue = nil // an idle client keeps no queue memory
			c.writing = false
			c.mu.Unlock()
			return
		}
		batch, c.queue = c.queue, batch[:0]
		c.mu.Unlock()

		var err error
		var bytes int64
		counted, lost := 0, 0
		for _, f := range batch {
			if !f.free {
				counted++
				bytes += int64(len(f.data))
			}
			if err == nil {
				if err = c.write(f); err == nil {
					continue
				}
			}
			lost += f.message()
		}
		c.srv.metrics.queued.Sub(float64(len(batch)))
		clear(batch)

		c.mu.Lock()
		c.pending -= counted
		c.bytes -= bytes
		if err != nil {
			c.closing = true
			dropped := len(c.queue)
			for _, f := range c.queue {
				lost += f.message()
			}
			c.queue, c.pending, c.bytes, c.writing = nil, 0, 0, false
			c.mu.Unlock()
			c.srv.metrics.queued.Sub(float64(dropped))
			c.srv.metrics.undelivered.Add(float64(lost))
			if err != errStop && err != websocket.ErrCloseSent {
				c.cut() // broken or stuck: the read that sees the end cleans up
			}
			return
		}
		c.mu.Unlock()
	}
}

// write sends one frame, with a write deadline.
func (c *client) write(f frame) error {
	if f.kind == websocket.CloseMessage {
		c.sendClose(f.data)
		return errStop
	}
	deadline := time.Now().Add(c.srv.writeTimeout)
	if f.kind == kindRest {
		return c.ws.flush(deadline) // counted when it began
	}
	if err := c.ws.write(byte(f.kind), f.data, deadline); err != nil {
		return err
	}
	c.sent(f)
	return nil
}

// sent counts a frame written (or begun) as sent.
func (c *client) sent(f frame) {
	now := c.srv.now()
	c.lastSend.Store(now)
	if f.at == welcomeFrame {
		c.welcomed.Store(true)
		return
	}
	c.out.Add(1)
	m := c.srv.metrics
	m.messagesOut.Inc()
	m.bytesOut.Add(float64(len(f.data)))
	m.pushLatency.Observe(time.Duration(now - f.at).Seconds())
}

// closeNow closes the client at once, ahead of anything queued: for idle
// clients and slow ones. It may block for up to closeGrace.
func (c *client) closeNow(code int, reason string) {
	c.markClosing()
	c.sendClose(websocket.FormatCloseMessage(code, reason))
}

// markClosing takes no more pushes; it reports whether c was not closing yet.
func (c *client) markClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	was := c.closing
	c.closing = true
	return !was
}

// sendClose writes a close frame once and gives the client closeGrace to
// answer it; the reader then ends and finish closes the socket.
func (c *client) sendClose(payload []byte) {
	c.mu.Lock()
	if c.closeSent {
		c.mu.Unlock()
		return
	}
	c.closeSent = true
	c.closeCode = int(payload[0])<<8 | int(payload[1])
	c.closeText = string(payload[2:])
	c.mu.Unlock()
	deadline := time.Now().Add(closeGrace)
	err := c.ws.write(opClose, payload, deadline) // a stuck writer makes this time out
	c.mu.Lock()
	c.closeDone = err == nil
	if !c.done && err == nil {
		c.grace = time.AfterFunc(closeGrace, c.cut)
	}
	c.mu.Unlock()
	if err != nil {
		c.cut() // no answer can come to a close that never went out
	}
}

// readBufs are the buffers client reads go through, one per read under way.
var readBufs = sync.Pool{New: func() any { return new([4096]byte) }}

// readable runs when the poller saw input (or the end) on c's socket. It
// parses what is there without blocking, re-arms the socket, and returns;
// when the connection ended it releases the client.
func (c *client) readable() {
	if !c.reading.CompareAndSwap(false, true) {
		return // a read is under way and re-arms when it is done
	}
	buf := readBufs.Get().(*[4096]byte)
	err := c.readAvailable(buf[:])
	readBufs.Put(buf)
	c.reading.Store(false) // before re-arming: the next event may come at once
	if err == nil {
		if err = c.srv.poller.rearm(c); err == nil {
			return
		}
	}
	c.srv.end(c, err)
}

// readAvailable reads and parses until the socket has nothing more.
func (c *client) readAvailable(buf []byte) error {
	op := getRawOp(buf)
	defer op.put()
	for {
		if cerr := c.raw.Read(op.readNow); cerr != nil {
			return cerr
		}
		n, errno := op.n, op.errno
		switch {
		case n > 0:
			if err := c.fr.feed(buf[:n], c); err != nil {
				return err
			}
			if n < len(buf) {
				return nil // drained; anything newer triggers the poller again
			}
		case errno == unix.EAGAIN:
			return nil
		case errno == unix.EINTR:
		case errno != 0:
			return errno
		default:
			return io.EOF
		}
	}
}

// message is a client message: queued for the upstream when it takes
// "message" events, else counted and discarded.
func (c *client) message(kind int, data []byte, size int64) error {
	c.lastRecv.Store(c.srv.now())
	c.in.Add(1)
	m := c.srv.metrics
	m.messagesIn.Inc()
	m.bytesIn.Add(float64(size))
	if up := c.srv.up; up != nil && up.onMessage {
		up.message(c, kind, data)
		return nil
	}
	m.discarded.Inc()
	return nil
}

// ping answers a client's ping.
func (c *client) ping(data []byte) error {
	c.lastRecv.Store(c.srv.now())
	err := c.ws.write(opPong, data, time.Now().Add(c.srv.writeTimeout))
	if err == websocket.ErrCloseSent {
		return nil
	}
	return err
}

// pong is an answer to our keepalive ping.
func (c *client) pong() { c.lastRecv.Store(c.srv.now()) }

// cut ends the connection from our side without closing the socket: the
// shutdown makes the socket readable, and the read that finds its end
// releases the client, as when the client hangs up.
func (c *client) cut() {
	_ = c.control(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RDWR) })
}

// control runs f with the socket's fd, which stays open during the call.
func (c *client) control(f func(fd int) error) error {
	var err error
	if cerr := c.raw.Control(func(fd uintptr) { err = f(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}

// tick is the keepalive timer; keepalive decides what it does.
func (c *client) tick() {
	s := c.srv
	now := s.now()
	// The welcome is the first frame (SPEC §4): until it is written,
	// neither a ping nor an idle close may overtake it, and the timer only
	// looks again. A welcome that cannot be written fails at
	// write_timeout and ends the connection.
	next := int64(s.pingInterval)
	if c.welcomed.Load() {
		recv := c.lastRecv.Load()
		if c.outbox.waiting.Load() { // reading paused for the upstream
			recv = now
		}
		var closeIt, ping bool
		closeIt, ping, next = keepalive(now, recv, c.lastSend.Load(), c.lastPing.Load(), int64(s.pingInterval), int64(s.idleTimeout))
		if closeIt {
			c.closeNow(closeIdle, "idle timeout")
			return
		}
		if ping {
			c.lastPing.Store(now) // tried: failed or not, the next try waits an interval
			if c.ws.write(opPing, nil, time.Now().Add(s.writeTimeout)) == nil {
				c.lastSend.Store(now)
			}
		}
	}
	c.mu.Lock()
	if !c.done {
		c.keepalive.Reset(time.Duration(next))
	}
	c.mu.Unlock()
}

// keepalive decides, at now, for a client that last received a frame at
// recv, last sent one at sent and was last pinged (or a ping was tried) at
// pinged, all on the server clock: whether to close it, as nothing came
// for idle; whether to ping it; and in how long to look again. A ping goes
// after interval with nothing either way, and also once nothing came for
// idle - interval, since pushes alone never bring a pong: a client that
// only receives would otherwise be closed while busy. Either way at most
// one ping goes per interval, so a ping that cannot be written (the close
// was sent, the socket broke) is not tried again at once.
func keepalive(now, recv, sent, pinged, interval, idle int64) (closeIt, ping bool, next int64) {
	if now-recv >= idle {
		return true, false, 0
	}
	quiet := max(recv, sent, pinged)
	ping = now-quiet >= interval || now-recv >= idle-interval && now-pinged >= interval
	if ping {
		quiet, pinged = now, now
	}
	next = min(recv+idle, quiet+interval, max(recv+idle-interval, pinged+interval)) - now
	return false, ping, next
}

// finish releases the client once its socket ended or it broke the
// protocol, and returns the close code and reason to report: the ones we
// sent, else the client's, else 1006 with the reason of a close we could
// not send (a slow client's, say).
func (c *client) finish(readErr error) (int, string) {
	c.mu.Lock()
	c.closing, c.done = true, true
	code, reason := c.closeCode, c.closeText
	sent := c.closeDone
	grace := c.grace
	c.mu.Unlock()
	c.keepalive.Stop()
	if grace != nil {
		grace.Stop()
	}
	c.srv.reg.remove(c)
	c.srv.poller.remove(c)
	c.ws.conn.Close()
	if sent {
		return code, reason
	}
	var pc *peerClose
	if errors.As(readErr, &pc) {
		return pc.code, pc.text
	}
	return closeAbnormal, reason
}
