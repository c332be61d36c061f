package sidecar

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// FuzzPushRequest feeds raw HTTP requests through the push request parsing:
// id extraction (path and Basic auth), content type and the bounded body
// read. It must never panic, never return more than max_body bytes, and
// never accept a text body that is not UTF-8.
func FuzzPushRequest(f *testing.F) {
	for _, seed := range []string{
		"POST /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Basic QUFBQUFBQUFBQUFBQUFBQUFBQUFBQTo=\r\nContent-Length: 5\r\n\r\nhello",
		"POST /ws/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\n\xff\xfe",
		"POST /ws HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /ws HTTP/1.1\r\nHost: x\r\nAuthorization: basic Og==\r\nContent-Length: 0\r\n\r\n",
		"DELETE /ws/x/y HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\r\n",
		"POST /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!\r\nContent-Length: 99\r\n\r\nshort",
	} {
		f.Add([]byte(seed))
	}
	const max = 64
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		id, ok := pushID(r, "/ws")
		if ok && strings.Contains(id, "/") {
			t.Fatalf("id %q contains a slash", id)
		}
		if !ok && (r.URL.Path == "/ws" || r.URL.Path == "/ws/") {
			t.Fatalf("path %q is the push path", r.URL.Path)
		}
		kind := pushKind(r.Header.Get("Content-Type"))
		if kind != websocket.TextMessage && kind != websocket.BinaryMessage {
			t.Fatalf("kind %d", kind)
		}
		body, perr := readPushBody(r, max)
		if perr == nil {
			_, perr = pushFrame(kind, body, 0)
		}
		if perr != nil {
			if perr.status != http.StatusBadRequest && perr.status != http.StatusRequestEntityTooLarge {
				t.Fatalf("status %d", perr.status)
			}
			return
		}
		if len(body) > max {
			t.Fatalf("accepted %d bytes over max %d", len(body), max)
		}
		if kind == websocket.TextMessage && !utf8.Valid(body) {
			t.Fatalf("accepted invalid UTF-8 text %q", body)
		}
	})
}

func TestBasicAuthUser(t *testing.T) {
	for h, want := range map[string]string{
		"Basic aWQ6":     "id",     // "id:"
		"basic aWQ6cHc=": "id",     // "id:pw"
		"BASIC aWQ=":     "id",     // "id", no colon
		"Basic   aWQ6  ": "id",     // padding spaces
		"Bearer aWQ6":    "",       // not Basic
		"Basic !!":       "",       // not base64
		"Basic ":         "",       // nothing
		"":               "",       //
		"Basic OmlkOg==": "",       // ":id:" → empty user
		"Basic YTpiOmM=": "a",      // "a:b:c"
		"Basic w6k6":     "\u00e9", // non-ASCII user: looked up, never found
	} {
		if got := basicAuthUser(h); got != want {
			t.Errorf("basicAuthUser(%q) = %q, want %q", h, got, want)
		}
	}
}
