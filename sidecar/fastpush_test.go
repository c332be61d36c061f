package sidecar

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

var fastPushSeeds = []string{
	"POST /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Basic QUFBQUFBQUFBQUFBQUFBQUFBQUFBQTo=\r\nContent-Length: 5\r\n\r\nhello",
	"POST /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n\xff\xfe",
	"DELETE /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /ws/ HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nauthorization: basic Og==\r\nconnection: keep-alive\r\n\r\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
	"POST /ws/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	"POST /ws/a%41 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	"POST /ws?x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	"POST /ws HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\n X: folded\r\nContent-Length: 0\r\n\r\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
	"POST /ws HTTP/1.1\nHost: x\nContent-Length: 0\n\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n",
	// Refused by net/http before the header ends: not waited for.
	"BAD\r\n",
	"POST /ws HTTP/1.1\r\nHost: x\r\nno colon\r\n",
}

// The fast path's parser takes the requests it should and leaves the
// others to net/http.
func TestParseFastPush(t *testing.T) {
	want := []parseResult{parsed, parsed, parsed, parsed, notFast, notFast, notFast, notFast, notFast, notFast, notFast, notFast, notFast, notFast, needMore, notFast, notFast}
	for i, seed := range fastPushSeeds {
		req, n, res := parseFastPush([]byte(seed), "/ws", 1<<20)
		if res != want[i] {
			t.Errorf("%q: %v, want %v", seed, res, want[i])
			continue
		}
		if res == parsed && (n != strings.Index(seed, "\r\n\r\n")+4 || req.id != "AAAAAAAAAAAAAAAAAAAAAA" && i != 3) {
			t.Errorf("%q: %+v, header %d bytes", seed, req, n)
		}
	}
	if req, _, _ := parseFastPush([]byte(fastPushSeeds[1]), "/ws", 1<<20); !req.close || req.contentType != "application/octet-stream" || req.contentLength != 2 {
		t.Errorf("%+v", req)
	}
}

// FuzzFastPush: whatever the fast path's parser takes, net/http reads the
// same way (method, id, content type and length, Connection: close, where
// the header ends), and would serve, not refuse.
func FuzzFastPush(f *testing.F) {
	for _, seed := range fastPushSeeds {
		f.Add([]byte(seed))
	}
	const max = 64
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, n, res := parseFastPush(raw, "/ws", max)
		if res == needMore {
			// net/http too must want more of its whole lines: not have
			// read them as a request, nor refused them already. (A line
			// cut short it would take whole at the reader's error.)
			more := errors.New("more to come")
			whole := raw[:bytes.LastIndexByte(raw, '\n')+1]
			in := io.MultiReader(bytes.NewReader(whole), iotest.ErrReader(more))
			if _, err := http.ReadRequest(bufio.NewReader(in)); !errors.Is(err, more) {
				t.Fatalf("fast path waits for more of what net/http says %v to: %q", err, raw)
			}
		}
		if res != parsed {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(raw), 2*maxFastHeader)
		r, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("fast path took what net/http refuses (%v): %q", err, raw)
		}
		id, ok := pushID(r, "/ws")
		switch {
		case !ok || id != req.id:
			t.Fatalf("id %q %v, fast path %q: %q", id, ok, req.id, raw)
		case r.Method != req.method:
			t.Fatalf("method %q, fast path %q", r.Method, req.method)
		case r.Header.Get("Content-Type") != req.contentType:
			t.Fatalf("content type %q, fast path %q", r.Header.Get("Content-Type"), req.contentType)
		case r.ContentLength != req.contentLength || req.contentLength > max:
			t.Fatalf("length %d, fast path %d", r.ContentLength, req.contentLength)
		case r.Close != req.close:
			t.Fatalf("close %v, fast path %v: %q", r.Close, req.close, raw)
		case len(r.TransferEncoding) > 0 || r.Header.Get("Expect") != "" || !hostValue([]byte(r.Host)):
			t.Fatalf("transfer encoding %v, Expect %q, host %q: %q", r.TransferEncoding, r.Header.Get("Expect"), r.Host, raw)
		case r.URL.Path == "/ws/batch" || r.URL.RawQuery != "":
			t.Fatalf("path %q query %q", r.URL.Path, r.URL.RawQuery)
		case br.Buffered() != len(raw)-n:
			t.Fatalf("net/http read %d header bytes, fast path %d: %q", len(raw)-br.Buffered(), n, raw)
		}
	})
}
