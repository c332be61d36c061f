// Package testapp is a real HTTP application backend for tests of wsgate's
// upstream events: on loopback TCP or on a unix socket, it records every
// request it receives and answers as the test says.
package testapp

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Event is one request the backend received. Its Header carries
// X-Test-Path, the request's path.
type Event struct {
	Header http.Header
	Body   []byte
}

// Kind is the Wsgate-Event header: connect, message or disconnect.
func (e Event) Kind() string { return e.Header.Get("Wsgate-Event") }

// App is a running backend.
type App struct {
	URL    string     // for upstream.url: http://... or unix:/path:/events
	Events chan Event // every request, in arrival order
}

// Start runs a backend until the test ends. answer writes each reply; nil
// answers 204.
func Start(t testing.TB, unix bool, answer func(http.ResponseWriter, *http.Request, Event)) *App {
	t.Helper()
	a := &App{Events: make(chan Event, 10000)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e := Event{r.Header, body}
		e.Header.Set("X-Test-Path", r.URL.Path)
		a.Events <- e
		if answer == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		answer(w, r, e)
	}))
	a.URL = "http://" + srv.Listener.Addr().String() + "/events"
	if unix {
		// A short path: unix socket paths are limited to 108 bytes.
		dir, err := os.MkdirTemp("", "wsgate-app-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		l, err := net.Listen("unix", filepath.Join(dir, "app.sock"))
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener.Close()
		srv.Listener = l
		a.URL = "unix:" + l.Addr().String() + ":/events"
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return a
}

// Next returns the next request the backend received, failing the test
// after 20 seconds without one.
func (a *App) Next(t testing.TB) Event {
	t.Helper()
	select {
	case e := <-a.Events:
		return e
	case <-time.After(20 * time.Second):
		t.Fatal("the backend received no request")
		return Event{}
	}
}
