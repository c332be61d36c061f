package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// nchanLike serves Nchan's two URLs for wsbench's own tests: /sub/<id>
// upgrades (or, with failAll, refuses every handshake with 503), /pub/<id>
// answers 201 and delivers the body to that subscriber, except the push
// whose sequence number is drop.
func nchanLike(t *testing.T, failAll bool, drop uint64) options {
	var mu sync.Mutex
	conns := map[string]*websocket.Conn{}
	mux := http.NewServeMux()
	mux.HandleFunc("/sub/", func(w http.ResponseWriter, r *http.Request) {
		if failAll {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		conns[strings.TrimPrefix(r.URL.Path, "/sub/")] = c
		mu.Unlock()
	})
	mux.HandleFunc("/pub/", func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, r.ContentLength)
		if _, err := r.Body.Read(body); err != nil && len(body) < 16 {
			http.Error(w, "short", http.StatusBadRequest)
			return
		}
		seq := uint64(0)
		for _, x := range body[8:16] {
			seq = seq<<8 | uint64(x)
		}
		mu.Lock()
		if c := conns[strings.TrimPrefix(r.URL.Path, "/pub/")]; c != nil && seq != drop {
			c.WriteMessage(websocket.BinaryMessage, body)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	host := strings.TrimPrefix(s.URL, "http://")
	return options{target: "nchan", wsURL: "ws://" + host + "/sub/", pubURL: s.URL + "/pub/",
		clients: 20, handshakeCon: 4, pushes: 2000, pushers: 4, size: 64}
}

// Failed handshakes are not counted in handshakes/s.
func TestHandshakeRateCountsSuccesses(t *testing.T) {
	r, _ := run(nchanLike(t, true, 0))
	if r.HandshakeFails != 20 || r.HandshakesPerS != 0 {
		t.Fatalf("%d of 20 handshakes failed, and %.0f handshakes/s", r.HandshakeFails, r.HandshakesPerS)
	}
}

// A lost push does not put the wait for it into the push rate.
func TestPushRateLeavesOutTheWaitForLosses(t *testing.T) {
	defer func(d time.Duration) { quietWait = d }(quietWait)
	quietWait = 3 * time.Second
	o := nchanLike(t, false, 7)
	r, err := run(o)
	if err != nil {
		t.Fatal(err)
	}
	// Counting the wait would cap the rate below pushes/quietWait, which
	// 2000 pushes over loopback exceed by far.
	if r.Lost != 1 || r.PushesPerS <= float64(o.pushes)/quietWait.Seconds() {
		t.Fatalf("lost %d, %.0f pushes/s", r.Lost, r.PushesPerS)
	}
}
