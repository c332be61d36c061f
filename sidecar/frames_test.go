package sidecar

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// A frameEvent is one call a frameReader made to its handler.
type frameEvent struct {
	call string // "message", "ping" or "pong"
	kind int
	data []byte
	size int64
}

func (e frameEvent) String() string {
	data := "nil"
	if e.data != nil {
		data = fmt.Sprintf("%.40q", e.data)
	}
	return fmt.Sprintf("%s(kind=%d size=%d data=%s)", e.call, e.kind, e.size, data)
}

func textMsg(s string) frameEvent {
	return frameEvent{"message", websocket.TextMessage, []byte(s), int64(len(s))}
}

func binMsg(p []byte) frameEvent {
	return frameEvent{"message", websocket.BinaryMessage, p, int64(len(p))}
}

func pingEv(s string) frameEvent { return frameEvent{call: "ping", data: []byte(s)} }

var pongEv = frameEvent{call: "pong"}

// frameRecorder is a frameHandler recording every call, with copies of the
// data, which is valid only during the call.
type frameRecorder struct {
	events []frameEvent
	pongs  int
	fail   error // returned by message and ping
}

func (r *frameRecorder) message(kind int, data []byte, size int64) error {
	r.events = append(r.events, frameEvent{"message", kind, bytes.Clone(data), size})
	return r.fail
}

func (r *frameRecorder) ping(data []byte) error {
	r.events = append(r.events, frameEvent{call: "ping", data: bytes.Clone(data)})
	return r.fail
}

func (r *frameRecorder) pong() {
	r.pongs++
	r.events = append(r.events, pongEv)
}

// eventsEqual reports whether got matches want; without keep, messages must
// carry nil data and want's sizes.
func eventsEqual(got, want []frameEvent, keep bool) bool {
	return slices.EqualFunc(got, want, func(g, w frameEvent) bool {
		if g.call != w.call || g.kind != w.kind || g.size != w.size {
			return false
		}
		if g.call == "message" && !keep {
			return g.data == nil
		}
		return bytes.Equal(g.data, w.data)
	})
}

// Outcomes of a feed, as feedOutcome describes its final error.
const (
	noFeedError = ""
	e1002       = "protocol 1002"
	e1009       = "protocol 1009"
	e1007       = "protocol 1007"
)

func closeOutcome(code int, text string) string { return fmt.Sprintf("close %d %q", code, text) }

func feedOutcome(err error) string {
	var pe *protocolError
	var pc *peerClose
	switch {
	case err == nil:
		return noFeedError
	case errors.As(err, &pe):
		return fmt.Sprintf("protocol %d", pe.code)
	case errors.As(err, &pc):
		return closeOutcome(pc.code, pc.text)
	}
	return "other: " + err.Error()
}

// clientFrame is a masked client frame with the shortest length form.
func clientFrame(fin bool, op byte, payload []byte, mask [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x80|127), uint64(n))
	}
	f = append(f, mask[:]...)
	for i, c := range payload {
		f = append(f, c^mask[i&3])
	}
	return f
}

// header64 is a masked frame header with a 64-bit length of n.
func header64(b0 byte, n uint64, mask [4]byte) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{b0, 0x80 | 127}, n), mask[:]...)
}

func closeBody(code uint16, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, code), reason...)
}

// patternBytes is n bytes that are not all alike.
func patternBytes(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*31 + i>>8 + 7)
	}
	return p
}

// A frameCase is a stream of client bytes and what a reader makes of it.
type frameCase struct {
	name    string
	max     int64 // 0 for 1 MiB
	stream  []byte
	want    []frameEvent
	err     string // outcome of the feed
	gorilla string // gorilla's outcome where it deliberately differs
	lax     bool   // gorilla's reader does not check this (UTF-8 of text)
}

func (tc frameCase) limit() int64 {
	if tc.max == 0 {
		return 1 << 20
	}
	return tc.max
}

