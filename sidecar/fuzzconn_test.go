package sidecar

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// FuzzPushConn sends the same bytes, then the end of the connection, to a
// push socket (the fast path, handing over to net/http what it does not
// take) and to a plain net/http server with the same handler and timeouts,
// and compares what each answered and which messages reached the client.
// "ID" in the input stands for the connected client's id.
func FuzzPushConn(f *testing.F) {
	for _, s := range fastPushSeeds {
		f.Add([]byte(strings.ReplaceAll(s, "AAAAAAAAAAAAAAAAAAAAAA", "ID")))
	}
	f.Add([]byte("POST /ws/ID HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n\r\na\r\nPOST /ws/ID HTTP/1.1\r\nHost: p\r\nContent-Length: 1\r\n\r\nb"))
	f.Add([]byte("POST /ws/ID HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nab"))
	f.Add([]byte("POST /ws/AAAAAAAAAAAAAAAAAAAAAB HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nab")) // no such client
	f.Add([]byte("BAD\r\n"))
	timeouts := pushTimeouts{idle: time.Second, header: time.Second, read: time.Second, write: time.Second}
	// The server logs from its goroutines, which may not call f.Log
	// during the fuzzing.
	ts := newTestServer(quietTB{f}, nil, func(s *Server) { s.pushTimeouts = timeouts })
	ws, id := ts.connect(f)
	refPath := filepath.Join(f.TempDir(), "ref.sock")
	l, err := net.Listen("unix", refPath)
	if err != nil {
		f.Fatal(err)
	}
	ref := &http.Server{Handler: http.HandlerFunc(ts.servePush), ReadHeaderTimeout: timeouts.header,
		ReadTimeout: timeouts.read, WriteTimeout: timeouts.write, IdleTimeout: timeouts.idle, MaxHeaderBytes: 16 << 10}
	go ref.Serve(l)
	f.Cleanup(func() { ref.Close() })
	msgs := make(chan string, 1000)
	go func() {
		defer close(msgs)
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			msgs <- string(m)
		}
	}()
	// delivered returns the messages the client got since the last call,
	// up to a marker pushed after them.
	marks := 0
	delivered := func(t *testing.T) []string {
		marks++
		marker := fmt.Sprintf("marker %d", marks)
		exchange(ts.pushPath, []byte(fmt.Sprintf("POST /ws/%s HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n%s", id, len(marker), marker)))
		var got []string
		for m := range msgs {
			if m == marker {
				return got
			}
			got = append(got, m)
		}
		t.Fatal("the client is gone")
		return nil
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		raw = bytes.ReplaceAll(raw, []byte("ID"), []byte(id))
		lower := bytes.ToLower(raw)
		for _, s := range []string{"delete", "/batch", "/metrics", "/status"} {
			if bytes.Contains(lower, []byte(s)) {
				return // closes the client, or answers what changes between the two
			}
		}
		fast, fastMsgs := exchange(ts.pushPath, raw), delivered(t)
		std, stdMsgs := exchange(refPath, raw), delivered(t)
		// Whether an answer says Connection: close may differ, as may a
		// last 400 to bytes left after the requests answered (net/http
		// takes a few as the start of a request, or the end of a body):
		// neither changes what was delivered.
		norm := func(s string) string {
			s = strings.NewReplacer("close=true", "close=?", "close=false", "close=?").Replace(s)
			const bad = `400 [Content-Type=text/plain; charset=utf-8] close=? body="400 Bad Request"; `
			if strings.HasSuffix(s, bad) && len(s) > len(bad) {
				s = strings.TrimSuffix(s, bad)
			}
			return s
		}
		if norm(fast) != norm(std) || fmt.Sprint(fastMsgs) != fmt.Sprint(stdMsgs) {
			t.Fatalf("%q\nfast path: %s %q\nnet/http:  %s %q", raw, fast, fastMsgs, std, stdMsgs)
		}
	})
}

// exchange sends raw on a new connection to the unix socket at path, ends
// its writing side, and returns a summary of the answers read until the
// server closed it.
func exchange(path string, raw []byte) string {
	c, err := net.Dial("unix", path)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(raw)
	c.(*net.UnixConn).CloseWrite()
	out, _ := io.ReadAll(c)
	br := bufio.NewReader(bytes.NewReader(out))
	var sb strings.Builder
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if rest, _ := io.ReadAll(br); len(rest) > 0 {
				fmt.Fprintf(&sb, "[unparsed %v %q]", err, rest)
			}
			return sb.String()
		}
		body, _ := io.ReadAll(resp.Body)
		var hs []string
		for k, v := range resp.Header {
			if k != "Date" && k != "Content-Length" {
				hs = append(hs, k+"="+strings.Join(v, ","))
			}
		}
		sort.Strings(hs)
		fmt.Fprintf(&sb, "%d %v close=%v body=%q; ", resp.StatusCode, hs, resp.Close, body)
	}
}

// quietTB is a testing.TB whose Log does nothing.
type quietTB struct{ testing.TB }

func (quietTB) Log(...any) {}
