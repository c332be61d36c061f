package sidecar

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// wsConn writes a client's frames: server frames (RFC 6455 §5.2, unmasked,
// one frame per message), header and payload in one writev, one write at
// a time. gorilla's Conn did this for every client and cost about 0.7 KiB
// each, with a read buffer that the poller's reads never use; gorilla now
// only upgrades the connection.
type wsConn struct {
	conn net.Conn
	raw  syscall.RawConn // conn's, for writes (rawio.go)
	lock chan struct{}   // one slot, taken by the write under way

	// Under lock.
	held      []byte // gorilla's 101 response, sent with the first frame
	rest      []byte // what tryWrite left unsent of a frame: sent before anything else
	closeSent bool
	err       error     // the first write error: the socket is broken
	deadline  time.Time // the socket's write deadline
}

func newWSConn(conn net.Conn, raw syscall.RawConn, held []byte) wsConn {
	return wsConn{conn: conn, raw: raw, lock: make(chan struct{}, 1), held: held}
}

// errWriteTimeout is a write that could not start before its deadline
// because another was under way.
var errWriteTimeout = errors.New("websocket: write timeout")

// write sends one frame with opcode op by deadline. After a close frame
// it refuses with websocket.ErrCloseSent; after an error it returns that
// error again.
func (w *wsConn) write(op byte, payload []byte, deadline time.Time) error {
	wop := getRawOp()
	defer wop.put()
	var size int
	wop.head, size = frameHeader(op, len(payload)) // in the pooled op: no allocation
	return w.send(wop, op == opClose, deadline, wop.head[:size], payload)
}

// flush sends what tryWrite left unsent of a frame, if any is left.
func (w *wsConn) flush(deadline time.Time) error {
	wop := getRawOp()
	defer wop.put()
	return w.send(wop, false, deadline)
}

// send writes bufs through wop, after the held 101 response and the rest
// of a frame tryWrite began, if they are still there: whatever is written
// next, a control frame included, never lands inside another frame.
func (w *wsConn) send(wop *rawOp, closing bool, deadline time.Time, bufs ...[]byte) error {
	select {
	case w.lock <- struct{}{}:
	default: // another write is under way: wait for it, until deadline
		t := time.NewTimer(time.Until(deadline))
		select {
		case w.lock <- struct{}{}:
			t.Stop()
		case <-t.C:
			return errWriteTimeout
		}
	}
	defer func() { <-w.lock }()
	if w.err != nil {
		return w.err
	}
	if w.closeSent {
		return websocket.ErrCloseSent
	}
	if w.held != nil {
		wop.bufs = append(wop.bufs, w.held)
		w.held = nil
	}
	if w.rest != nil {
		wop.bufs = append(wop.bufs, w.rest)
		w.rest = nil
	}
	wop.bufs = append(wop.bufs, bufs...)
	w.conn.SetWriteDeadline(deadline)
	w.deadline = deadline
	if _, err := wop.writeAll(w.raw); err != nil {
		w.err = err
		return err
	}
	w.closeSent = closing
	return nil
}

// tryWrite writes a data frame only as far as the socket takes it at once,
// never waiting. ok is false when nothing went: another write was under
// way, the socket was full, or the connection is closing or broken; the
// caller leaves the frame to its writer, which finds out which. rest is
// what the socket did not take, if any: the wsConn keeps it, and the next
// write of any kind sends it first (flush, for the writer); the caller
// gets it to count it as queued.
func (w *wsConn) tryWrite(op byte, payload []byte) (rest []byte, ok bool) {
	select {
	case w.lock <- struct{}{}:
	default:
		return nil, false
	}
	defer func() { <-w.lock }()
	if w.err != nil || w.closeSent || w.held != nil || w.rest != nil {
		return nil, false
	}
	if !w.deadline.IsZero() { // an expired deadline would fail the write
		w.conn.SetWriteDeadline(time.Time{})
		w.deadline = time.Time{}
	}
	wop := getRawOp()
	defer wop.put()
	var size int
	wop.head, size = frameHeader(op, len(payload)) // in the pooled op: no allocation
	wop.bufs = append(wop.bufs, wop.head[:size], payload)
	if err := w.raw.Write(wop.try); err != nil || wop.errno != 0 || wop.n <= 0 {
		return nil, false
	}
	if wop.n == size+len(payload) {
		return nil, true
	}
	w.rest = frameRest(wop.head[:size], payload, wop.n)
	return w.rest, true
}

// frameRest is what is left to send of the frame head+payload after its
// first n bytes went: a copy when any of head is left, since head lives in
// a pooled rawOp that the next write reuses.
func frameRest(head, payload []byte, n int) []byte {
	if n >= len(head) {
		return payload[n-len(head):]
	}
	rest := make([]byte, 0, len(head)-n+len(payload))
	return append(append(rest, head[n:]...), payload...)
}

// frameHeader is the header of an unmasked, final frame (RFC 6455 §5.2)
// with opcode op and n bytes of payload, and its length.
func frameHeader(op byte, n int) ([10]byte, int) {
	var head [10]byte
	head[0] = 0x80 | op
	switch {
	case n <= 125:
		head[1] = byte(n)
		return head, 2
	case n <= 0xffff:
		head[1] = 126
		binary.BigEndian.PutUint16(head[2:], uint16(n))
		return head, 4
	}
	head[1] = 127
	binary.BigEndian.PutUint64(head[2:], uint64(n))
	return head, 10
}