func frameCases() []frameCase {
	m1 := [4]byte{0x37, 0xfa, 0x21, 0x3d} // RFC 6455 §5.7
	m2 := [4]byte{0xff, 0x00, 0x80, 0x7e}
	frame := func(fin bool, op byte, s string) []byte { return clientFrame(fin, op, []byte(s), m1) }
	ev := func(e ...frameEvent) []frameEvent { return e }
	p1024 := patternBytes(1024)

	cases := []frameCase{
		{name: "text", stream: frame(true, opText, "Hello"), want: ev(textMsg("Hello"))},
		{name: "binary", stream: clientFrame(true, opBinary, []byte{0, 1, 0xfe, 0xff}, m2),
			want: ev(binMsg([]byte{0, 1, 0xfe, 0xff}))},
		{name: "zero mask", stream: clientFrame(true, opText, []byte("abc"), [4]byte{}), want: ev(textMsg("abc"))},
		{name: "empty text", stream: frame(true, opText, ""), want: ev(textMsg(""))},
		{name: "empty binary", stream: frame(true, opBinary, ""), want: ev(binMsg(nil))},
		{name: "125 bytes, 7-bit length", stream: clientFrame(true, opBinary, patternBytes(125), m2),
			want: ev(binMsg(patternBytes(125)))},
		{name: "126 bytes, 16-bit length", stream: clientFrame(true, opBinary, patternBytes(126), m2),
			want: ev(binMsg(patternBytes(126)))},
		{name: "65535 bytes, 16-bit length", stream: clientFrame(true, opBinary, patternBytes(65535), m2),
			want: ev(binMsg(patternBytes(65535)))},
		{name: "65536 bytes, 64-bit length", stream: clientFrame(true, opBinary, patternBytes(65536), m2),
			want: ev(frameEvent{"message", websocket.BinaryMessage, patternBytes(65536), 65536})},
		{name: "message of max", max: 1024, stream: clientFrame(true, opBinary, p1024, m1), want: ev(binMsg(p1024))},
		{name: "several messages",
			stream: slices.Concat(frame(true, opText, "a"), clientFrame(true, opBinary, []byte("bb"), m2), frame(true, opText, "ccc")),
			want:   ev(textMsg("a"), binMsg([]byte("bb")), textMsg("ccc"))},
		{name: "fragmented, ping and pong between fragments",
			stream: slices.Concat(frame(false, opText, "Hel"), clientFrame(true, opPing, []byte("p"), m2),
				clientFrame(false, opContinuation, []byte("lo, "), m2), frame(true, opPong, ""),
				frame(true, opContinuation, "world")),
			want: ev(pingEv("p"), pongEv, textMsg("Hello, world"))},
		{name: "fragmented, empty fragments",
			stream: slices.Concat(frame(false, opBinary, ""), frame(false, opContinuation, ""), frame(true, opContinuation, "\x07")),
			want:   ev(binMsg([]byte{7}))},
		{name: "fragments up to max", max: 1024,
			stream: slices.Concat(clientFrame(false, opBinary, p1024[:512], m1), clientFrame(true, opContinuation, p1024[512:], m2)),
			want:   ev(binMsg(p1024))},
		{name: "pings",
			stream: slices.Concat(frame(true, opPing, "one"), frame(true, opPing, ""), clientFrame(true, opPing, patternBytes(125), m2)),
			want:   ev(pingEv("one"), pingEv(""), pingEv(string(patternBytes(125))))},
		{name: "pongs", stream: slices.Concat(frame(true, opPong, "x"), frame(true, opPong, "")), want: ev(pongEv, pongEv)},
		{name: "incomplete frame", stream: frame(true, opText, "Hello")[:8]},
		{name: "incomplete header", stream: slices.Concat(frame(true, opText, "a"), []byte{0x81}), want: ev(textMsg("a"))},

		{name: "close with code and reason", stream: clientFrame(true, opClose, closeBody(1000, "bye"), m1), err: closeOutcome(1000, "bye")},
		{name: "close without body", stream: frame(true, opClose, ""), err: closeOutcome(1005, "")},
		{name: "close with code only", stream: clientFrame(true, opClose, closeBody(1001, ""), m2), err: closeOutcome(1001, "")},
		{name: "close with UTF-8 reason", stream: clientFrame(true, opClose, closeBody(4000, "déjà vu"), m2), err: closeOutcome(4000, "déjà vu")},
		{name: "close of 125 bytes", stream: clientFrame(true, opClose, closeBody(1000, strings.Repeat("x", 123)), m2),
			err: closeOutcome(1000, strings.Repeat("x", 123))},
		{name: "close between fragments", stream: slices.Concat(frame(false, opText, "a"), frame(true, opClose, "")),
			err: closeOutcome(1005, "")},
		{name: "nothing read after close",
			stream: slices.Concat(frame(true, opText, "a"), frame(true, opClose, ""), frame(true, opText, "b")),
			want:   ev(textMsg("a")), err: closeOutcome(1005, "")},
		{name: "close of 1 byte", stream: frame(true, opClose, "\x03"), err: e1002,
			gorilla: closeOutcome(1005, "")}, // gorilla reads it as no code
		{name: "close reason not UTF-8", stream: clientFrame(true, opClose, closeBody(1000, "\xff\xfe"), m1), err: e1007,
			gorilla: e1002}, // RFC 6455 §7.4.1 names 1007; gorilla says 1002
		{name: "close reason truncated UTF-8", stream: clientFrame(true, opClose, closeBody(1000, "é"[:1]), m1), err: e1007,
			gorilla: e1002},

		{name: "unmasked frame", stream: []byte{0x81, 0x02, 'h', 'i'}, err: e1002},
		{name: "unmasked after a message", stream: slices.Concat(frame(true, opText, "a"), []byte{0x82, 0x00}),
			want: ev(textMsg("a")), err: e1002},
		{name: "continuation without a message", stream: frame(true, opContinuation, "a"), err: e1002},
		{name: "continuation after a message ended", stream: slices.Concat(frame(true, opText, "a"), frame(true, opContinuation, "b")),
			want: ev(textMsg("a")), err: e1002},
		{name: "text inside a fragmented message", stream: slices.Concat(frame(false, opText, "a"), frame(true, opText, "b")), err: e1002},
		{name: "binary inside a fragmented message",
			stream: slices.Concat(frame(false, opText, "a"), frame(true, opPing, "p"), frame(false, opBinary, "b")),
			want:   ev(pingEv("p")), err: e1002},
		// gorilla reports lengths with the MSB set as over its read limit.
		{name: "64-bit length with its MSB set", stream: header64(0x82, 1<<63, m1), err: e1002, gorilla: e1009},
		{name: "64-bit length all ones", stream: header64(0x82, ^uint64(0), m1), err: e1002, gorilla: e1009},

		// Only the header is there: the limit is enforced before the payload.
		{name: "over max, 16-bit length", max: 1024, stream: clientFrame(true, opBinary, patternBytes(1025), m1)[:8], err: e1009},
		{name: "over max, 64-bit length", max: 1024, stream: header64(0x81, 1<<62, m1), err: e1009},
		{name: "over max, 7-bit length", max: 10, stream: frame(true, opText, "hello world")[:6], err: e1009},
		{name: "text with a character split between fragments",
			stream: slices.Concat(frame(false, opText, "d\xc3"), frame(false, opContinuation, ""), frame(true, opContinuation, "\xa9j\xe2\x82\xac")),
			want:   ev(textMsg("d\u00e9j\u20ac"))},
		{name: "text not UTF-8", stream: frame(true, opText, "ab\xff"), err: e1007, lax: true},
		{name: "text ending inside a character", stream: frame(true, opText, "ab\xe2\x82"), err: e1007, lax: true},
		{name: "text with a surrogate", stream: frame(true, opText, "\xed\xa0\x80"), err: e1007, lax: true},
		{name: "text not UTF-8 in a later fragment", stream: slices.Concat(frame(false, opText, "ok"), frame(true, opContinuation, "\xc0\xaf")),
			err: e1007, lax: true},
		{name: "binary need not be UTF-8", stream: frame(true, opBinary, "\xff"), want: ev(binMsg([]byte{0xff}))},
		{name: "fragments over max", max: 1024,
			stream: slices.Concat(clientFrame(false, opBinary, patternBytes(600), m1), clientFrame(true, opContinuation, patternBytes(600), m1)[:8]),
			err:    e1009},
		{name: "fragments over max after a ping", max: 1024,
			stream: slices.Concat(clientFrame(false, opBinary, p1024, m2), frame(true, opPing, "p"), frame(true, opContinuation, "x")),
			want:   ev(pingEv("p")), err: e1009},
	}

	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999} {
		tc := frameCase{name: fmt.Sprintf("close code %d", code),
			stream: clientFrame(true, opClose, closeBody(code, "r"), m2), err: closeOutcome(int(code), "r")}
		if code == 1014 { // registered after gorilla's list was written
			tc.gorilla = e1002
		}
		cases = append(cases, tc)
	}
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535} {
		cases = append(cases, frameCase{name: fmt.Sprintf("close code %d", code),
			stream: clientFrame(true, opClose, closeBody(code, ""), m2), err: e1002})
	}
	for _, rsv := range []byte{0x40, 0x20, 0x10} {
		f := frame(true, opText, "a")
		f[0] |= rsv
		cases = append(cases, frameCase{name: fmt.Sprintf("RSV bit %#x", rsv), stream: f, err: e1002})
	}
	for _, op := range []byte{3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf} {
		cases = append(cases, frameCase{name: fmt.Sprintf("opcode %#x", op), stream: frame(true, op, "a"), err: e1002})
	}
	for _, op := range []byte{opClose, opPing, opPong} {
		cases = append(cases,
			frameCase{name: fmt.Sprintf("control %#x not FIN", op), stream: frame(false, op, ""), err: e1002},
			frameCase{name: fmt.Sprintf("control %#x of 126 bytes", op), stream: clientFrame(true, op, patternBytes(126), m1), err: e1002})
	}
	return cases
}

