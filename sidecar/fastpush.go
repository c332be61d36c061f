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
	// The lines to check: the header's, or before its end has come, the
	// lines whole so far, so that a request net/http would refuse at once
	// goes to it at once, not when the header timeout ends it.
	var lines []byte
	switch {
	case end < 0 && len(b) >= maxFastHeader, end+4 > maxFastHeader:
		return req, 0, notFast
	case end >= 0:
		lines = b[:end+2]
	default:
		k := bytes.LastIndex(b, []byte("\r\n"))
		if k < 0 {
			return req, 0, needMore
		}
		lines = b[:k+2]
	}
	line, rest, _ := bytes.Cut(lines, []byte("\r\n")) // every line with its CRLF

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
		if !ok || !unreservedBytes.all(id) {
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
		if !ok || len(name) == 0 || !tokenBytes.all(name) || !valueBytes.all(value) {
			return req, 0, notFast
		}
		value = bytes.Trim(value, " \t")
		switch {
		case bytes.EqualFold(name, []byte("Host")):
			if host || !hostValue(value) {
				return req, 0, notFast
			}
			host = true
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length || len(value) == 0 || len(value) > 18 || !digitBytes.all(value) {
				return req, 0, notFast
			}
			length = true
			req.contentLength, _ = strconv.ParseInt(string(value), 10, 64)
		case bytes.EqualFold(name, []byte("Authorization")):
			if auth {
				return req, 0, notFast
			}
			auth = true
			if req.id == "" && (string(path) == location || string(path) == location+"/") {
				req.id = basicAuthUser(string(value))
			}
		case bytes.EqualFold(name, []byte("Content-Type")):
			if ctype {
				return req, 0, notFast
			}
			ctype = true
			req.contentType = string(value)
		case bytes.EqualFold(name, []byte("Connection")):
			for _, opt := range bytes.Split(value, []byte(",")) {
				switch opt = bytes.Trim(opt, " \t"); {
				case bytes.EqualFold(opt, []byte("close")):
					req.close = true
				case bytes.EqualFold(opt, []byte("keep-alive")), len(opt) == 0:
				default:
					return req, 0, notFast
				}
			}
		case bytes.EqualFold(name, []byte("Transfer-Encoding")), bytes.EqualFold(name, []byte("Expect")),
			bytes.EqualFold(name, []byte("Upgrade")), bytes.EqualFold(name, []byte("Trailer")):
			return req, 0, notFast
		}
	}
	switch {
	case end < 0:
		return req, 0, needMore
	case !host:
		return req, 0, notFast // net/http answers 400
	case req.method == "POST" && (!length || req.contentLength > maxBody):
		return req, 0, notFast // no length (an empty body), or 413
	case req.method == "DELETE" && req.contentLength != 0:
		return req, 0, notFast
	}
	return req, end + 4, parsed
}

// byteSet is a set of bytes, for checking which a header part may hold.
type byteSet [256]bool

func bytesOf(members string) *byteSet {
	var s byteSet
	for i := range len(members) {
		s[members[i]] = true
	}
	return &s
}

// all reports whether every byte of b is in s.
func (s *byteSet) all(b []byte) bool {
	for _, c := range b {
		if !s[c] {
			return false
		}
	}
	return true
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

var (
	// A path segment that needs no unescaping: unreserved characters
	// (RFC 3986 §2.3).
	unreservedBytes = bytesOf(alnum + "-_.~")
	// A Host net/http takes: the bytes of a reg-name, an IP address or a
	// port (httpguts.ValidHostHeader's), such as nginx's "wsgate_push_1".
	hostBytes = bytesOf(alnum + "!$%&'()*+,-.:;=[]_~")
	// An HTTP token (a header name).
	tokenBytes = bytesOf(alnum + "!#$%&'*+-.^_`|~")
	// A header value of visible ASCII, spaces and tabs (net/http refuses
	// control characters; other bytes are left to it).
	valueBytes = bytesOf("\t" + alnum + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
	digitBytes = bytesOf("0123456789")
)

// hostValue reports whether b is a Host the fast path takes; an empty one
// is left to net/http.
func hostValue(b []byte) bool { return len(b) > 0 && hostBytes.all(b) }
