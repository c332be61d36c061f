package sidecar

import (
	"encoding/binary"
	"errors"
	"net"
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
	lock chan struct{} // one slot, taken by the write under way

	// Under lock.
	held      []byte // gorilla's 101 response, sent with the first frame
	closeSent bool
	err       error // the first write error: the socket is broken
}

func newWSConn(conn net.Conn, held []byte) wsConn {
	return wsConn{conn: conn, lock: make(chan struct{}, 1), held: held}
}

// errWriteTimeout is a write that could not start before its deadline
// because another was under way.
var errWriteTimeout = errors.New("websocket: write timeout")

// write sends one frame with opcode op by deadline. After a close frame
// it refuses with websocket.ErrCloseSent; after an error it returns that
// error again.
func (w *wsConn) write(op byte, payload []byte, deadline time.Time) error {
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
	var head [10]byte
	head[0] = 0x80 | op // FIN
	n := len(payload)
	size := 2
	switch {
	case n <= 125:
		head[1] = byte(n)
	case n <= 0xffff:
		head[1] = 126
		binary.BigEndian.PutUint16(head[2:], uint16(n))
		size = 4
	default:
		head[1] = 127
		binary.BigEndian.PutUint64(head[2:], uint64(n))
		size = 10
	}
	bufs := net.Buffers{w.held, head[:size], payload}
	w.held = nil
	w.conn.SetWriteDeadline(deadline)
	if _, err := bufs.WriteTo(w.conn); err != nil {
		w.err = err
		return err
	}
	if op == opClose {
		w.closeSent = true
	}
	return nil
}
