package sidecar

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// pushError is a push refused with an HTTP status and a reason for the
// client, sent as {"error": reason}.
type pushError struct {
	status int
	reason string
}

func (e *pushError) Error() string { return e.reason }

var (
	errNoID = &pushError{http.StatusBadRequest,
		"no client id: give it as the Basic-auth user name (http://ID@host/...) or POST <location>/ID"}
	errNoClient = &pushError{http.StatusNotFound, "no such client (gone or never existed)"}
	errNotUTF8  = &pushError{http.StatusBadRequest,
		"text push is not valid UTF-8; send binary data with Content-Type: application/octet-stream"}
	errTooLarge = &pushError{http.StatusRequestEntityTooLarge, "body exceeds push.max_body"}
	errFull     = &pushError{http.StatusServiceUnavailable, "the client's send queue is full"}
)

// pushID extracts the client id from a push request: from the path
// <location>/<id>, or at <location> itself from the Basic-auth user name
// (the password is ignored). ok is false when the path is not a push path.
func pushID(r *http.Request, location string) (id string, ok bool) {
	path := r.URL.Path
	if path == location || path == location+"/" {
		return basicAuthUser(r.Header.Get("Authorization")), true
	}
	if rest, found := strings.CutPrefix(path, location+"/"); found && !strings.Contains(rest, "/") {
		return rest, true
	}
	return "", false
}

// basicAuthUser returns the user name of a Basic Authorization header value,
// "" when there is none. A credential without ':' is a user name alone.
func basicAuthUser(h string) string {
	const prefix = "basic "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return ""
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[len(prefix):]))
	if err != nil {
		return ""
	}
	user, _, _ := strings.Cut(string(dec), ":")
	return user
}

// pushKind is the frame type a push is sent as: binary for
// application/octet-stream, text for anything else.
func pushKind(contentType string) int {
	if contentType != "" {
		if mt, _, err := mime.ParseMediaType(contentType); err == nil && mt == "application/octet-stream" {
			return websocket.BinaryMessage
		}
	}
	return websocket.TextMessage
}

// readPushBody reads the whole body, refusing one over max before reading
// more than max+1 bytes.
func readPushBody(r *http.Request, max int64) ([]byte, *pushError) {
	if r.ContentLength > max {
		return nil, errTooLarge
	}
	var body []byte
	var err error
	if r.ContentLength >= 0 {
		body, err = readBody(r.Body, r.ContentLength, nil)
	} else {
		body, err = io.ReadAll(io.LimitReader(r.Body, max+1))
		if err == nil && int64(len(body)) > max {
			return nil, errTooLarge
		}
	}
	if err != nil {
		return nil, bodyError(err)
	}
	return body, nil
}

// bodyError is the answer to a body that could not be read, without the
// network addresses (the socket's path) of the error.
func bodyError(err error) *pushError {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return &pushError{http.StatusBadRequest, "reading body: " + err.Error()}
}

// pushFrame is the frame of a pushed body of that kind; text must be valid
// UTF-8.
func pushFrame(kind int, body []byte, arrived int64) (frame, *pushError) {
	if kind == websocket.TextMessage && !utf8.Valid(body) {
		return frame{}, errNotUTF8
	}
	return frame{kind: kind, data: body, at: arrived}, nil
}

// bodyStep is the memory a push body gets first, beyond what was read with
// its header.
const bodyStep = 64 << 10

// readBody reads a body of n bytes, the first of which are have, from r,
// into memory that grows as they arrive (from at most bodyStep, doubling
// when full, never past n): a declared Content-Length costs memory only as
// its bytes come, so that connections that declare push.max_body and send
// nothing hold little. The body returned has a capacity of exactly n.
func readBody(r io.Reader, n int64, have []byte) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	body := make([]byte, len(have), min(n, max(int64(len(have)), bodyStep)))
	copy(body, have)
	for int64(len(body)) < n {
		if len(body) == cap(body) {
			grown := make([]byte, len(body), min(n, 2*int64(cap(body))))
			copy(grown, body)
			body = grown
		}
		m, err := r.Read(body[len(body):min(int64(cap(body)), n)])
		body = body[:len(body)+m]
		if err != nil && int64(len(body)) < n {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return body, nil
}

// servePush is the push socket's handler: the push API at location, the
// batch API at location/batch, /metrics and /status.
func (s *Server) servePush(w http.ResponseWriter, r *http.Request) {
	arrived := s.now()
	w, r = finishing(w, r)
	switch r.URL.Path {
	case "/metrics":
		s.serveMetrics(w, r)
		return
	case "/status":
		s.serveStatus(w, r)
		return
	case s.location + "/batch":
		s.serveBatch(w, r, arrived)
		return
	}
	id, ok := pushID(r, s.location)
	if !ok {
		writeError(w, &pushError{http.StatusNotFound, "no such path: push to " + s.location + " or " + s.location + "/ID"})
		return
	}
	err := s.push(r, id, arrived)
	s.pushed(id, err)
	if err == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", "POST, DELETE")
	}
	writeError(w, err)
}