// A frameCut is a way to cut a stream into pieces for feeding.
type frameCut struct {
	name  string
	sizes []int
}

// frameCuts returns ways to feed n bytes: whole, byte by byte, and in random
// pieces (some empty) from a fixed seed.
func frameCuts(n int, seed uint64) []frameCut {
	out := []frameCut{{"whole", []int{n}}, {"bytes", slices.Repeat([]int{1}, n)}}
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	for _, most := range []int{3, 16, 300} {
		var sizes []int
		for left := n; left > 0; {
			k := min(r.IntN(most+1), left)
			sizes = append(sizes, k)
			left -= k
		}
		out = append(out, frameCut{fmt.Sprintf("random pieces up to %d", most), sizes})
	}
	return out
}

// feedPieces feeds a copy of stream (feed unmasks in place) to a new reader
// in pieces of the sizes given, until an error.
func feedPieces(stream []byte, sizes []int, max int64, keep bool) (*frameRecorder, error) {
	buf := bytes.Clone(stream)
	fr := &frameReader{max: max, keep: keep}
	h := &frameRecorder{}
	for _, n := range sizes {
		if err := fr.feed(buf[:n], h); err != nil {
			return h, err
		}
		buf = buf[n:]
	}
	return h, nil
}

func TestFrames(t *testing.T) {
	for i, tc := range frameCases() {
		t.Run(tc.name, func(t *testing.T) {
			pongs := 0
			for _, e := range tc.want {
				if e.call == "pong" {
					pongs++
				}
			}
			for _, keep := range []bool{true, false} {
				for _, c := range frameCuts(len(tc.stream), uint64(i)) {
					h, err := feedPieces(tc.stream, c.sizes, tc.limit(), keep)
					if got := feedOutcome(err); got != tc.err {
						t.Errorf("keep=%v, %s: error %q, want %q", keep, c.name, got, tc.err)
					}
					if !eventsEqual(h.events, tc.want, keep) {
						t.Errorf("keep=%v, %s: calls\n%v\nwant\n%v", keep, c.name, h.events, tc.want)
					}
					if h.pongs != pongs {
						t.Errorf("keep=%v, %s: %d pongs, want %d", keep, c.name, h.pongs, pongs)
					}
				}
			}
		})
	}
}

