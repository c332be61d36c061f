package config

import (
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Upstream events, the values of upstream.events.
const (
	EventConnect    = "connect"
	EventMessage    = "message"
	EventDisconnect = "disconnect"
)

// SplitURL splits a backend URL as upstream.url and auth.url take it. An
// http:// or https:// URL is returned as is with socket "". The nginx-like
// form unix:/path/to.sock:/uri (the ":/uri" optional, "/" by default)
// returns the socket path and the URL http://localhost/uri to request on it.
func SplitURL(s string) (socket, target string, err error) {
	if rest, ok := strings.CutPrefix(s, "unix:"); ok {
		sock, uri, found := strings.Cut(rest, ":")
		if !found {
			uri = "/"
		}
		if !filepath.IsAbs(sock) || !strings.HasPrefix(uri, "/") {
			return "", "", errors.New("not unix:/absolute/path.sock:/uri")
		}
		if _, err := url.ParseRequestURI(uri); err != nil {
			return "", "", err
		}
		return sock, "http://localhost" + uri, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
		return "", "", errors.New("not an http:// or https:// URL")
	}
	return "", s, nil
}

// Has reports whether the upstream is configured and receives event.
func (u *Upstream) Has(event string) bool {
	return u.URL != "" && slices.Contains(u.Events, event)
}

func (u *Upstream) validate(e *fieldErrors) {
	if u.URL != "" {
		if _, _, err := SplitURL(u.URL); err != nil {
			e.add("upstream.url", "%q is not an http:// or https:// URL, nor unix:/path.sock:/path", u.URL)
		}
	}
	if u.Timeout <= 0 || u.Timeout.D() > 10*time.Minute {
		e.add("upstream.timeout", "%s is out of range (0s, 10m]", u.Timeout.D())
	}
	for _, ev := range u.Events {
		if ev != EventConnect && ev != EventMessage && ev != EventDisconnect {
			e.add("upstream.events", "%q is not one of \"connect\", \"message\", \"disconnect\"", ev)
		}
	}
	for _, h := range u.ForwardHeaders {
		if h == "" || strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) }) {
			e.add("upstream.forward_headers", "%q is not a header name", h)
		} else if strings.HasPrefix(http.CanonicalHeaderKey(h), "Wsgate-") {
			e.add("upstream.forward_headers", "%q: Wsgate- headers are wsgate's own", h)
		}
	}
	if u.Concurrency < 1 || u.Concurrency > 4096 {
		e.add("upstream.concurrency", "%d is out of range 1..4096", u.Concurrency)
	}
	if u.OnError != "refuse" && u.OnError != "allow" {
		e.add("upstream.on_error", "%q is not one of \"refuse\", \"allow\"", u.OnError)
	}
	if u.MessageQueue < 1 || u.MessageQueue > 4096 {
		e.add("upstream.message_queue", "%d is out of range 1..4096", u.MessageQueue)
	}
}
