package sidecar

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/config"
)

// fileListener returns a listener on a duplicate of held's socket, as a
// process started by socket activation gets it: closing it leaves held,
// and its backlog, to the next process.
func fileListener(t *testing.T, held net.Listener) net.Listener {
	t.Helper()
	f, err := held.(interface{ File() (*os.File, error) }).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A sidecar that restarts on push sockets held for it (one, or one per
// push.listen address with push_proxy = "none") loses no push: every
// connection is answered by the old process or waits in the backlog for
// the new one, none is taken from the backlog and then dropped.
func TestRestartLosesNoPush(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			cfg := config.Default()
			cfg.RuntimeDir = t.TempDir()
			cfg.Nginx.PushProxy = "none"
			var held []net.Listener
			for range n {
				h, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer h.Close()
				held = append(held, h)
			}
			heldWS, err := net.Listen("unix", cfg.RuntimeDir+"/ws.sock")
			if err != nil {
				t.Fatal(err)
			}
			defer heldWS.Close()
			start := func() (context.CancelFunc, chan error) {
				push := make([]net.Listener, n)
				for i, h := range held {
					push[i] = fileListener(t, h)
				}
				s := New(&cfg, 1, slog.New(slog.DiscardHandler))
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- s.Serve(ctx, fileListener(t, heldWS), push...) }()
				return cancel, done
			}
			cancel, done := start()
			var stop atomic.Bool
			var answered, failed atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			for w := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
					url := "http://" + held[w%n].Addr().String() + "/ws/AAAAAAAAAAAAAAAAAAAAAA"
					for !stop.Load() {
						resp, err := hc.Post(url, "text/plain", strings.NewReader("x"))
						if err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != http.StatusNotFound {
								err = fmt.Errorf("answered %d, want 404", resp.StatusCode)
							}
						}
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						} else {
							answered.Add(1)
						}
					}
				}()
			}
			for range 5 {
				time.Sleep(100 * time.Millisecond)
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
				cancel, done = start()
			}
			time.Sleep(100 * time.Millisecond)
			stop.Store(true)
			wg.Wait()
			cancel()
			<-done
			if failed.Load() > 0 || answered.Load() == 0 {
				t.Errorf("%d pushes answered, %d failed across 5 restarts; first: %v", answered.Load(), failed.Load(), firstErr.Load())
			}
		})
	}
}

// Serve refuses to run without a push socket, which would leave every push
// URL of its clients unanswered.
func TestServeNeedsPushSocket(t *testing.T) {
	cfg := config.Default()
	cfg.RuntimeDir = t.TempDir()
	ws, err := net.Listen("unix", cfg.RuntimeDir+"/ws.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	err = New(&cfg, 1, slog.New(slog.DiscardHandler)).Serve(context.Background(), ws)
	if err == nil || !strings.Contains(err.Error(), "no push socket") {
		t.Fatalf("Serve without a push socket: %v", err)
	}
}
