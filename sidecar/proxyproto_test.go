package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/testapp"
)

func TestParseProxyHeader(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string // client address; "" for UNKNOWN; "error" for an error
	}{
		{"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\r\n", "203.0.113.7:51234"},
		{"PROXY TCP6 2001:db8::7 ::1 51234 8080\r\n", "[2001:db8::7]:51234"},
		{"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", "0.0.0.0:0"},
		{"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
			"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
		{"PROXY UNKNOWN\r\n", ""},
		{"PROXY UNKNOWN whatever follows\r\n", ""},
		{"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\n", "error"}, // no CR
		{"PROXY TCP4 203.0.113.7 127.0.0.1 51234\r\n", "error"},    // 5 fields
		{"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080 x\r\n", "error"},
		{"PROXY TCP4  203.0.113.7 127.0.0.1 51234 8080\r\n", "error"}, // two spaces
		{"PROXY TCP4 2001:db8::7 ::1 51234 8080\r\n", "error"},        // v6 as TCP4
		{"PROXY TCP6 203.0.113.7 127.0.0.1 51234 8080\r\n", "error"},  // v4 as TCP6
		{"PROXY TCP6 ::ffff:203.0.113.7 ::1 1 2\r\n", "[::ffff:203.0.113.7]:1"},
		{"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "error"},
		{"PROXY TCP4 203.0.113.7 127.0.0.1 65536 8080\r\n", "error"},
		{"PROXY TCP4 203.0.113.7 127.0.0.1 051234 8080\r\n", "error"},
		{"PROXY TCP4 203.0.113.7 127.0.0.1 -1 8080\r\n", "error"},
		{"PROXY TCP4 203.0.113.07 127.0.0.1 1 8080\r\n", "error"},
		{"PROXY UDP4 203.0.113.7 127.0.0.1 1 2\r\n", "error"},
		{"proxy TCP4 203.0.113.7 127.0.0.1 1 2\r\n", "error"},
		{"PROXY\r\n", "error"},
		{"\r\n", "error"},
		{"GET /ws HTTP/1.1\r\n", "error"},
		{"\r\n\r\n\x00\r\nQUIT\n", "error"}, // version 2's signature
		{"PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n", "error"},
	} {
		got, err := parseProxyHeader([]byte(tc.line))
		switch {
		case tc.want == "error":
			if err == nil || !errors.Is(err, errProxyHeader) {
				t.Errorf("%q: %v, %v; want errProxyHeader", tc.line, got, err)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.line, err)
		case tc.want == "" && got.IsValid(), tc.want != "" && got.String() != tc.want:
			t.Errorf("%q: %v, want %q", tc.line, got, tc.want)
		}
	}
}

// readProxyHeader takes the header and not a byte more; a line without an
// end within the limit is refused without reading more.
func TestReadProxyHeader(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\nGET / HTTP/1.1\r\n"), 4096)
	got, err := readProxyHeader(br)
	if err != nil || got.String() != "192.0.2.1:1" {
		t.Fatalf("%v %v", got, err)
	}
	if rest, _ := io.ReadAll(br); string(rest) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("left %q", rest)
	}
	long := "PROXY UNKNOWN " + strings.Repeat("x", 200)
	if _, err := readProxyHeader(bufio.NewReaderSize(strings.NewReader(long+"\r\n"), 4096)); !errors.Is(err, errProxyHeader) {
		t.Fatalf("long line: %v", err)
	}
	// Bytes that never end a line: refused once 107 came, without reading
	// on to fill the buffer (or waiting for the deadline on a slow client).
	endless := &countingReader{r: iotest.OneByteReader(strings.NewReader("PROXY " + strings.Repeat("x", 8192)))}
	if _, err := readProxyHeader(bufio.NewReaderSize(endless, 4096)); !errors.Is(err, errProxyHeader) || endless.n > maxProxyHeader {
		t.Fatalf("unterminated line: %v after reading %d bytes", err, endless.n)
	}
	if _, err := readProxyHeader(bufio.NewReaderSize(strings.NewReader("PROXY TCP4"), 4096)); !errors.Is(err, io.EOF) {
		t.Fatalf("cut short: %v, want EOF", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzProxyHeader: parsing never panics, reading a line from a stream agrees
// with parsing it, and whatever parses is a well-formed header whose
// client address formats back as it was written.
func FuzzProxyHeader(f *testing.F) {
	for _, s := range []string{
		"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\r\n",
		"PROXY TCP6 2001:db8::7 ::1 51234 8080\r\n",
		"PROXY UNKNOWN\r\n",
		"GET /ws HTTP/1.1\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		got, err := parseProxyHeader(line)
		read, rerr := readProxyHeader(bufio.NewReaderSize(bytes.NewReader(line), 4096))
		if i := bytes.IndexByte(line, '\n'); i == len(line)-1 && (err == nil) != (rerr == nil) {
			t.Fatalf("%q: parse %v, read %v", line, err, rerr)
		}
		if err != nil {
			return
		}
		if read != got {
			t.Fatalf("%q: parse %v, read %v", line, got, read)
		}
		if len(line) > maxProxyHeader || !bytes.HasPrefix(line, []byte("PROXY ")) || !bytes.HasSuffix(line, []byte("\r\n")) {
			t.Fatalf("accepted %q", line)
		}
		if got.IsValid() {
			f := strings.Fields(string(line))
			if ip, err := netip.ParseAddr(f[2]); err != nil || ip != got.Addr() || f[4] != strconv.Itoa(int(got.Port())) {
				t.Fatalf("%q parsed as %v", line, got)
			}
		}
	})
}

// streamServer is a test server behind nginx's stream module: every ws
// connection starts with a PROXY header. Its connect events go to b, with
// X-Real-IP and X-Forwarded-Proto forwarded too.
func streamServer(t *testing.T, b *testapp.App) *testServer {
	return newTestServer(t, func(c *config.Config) {
		c.Nginx.ClientProxy = "stream"
		c.Upstream.URL = b.URL
		c.Upstream.Events = []string{"connect"}
		c.Upstream.ForwardHeaders = []string{"X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto"}
	})
}

// dialProxied opens a WebSocket on ts that starts with header, as nginx's
// stream module with proxy_protocol on sends it.
func dialProxied(t *testing.T, ts *testServer, proxyHeader string, h http.Header) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{
		NetDial: func(_, _ string) (net.Conn, error) {
			c, err := net.Dial("unix", ts.wsPath)
			if err == nil {
				_, err = io.WriteString(c, proxyHeader)
			}
			return c, err
		},
		HandshakeTimeout: 5 * time.Second,
	}
	c, _, err := d.Dial("ws://wsgate/ws", h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Behind the stream module, the client's address is the PROXY header's,
// told upstream as an http location would tell it: X-Real-IP replaced,
// X-Forwarded-For appended to (empty values dropped); X-Forwarded-Proto,
// which the sidecar cannot know, removed.
func TestStreamClientAddress(t *testing.T) {
	b := testapp.Start(t, false, func(w http.ResponseWriter, r *http.Request, e testapp.Event) {
		w.WriteHeader(http.StatusNoContent)
	})
	ts := streamServer(t, b)
	spoof := http.Header{"X-Real-Ip": {"6.6.6.6"}, "X-Forwarded-For": {"10.0.0.1, 10.0.0.2", ""}, "X-Forwarded-Proto": {"https"}}
	for _, tc := range []struct {
		proxy, realIP, xff string
	}{
		{"PROXY TCP4 203.0.113.7 127.0.0.1 51234 8080\r\n", "203.0.113.7", "10.0.0.1, 10.0.0.2, 203.0.113.7"},
		{"PROXY TCP6 2001:db8::7 ::1 51234 8080\r\n", "2001:db8::7", "10.0.0.1, 10.0.0.2, 2001:db8::7"},
		{"PROXY UNKNOWN\r\n", "", "10.0.0.1, 10.0.0.2"},
	} {
		dialProxied(t, ts, tc.proxy, spoof)
		e := b.Next(t)
		if got := e.Header.Get("X-Real-IP"); got != tc.realIP {
			t.Errorf("%q: X-Real-IP %q, want %q", tc.proxy, got, tc.realIP)
		}
		if got := e.Header.Get("X-Forwarded-For"); got != tc.xff {
			t.Errorf("%q: X-Forwarded-For %q, want %q", tc.proxy, got, tc.xff)
		}
		if got := e.Header.Get("X-Forwarded-Proto"); got != "" {
			t.Errorf("%q: the client's X-Forwarded-Proto %q reached the backend", tc.proxy, got)
		}
	}
	dialProxied(t, ts, "PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n", nil)
	if got := b.Next(t).Header.Get("X-Forwarded-For"); got != "192.0.2.1" {
		t.Errorf("no X-Forwarded-For sent: %q, want the client's address", got)
	}
}

// A connection without its PROXY header, or with a bad one, is refused with
// 400, counted and (at most once a minute) logged: it did not come through
// the stream module.
func TestStreamNeedsProxyHeader(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.Nginx.ClientProxy = "stream" })
	const req = upgradeRequest + "\r\n"
	for _, prefix := range []string{"", "PROXY TCP4 1.2.3.4\r\n", "PROXY TCP4 ::1 ::1 1 2\r\n"} {
		if status, _ := rawHandshake(t, ts, prefix+req); status != http.StatusBadRequest {
			t.Errorf("%q: %d, want 400", prefix, status)
		}
	}
	if got := metricValue(t, ts, `wsgate_handshake_rejections_total{reason="bad_handshake"}`); got != 3 {
		t.Errorf("bad_handshake %v, want 3", got)
	}
	if n := strings.Count(ts.log.String(), "without a valid PROXY protocol header"); n != 1 {
		t.Errorf("logged the missing header %d times, want once a minute:\n%s", n, ts.log)
	}
	if status, resp := rawHandshake(t, ts, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"+req); status != http.StatusSwitchingProtocols {
		t.Errorf("with the header: %d %q", status, resp)
	}
}

// A client nginx has no address of (PROXY UNKNOWN) is "unknown" where its
// address would be logged, never the address of nginx's end of the socket.
func TestSetClientAddrUnknown(t *testing.T) {
	r := &http.Request{RemoteAddr: "@", Header: http.Header{"X-Real-Ip": {"6.6.6.6"}}}
	setClientAddr(r, netip.AddrPort{})
	if got := remoteAddr(r); got != "unknown" {
		t.Fatalf("remote %q, want unknown", got)
	}
}
