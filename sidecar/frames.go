package sidecar

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Opcodes (RFC 6455 §5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// A protocolError is a client's violation of RFC 6455 (or of
// websocket.max_message): the connection ends with a close frame carrying
// code and text.
type protocolError struct {
	code int
	text string
}

func (e *protocolError) Error() string { return "websocket: " + e.text }

// A peerClose is the close frame a client sent; code is 1005 when it carried
// none.
type peerClose struct {
	code int
	text string
}

func (e *peerClose) Error() string { return "websocket: close " + e.text }

// frameHandler receives what a frameReader parsed.
type frameHandler interface {
	// message is one complete data message of kind websocket.TextMessage
	// or BinaryMessage and size bytes; data is nil unless the reader keeps
	// messages.
	message(kind int, data []byte, size int64) error
	// ping is a ping frame's payload, valid only during the call.
	ping(data []byte) error
	// pong is a pong frame.
	pong()
}

// frameReader parses the frames a client sends as bytes arrive, in pieces
// of any size, so that no goroutine has to block on a client between
// frames. Its zero value with max set is ready; an idle client's reader
// holds no buffer.
type frameReader struct {
	max  int64 // largest message, websocket.max_message
	keep bool  // assemble messages; otherwise count and discard them

	head    [14]byte // the current frame's header, as far as it arrived
	nhead   int
	payload bool // the header is complete: reading the payload
	op      byte // the current frame's opcode
	fin     bool // the current frame ends its message
	mask    [4]byte
	left    int64  // payload bytes of the current frame still to come
	off     int    // payload bytes of the current frame read, for the mask
	msgOp   byte   // the message being assembled: its opcode, 0 for none
	msgSize int64  // its size so far
	msg     []byte // its bytes so far, when kept
	ctl     []byte // the current control frame's payload
	text    utf8Stream
}

// feed parses p, which it unmasks in place, and hands complete messages and
// control frames to h. It returns a *protocolError when the client broke
// the protocol, a *peerClose when the client sent a close frame, or the
// first error from h; the reader is not to be fed after an error.
func (f *frameReader) feed(p []byte, h frameHandler) error {
	for {
		if !f.payload {
			n, err := f.readHeader(p)
			p = p[n:]
			if err != nil || !f.payload {
				return err // err, or the header is incomplete and p used up
			}
		}
		n := int(min(int64(len(p)), f.left))
		if err := f.readPayload(p[:n]); err != nil {
			return err
		}
		p = p[n:]
		if f.left > 0 {
			return nil // p is used up
		}
		f.payload = false
		if err := f.endFrame(h); err != nil {
			return err
		}
		if len(p) == 0 {
			return nil
		}
	}
}

// readHeader takes header bytes from p and reports how many it used. Once
// the header is complete it checks it and starts the payload.
func (f *frameReader) readHeader(p []byte) (int, error) {
	used := 0
	need := 2
	for {
		for f.nhead < need && used < len(p) {
			f.head[f.nhead] = p[used]
			f.nhead++
			used++
		}
		if f.nhead < need {
			return used, nil
		}
		if need > 2 {
			break
		}
		if f.head[1]&0x80 == 0 {
			return used, &protocolError{websocket.CloseProtocolError, "client frame not masked"}
		}
		switch f.head[1] & 0x7f {
		case 126:
			need = 2 + 2 + 4
		case 127:
			need = 2 + 8 + 4
		default:
			need = 2 + 4
		}
	}
	b0, len7 := f.head[0], f.head[1]&0x7f
	f.fin, f.op = b0&0x80 != 0, b0&0x0f
	var size int64
	switch len7 {
	case 126:
		size = int64(binary.BigEndian.Uint16(f.head[2:4]))
	case 127:
		u := binary.BigEndian.Uint64(f.head[2:10])
		if u>>63 != 0 {
			return used, &protocolError{websocket.CloseProtocolError, "frame length has its most significant bit set"}
		}
		size = int64(u)
	default:
		size = int64(len7)
	}
	copy(f.mask[:], f.head[f.nhead-4:f.nhead])
	f.nhead = 0
	if b0&0x70 != 0 {
		return used, &protocolError{websocket.CloseProtocolError, "reserved bits set without an extension"}
	}
	switch f.op {
	case opClose, opPing, opPong:
		if !f.fin {
			return used, &protocolError{websocket.CloseProtocolError, "fragmented control frame"}
		}
		if size > 125 {
			return used, &protocolError{websocket.CloseProtocolError, "control frame over 125 bytes"}
		}
	case opText, opBinary:
		if f.msgOp != 0 {
			return used, &protocolError{websocket.CloseProtocolError, "new message before the last one ended"}
		}
		f.msgOp = f.op
	case opContinuation:
		if f.msgOp == 0 {
			return used, &protocolError{websocket.CloseProtocolError, "continuation frame without a message"}
		}
	default:
		return used, &protocolError{websocket.CloseProtocolError, "unknown opcode"}
	}
	if f.op < opClose {
		if size > f.max-f.msgSize {
			return used, &protocolError{websocket.CloseMessageTooBig, ""}
		}
		f.msgSize += size
	}
	f.payload, f.left, f.off = true, size, 0
	return used, nil
}

// readPayload unmasks p, the next payload bytes of the current frame, keeps
// them where the frame needs them, and checks that text is UTF-8.
func (f *frameReader) readPayload(p []byte) error {
	for i := range p {
		p[i] ^= f.mask[(f.off+i)&3]
	}
	f.off += len(p)
	f.left -= int64(len(p))
	if f.op >= opClose {
		f.ctl = append(f.ctl, p...)
		return nil
	}
	if f.keep {
		f.msg = append(f.msg, p...)
	}
	if f.msgOp == opText && !f.text.valid(p, f.fin && f.left == 0) {
		return errTextNotUTF8
	}
	return nil
}

// errTextNotUTF8 fails a text message that is not UTF-8 (RFC 6455 §8.1).
var errTextNotUTF8 = &protocolError{websocket.CloseInvalidFramePayloadData, "text message not UTF-8"}

// utf8Stream checks that text arriving in pieces is UTF-8, carrying the
// bytes of a character split between pieces.
type utf8Stream struct {
	carry [utf8.UTFMax]byte
	n     int
}

// valid reports whether p continues valid UTF-8; final says that p ends
// the text, which must then not end inside a character.
func (u *utf8Stream) valid(p []byte, final bool) bool {
	for u.n > 0 && len(p) > 0 && !utf8.FullRune(u.carry[:u.n]) {
		u.carry[u.n] = p[0]
		u.n++
		p = p[1:]
	}
	if u.n > 0 {
		if !utf8.FullRune(u.carry[:u.n]) {
			return !final
		}
		if r, size := utf8.DecodeRune(u.carry[:u.n]); r == utf8.RuneError && size == 1 {
			return false
		}
		u.n = 0
	}
	cut := len(p) // where an incomplete last character starts
	for i := len(p) - 1; i >= 0 && i >= len(p)-utf8.UTFMax+1; i-- {
		if utf8.RuneStart(p[i]) {
			if !utf8.FullRune(p[i:]) {
				cut = i
			}
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return false
	}
	u.n = copy(u.carry[:], p[cut:])
	return !final || u.n == 0
}

// endFrame acts on a complete frame.
func (f *frameReader) endFrame(h frameHandler) error {
	switch f.op {
	case opPing:
		err := h.ping(f.ctl)
		f.ctl = nil // an idle client keeps no buffer
		return err
	case opPong:
		f.ctl = nil
		h.pong()
		return nil
	case opClose:
		return closePayload(f.ctl)
	}
	if !f.fin {
		return nil
	}
	kind, data, size := int(f.msgOp), f.msg, f.msgSize
	f.msgOp, f.msg, f.msgSize = 0, nil, 0
	if f.keep && data == nil {
		data = []byte{} // an empty message, kept
	}
	return h.message(kind, data, size)
}

// closePayload checks a client's close frame payload (RFC 6455 §5.5.1,
// §7.4) and returns it as a *peerClose, or a *protocolError.
func closePayload(p []byte) error {
	switch {
	case len(p) == 0:
		return &peerClose{code: websocket.CloseNoStatusReceived}
	case len(p) == 1:
		return &protocolError{websocket.CloseProtocolError, "close frame of 1 byte"}
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return &protocolError{websocket.CloseProtocolError, "invalid close code"}
	}
	if !utf8.Valid(p[2:]) {
		return &protocolError{websocket.CloseInvalidFramePayloadData, "close reason not UTF-8"} // RFC 6455 §7.4.1
	}
	return &peerClose{code: code, text: string(p[2:])}
}

// validCloseCode reports whether a client may send code in a close frame:
// 1005, 1006 and 1015 are never sent, 1016–2999 are unassigned.
func validCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code < 1000 || code > 1014:
		return false
	}
	return code != 1004 && code != 1005 && code != 1006
}