// push carries out one push API request; nil means 204.
func (s *Server) push(r *http.Request, id string, arrived int64) *pushError {
	if r.Method != http.MethodPost && r.Method != http.MethodDelete {
		return &pushError{http.StatusMethodNotAllowed, "method " + r.Method + " not allowed: POST a message or DELETE the client"}
	}
	c, err := s.target(r.Method, id)
	if c == nil {
		return err
	}
	body, err := readPushBody(r, s.maxBody)
	if err != nil {
		return err
	}
	return s.deliverPush(c, r.Header.Get("Content-Type"), body, arrived)
}

// target finds the client a POST or a DELETE to id is for; a DELETE it
// carries out, returning no client.
func (s *Server) target(method, id string) (*client, *pushError) {
	if id == "" {
		return nil, errNoID
	}
	c := s.lookup(id)
	if c == nil {
		return nil, errNoClient
	}
	if method == http.MethodDelete {
		if !c.closeQueued(closeNormal, "") {
			return nil, errNoClient
		}
		return nil, nil
	}
	return c, nil
}

// pushed counts a push request's outcome and logs a refused one.
func (s *Server) pushed(id string, err *pushError) {
	if err == nil {
		s.metrics.pushed(http.StatusNoContent)
		return
	}
	s.metrics.pushed(err.status)
	if s.log.Enabled(context.Background(), levelDebug) {
		s.log.Debug("push refused", "id", id, "status", err.status, "error", err.reason)
	}
}

// lookup returns the client with id, or nil.
func (s *Server) lookup(id string) *client {
	if !validID(id) {
		return nil
	}
	if c := s.reg.get(id); c != nil {
		return c
	}
	// The upstream was told of this id's connect and the handshake is
	// not finished: wait for the client rather than answer 404.
	if done, ok := s.handshakes.Load(id); ok {
		select {
		case <-done.(chan struct{}):
		case <-time.After(s.writeTimeout):
		}
	}
	// Again: a handshake registers its client before it forgets its
	// entry, and may have done both since the first look.
	return s.reg.get(id)
}

// deliver queues f for c, applying slow_client when c's queue is full.
func (s *Server) deliver(c *client, f frame) *pushError {
	switch c.push(f) {
	case gone:
		return errNoClient
	case full:
		s.metrics.drops.WithLabelValues("queue_full").Inc()
		if !s.dropSlow && c.markClosing() { // once per client, however many pushes find it full
			s.metrics.slowCloses.Inc()
			go c.sendClose(websocket.FormatCloseMessage(closeSlow, "slow client"))
		}
		return errFull
	}
	return nil
}

// maxDrain is the most a finishingWriter reads of a body nobody wants.
const maxDrain = 64 << 20

// finishingWriter is the ResponseWriter of every request on the push
// socket: before the answer, it reads and discards what is left of the
// request's body, up to maxDrain bytes, so that a request refused before
// its body was read through (413, 404, 405...) still has it read; net/http
// alone would read 256 KiB of it and close the connection. Closing a
// socket with unread data resets the connection, and the reset can
// overtake the answer: the backend would see "connection reset" instead
// of a 413. nginx's http push servers read every body themselves; with
// push_proxy = "stream" the sidecar reads from the backend's own
// connection. A client that waits for "100 Continue" has sent no body
// unless the handler read some, and is not asked for it; a body declared
// longer than maxDrain is not read at all, as the connection is closed
// with data left either way.
type finishingWriter struct {
	http.ResponseWriter
	r        *http.Request
	body     *watchedBody
	finished bool
}

// watchedBody is a request body that tells whether it was read from, and
// to the end.
type watchedBody struct {
	io.ReadCloser
	read, eof bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.read = true
	n, err := b.ReadCloser.Read(p)
	b.eof = b.eof || err == io.EOF
	return n, err
}

// finishing returns w as a finishingWriter, and a copy of r whose body it
// watches. r itself stays as it is: net/http looks at its Body after the
// handler (whether a client waiting for "100 Continue" sent its body).
func finishing(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request) {
	body := &watchedBody{ReadCloser: r.Body}
	r = r.WithContext(r.Context())
	r.Body = body
	return &finishingWriter{ResponseWriter: w, r: r, body: body}, r
}

func (w *finishingWriter) WriteHeader(status int) {
	w.finish()
	w.ResponseWriter.WriteHeader(status)
}

func (w *finishingWriter) Write(p []byte) (int, error) {
	w.finish()
	return w.ResponseWriter.Write(p)
}

// Unwrap returns the ResponseWriter underneath, for http.ResponseController.
func (w *finishingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *finishingWriter) finish() {
	if w.finished {
		return
	}
	w.finished = true
	r := w.r
	if w.body.eof || r.ContentLength == 0 || r.ContentLength > maxDrain ||
		!w.body.read && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		return
	}
	io.CopyN(io.Discard, w.body, maxDrain)
}

func writeError(w http.ResponseWriter, e *pushError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.status)
	w.Write(errorJSON(e))
}

// errorJSON is the body of an answer refusing a request: {"error": reason}.
func errorJSON(e *pushError) []byte {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{e.reason})
	return append(b, '\n')
}
