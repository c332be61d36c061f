package sidecar

import (
	"bytes"
	"strconv"
)

// The fast path's request parser. Most push requests are alike: a POST or
// DELETE to a push URL, with a Content-Length and a handful of headers.
// parseFastPush recognizes exactly those, strictly, and leaves every other
// request (chunked, Expect, a query, escapes, HTTP/1.0, lines ending in LF
// alone, odd or repeated headers, the batch API, /metrics, ...) to
// net/http, so that what the fast path answers, net/http would answer the
// same. FuzzFastPush checks that what it takes, net/http reads the same
// way, and that it waits for more only where net/http would too.

// fastPush is a push request the fast path serves.
type fastPush struct {
	method        string // "POST" or "DELETE"
	id            string // from the path, or the Basic-auth user name
	contentType   string
	contentLength int64
	close         bool // Connection: close
}

// parseResult is what parseFastPush made of the start of a buffer.
type parseResult int

const (
	parsed   parseResult = iota // a fast push; n is the length of its header
	needMore                    // no end of the header yet
	notFast                     // for net/http
)

// maxFastHeader is the longest request header the fast path reads; a
// longer one is for net/http. It is the size of each connection's buffer.
const maxFastHeader = 4 << 10

// parseFastPush parses the header of the request at the start of b. A
// valid location is unreserved characters and slashes (config.Validate),
// which a request path must match byte for byte: it unescapes to itself.
func parseFastPush(b []byte, location string, maxBody int64) (req fastPush, n int, res parseResult) {
	end := bytes.Index(b, []byte("\r\n\r\n"))
	head := b
	if end >= 0 {
		head = b[:end+4]
	}
	// A line that ends in LF alone: net/http reads it, the fast path not.
	for i := bytes.IndexByte(head, '\n'); i >= 0; {
		if i == 0 || head[i-1] != '\r' {
			return req, 0, notFast
		}
		j := bytes.IndexByte(head[i+1:], '\n')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if end < 0 {
		if len(b) >= maxFastHeader {
			return req, 0, notFast
		}
		return req, 0, needMore
	}
	if end+4 > maxFastHeader {
		return req, 0, notFast
	}
	line, rest, _ := bytes.Cut(b[:end+2], []byte("\r\n")) // every line with its CRLF

	// Request line: POST|DELETE SP path SP HTTP/1.1
	method, line, ok := bytes.Cut(line, []byte(" "))
	switch {
	case !ok:
		return req, 0, notFast
	case string(method) == "POST":
		req.method = "POST"
	case string(method) == "DELETE":
		req.method = "DELETE"
	default:
		return req, 0, notFast
	}
	path, proto, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(proto) != "HTTP/1.1" {
		return req, 0, notFast
	}
	switch string(path) {
	case "/metrics", "/status", location + "/batch":
		return req, 0, notFast // servePush's own paths
	case location, location + "/":
	default:
		id, ok := bytes.CutPrefix(path, []byte(location+"/"))
		if !ok || !unreservedPath(id) {
			return req, 0, notFast
		}
		req.id = string(id)
	}

	// Headers: those a push uses, once each; any line net/http might read
	// otherwise is for net/http.
	var host, length, auth, ctype bool
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !token(name) || !fieldValue(value) {
			return req, 0, notFast
		}
		value = bytes.Trim(value, " \t")
		switch {
		case equalFold(name, "Host"):
			if host || !hostValue(value) {
				return req, 0, notFast
			}
			host = true
		case equalFold(name, "Content-Length"):
			if length || len(value) == 0 || len(value) > 18 || !digits(value) {
				return req, 0, notFast
			}
			length = true
			req.contentLength, _ = strconv.ParseInt(string(value), 10, 64)
		case equalFold(name, "Authorization"):
			if auth {
				return req, 0, notFast
			}
			auth = true
			if req.id == "" && (string(path) == location || string(path) == location+"/") {
				req.id = basicAuthUser(string(value))
			}
		case equalFold(name, "Content-Type"):
			if ctype {
				return req, 0, notFast
			}
			ctype = true
			req.contentType = string(value)
		case equalFold(name, "Connection"):
			for _, opt := range bytes.Split(value, []byte(",")) {
				switch opt = bytes.Trim(opt, " \t"); {
				case equalFold(opt, "close"):
					req.close = true
				case equalFold(opt, "keep-alive"), len(opt) == 0:
				default:
					return req, 0, notFast
				}
			}
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Expect"),
			equalFold(name, "Upgrade"), equalFold(name, "Trailer"):
			return req, 0, notFast
		}
	}
	switch {
	case !host:
		return req, 0, notFast // net/http answers 400
	case req.method == "POST" && (!length || req.contentLength > maxBody):
		return req, 0, notFast // no length (an empty body), or 413
	case req.method == "DELETE" && req.contentLength != 0:
		return req, 0, notFast
	}
	return req, end + 4, parsed
}

// unreservedPath reports whether p is a path segment that needs no
// unescaping: unreserved characters (RFC 3986 §2.3) only.
func unreservedPath(p []byte) bool {
	for _, c := range p {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~') {
			return false
		}
	}
	return true
}

// hostValue reports whether b is a Host net/http takes: the bytes of a
// reg-name, an IP address or a port (httpguts.ValidHostHeader's), such as
// nginx's "wsgate_push_1". An empty one is left to net/http.
func hostValue(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || bytes.IndexByte([]byte("!$%&'()*+,-.:;=[]_~"), c) >= 0) {
			return false
		}
	}
	return true
}

// token reports whether b is a non-empty HTTP token (a header name).
func token(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0) {
			return false
		}
	}
	return true
}

// fieldValue reports whether b is a header value of visible ASCII, spaces
// and tabs only (net/http refuses control characters; other bytes are
// left to it).
func fieldValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c >= 0x7f {
			return false
		}
	}
	return true
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// equalFold is ASCII case-insensitive equality.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