func TestFrameHelper(t *testing.T) {
	// RFC 6455 §5.7: a masked "Hello" text frame and pong.
	hello := []byte{0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	if got, want := clientFrame(true, opText, []byte("Hello"), mask), append([]byte{0x81, 0x85}, hello...); !bytes.Equal(got, want) {
		t.Errorf("text frame % x, want % x", got, want)
	}
	if got, want := clientFrame(true, opPong, []byte("Hello"), mask), append([]byte{0x8a, 0x85}, hello...); !bytes.Equal(got, want) {
		t.Errorf("pong frame % x, want % x", got, want)
	}
	// §5.7's 256-byte and 64 KiB binary frames, masked.
	if got, want := clientFrame(true, opBinary, make([]byte, 256), mask)[:4], []byte{0x82, 0xfe, 0x01, 0x00}; !bytes.Equal(got, want) {
		t.Errorf("256-byte header % x, want % x", got, want)
	}
	if got, want := clientFrame(true, opBinary, make([]byte, 65536), mask)[:10], []byte{0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0}; !bytes.Equal(got, want) {
		t.Errorf("64 KiB header % x, want % x", got, want)
	}
}

// hijackedWriter is an http.ResponseWriter handing its connection to gorilla's
// Upgrader.
type hijackedWriter struct{ conn net.Conn }

func (h hijackedWriter) Header() http.Header         { return http.Header{} }
func (h hijackedWriter) Write(p []byte) (int, error) { return len(p), nil }
func (h hijackedWriter) WriteHeader(int)             {}
func (h hijackedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.conn, bufio.NewReadWriter(bufio.NewReader(h.conn), bufio.NewWriter(h.conn)), nil
}

// gorillaRead has gorilla's server side read a client's stream and returns
// the calls and outcome a frameReader would give.
func gorillaRead(t *testing.T, stream []byte, max int64) ([]frameEvent, string) {
	srv, cli := net.Pipe()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // what gorilla writes: the handshake response, close frames
		defer wg.Done()
		io.Copy(io.Discard, cli)
	}()
	go func() {
		defer wg.Done()
		cli.Write(stream) // fails once gorilla stops reading
		cli.Close()
	}()
	defer wg.Wait()
	defer srv.Close()

	req := &http.Request{Method: http.MethodGet, Header: http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}}
	c, err := (&websocket.Upgrader{}).Upgrade(hijackedWriter{srv}, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	var events []frameEvent
	c.SetReadLimit(max)
	c.SetPingHandler(func(s string) error { events = append(events, pingEv(s)); return nil })
	c.SetPongHandler(func(string) error { events = append(events, pongEv); return nil })
	c.SetCloseHandler(func(int, string) error { return nil })
	for {
		kind, data, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			switch {
			case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure: // the stream ended
				return events, noFeedError
			case errors.As(err, &ce):
				return events, closeOutcome(ce.Code, ce.Text)
			case errors.Is(err, websocket.ErrReadLimit):
				return events, e1009
			}
			return events, e1002
		}
		events = append(events, frameEvent{"message", kind, data, int64(len(data))})
	}
}

// TestFramesAgreeWithGorilla checks the cases, and so clientFrame, against
// gorilla's own server-side reader.
func TestFramesAgreeWithGorilla(t *testing.T) {
	for _, tc := range frameCases() {
		t.Run(tc.name, func(t *testing.T) {
			if tc.lax {
				t.Skip("gorilla's reader accepts text that is not UTF-8")
			}
			events, got := gorillaRead(t, tc.stream, tc.limit())
			want := tc.err
			if tc.gorilla != "" {
				want = tc.gorilla
			}
			if got != want {
				t.Errorf("gorilla: error %q, want %q", got, want)
			}
			if !eventsEqual(events, tc.want, true) {
				t.Errorf("gorilla: calls\n%v\nwant\n%v", events, tc.want)
			}
		})
	}
}

// TestFramesFromGorillaClient feeds a frameReader what gorilla's client
// writes.
func TestFramesFromGorillaClient(t *testing.T) {
	srv, cli := net.Pipe()
	raw := make(chan []byte, 1)
	go func() { // a hand-made handshake, then every byte the client sends
		defer srv.Close()
		br := bufio.NewReader(srv)
		req, err := http.ReadRequest(br)
		if err != nil {
			raw <- nil
			return
		}
		sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(srv, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		b, _ := io.ReadAll(br)
		raw <- b
	}()
	d := websocket.Dialer{
		NetDial:          func(string, string) (net.Conn, error) { return cli, nil },
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
		HandshakeTimeout: 10 * time.Second,
	}
	c, _, err := d.Dial("ws://sidecar.test/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var want []frameEvent
	send := func(kind int, p []byte) {
		t.Helper()
		if err := c.WriteMessage(kind, p); err != nil {
			t.Fatal(err)
		}
		want = append(want, frameEvent{"message", kind, p, int64(len(p))})
	}
	control := func(kind int, p []byte) {
		t.Helper()
		if err := c.WriteControl(kind, p, deadline); err != nil {
			t.Fatal(err)
		}
	}

	send(websocket.TextMessage, []byte("hello"))
	send(websocket.TextMessage, nil)
	send(websocket.BinaryMessage, nil)
	// Messages over the 1024-byte write buffer go in several frames.
	for _, n := range []int{125, 126, 1024, 1025, 65535, 65536, 100000} {
		send(websocket.BinaryMessage, patternBytes(n))
	}
	control(websocket.PingMessage, []byte("p1"))
	control(websocket.PongMessage, []byte("x"))
	want = append(want, pingEv("p1"), pongEv)

	// A ping between fragments: the first 1024 bytes leave before it.
	text := []byte(strings.Repeat("fragmented ", 300))
	w, err := c.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(text[:2000]); err != nil {
		t.Fatal(err)
	}
	control(websocket.PingMessage, []byte("between"))
	if _, err := w.Write(text[2000:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want = append(want, pingEv("between"), frameEvent{"message", websocket.TextMessage, text, int64(len(text))})

	control(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"))
	c.Close()
	stream := <-raw
	if stream == nil {
		t.Fatal("no handshake")
	}

	wantErr := closeOutcome(websocket.CloseGoingAway, "bye")
	for _, keep := range []bool{true, false} {
		for _, ct := range frameCuts(len(stream), 42) {
			h, err := feedPieces(stream, ct.sizes, 1<<20, keep)
			if got := feedOutcome(err); got != wantErr {
				t.Errorf("keep=%v, %s: error %q, want %q", keep, ct.name, got, wantErr)
			}
			if !eventsEqual(h.events, want, keep) {
				t.Errorf("keep=%v, %s: calls\n%v\nwant\n%v", keep, ct.name, h.events, want)
			}
		}
	}
}

func TestFramesHandlerError(t *testing.T) {
	boom := errors.New("boom")
	stream := slices.Concat(
		clientFrame(true, opPing, []byte("p"), [4]byte{1, 2, 3, 4}),
		clientFrame(true, opText, []byte("a"), [4]byte{1, 2, 3, 4}))
	for _, tc := range []struct {
		name   string
		stream []byte
		want   []frameEvent
	}{
		{"ping", stream, []frameEvent{pingEv("p")}},
		{"message", stream[7:], []frameEvent{textMsg("a")}},
	} {
		h := &frameRecorder{fail: boom}
		err := (&frameReader{max: 1024, keep: true}).feed(bytes.Clone(tc.stream), h)
		if err != boom {
			t.Errorf("%s: error %v, want %v", tc.name, err, boom)
		}
		if !eventsEqual(h.events, tc.want, true) {
			t.Errorf("%s: calls %v, want %v", tc.name, h.events, tc.want)
		}
	}
}

func FuzzFrames(f *testing.F) {
	for i, tc := range frameCases() {
		if len(tc.stream) <= 4096 {
			f.Add(tc.stream, uint16(i), i%2 == 0)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16, keep bool) {
		const max = 1024
		whole, werr := feedPieces(data, []int{len(data)}, max, keep)
		k := int(split%64) + 1
		var sizes []int
		for n := len(data); n > 0; n -= k {
			sizes = append(sizes, min(k, n))
		}
		pieces, perr := feedPieces(data, sizes, max, keep)
		if fmt.Sprint(werr) != fmt.Sprint(perr) || feedOutcome(werr) != feedOutcome(perr) {
			t.Fatalf("errors: whole %v, in pieces of %d %v", werr, k, perr)
		}
		if o := feedOutcome(werr); o != noFeedError && o != e1002 && o != e1007 && o != e1009 && !strings.HasPrefix(o, "close ") {
			t.Fatalf("unexpected error %v", werr)
		}
		if !eventsEqual(pieces.events, whole.events, true) {
			t.Fatalf("calls: whole\n%v\nin pieces of %d\n%v", whole.events, k, pieces.events)
		}

		// Keeping messages or not changes nothing but their data.
		other, oerr := feedPieces(data, sizes, max, !keep)
		kept, counted := whole, other
		if !keep {
			kept, counted = other, whole
		}
		if feedOutcome(oerr) != feedOutcome(werr) || !eventsEqual(counted.events, kept.events, false) {
			t.Fatalf("kept: %v\n%v\ncounted: %v\n%v", feedOutcome(werr), kept.events, feedOutcome(oerr), counted.events)
		}
		for _, e := range whole.events {
			switch e.call {
			case "message":
				if e.kind != websocket.TextMessage && e.kind != websocket.BinaryMessage || e.size < 0 || e.size > max {
					t.Fatalf("bad message %v", e)
				}
				if keep && int64(len(e.data)) != e.size || !keep && e.data != nil {
					t.Fatalf("keep=%v: message %v", keep, e)
				}
			case "ping":
				if len(e.data) > 125 {
					t.Fatalf("ping of %d bytes", len(e.data))
				}
			}
		}
	})
}

// FuzzUTF8Stream: text checked in pieces is valid exactly when it is valid
// as a whole.
func FuzzUTF8Stream(f *testing.F) {
	f.Add([]byte("d\xc3\xa9j\xe2\x82\xac"), uint8(1))
	f.Add([]byte("ab\xe2\x82"), uint8(3))
	f.Add([]byte("\xed\xa0\x80\xf0\x9f\x98\x80"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		k := int(split%5) + 1
		var u utf8Stream
		ok := true
		for p := data; ok && len(p) > 0; {
			n := min(k, len(p))
			ok = u.valid(p[:n], n == len(p))
			p = p[n:]
		}
		if want := utf8.Valid(data); ok != want {
			t.Fatalf("%q in pieces of %d: valid %v, whole %v", data, k, ok, want)
		}
	})
}
