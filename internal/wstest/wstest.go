// Package wstest has the helpers that the sidecar's tests and the gateway's
// integration tests share: reading a WebSocket's messages and its close
// code with deadlines, collecting a process's output while it runs, and
// finding free ports.
package wstest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// ReadMessage reads one message within 10 seconds, or fails t.
func ReadMessage(t testing.TB, c *websocket.Conn) (kind int, msg []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	kind, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return kind, msg
}

// CloseCode reads until the connection ends, within 20 seconds, and
// returns its close code: websocket.CloseAbnormalClosure (1006) when it
// ended without a close frame, as gorilla reports it. Any other end of
// reading (a timeout, a reset) is an error. Unlike MustCloseCode it may run
// in any goroutine.
func CloseCode(c *websocket.Conn) (int, error) {
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok {
			return ce.Code, nil
		}
		return 0, fmt.Errorf("reading until the close: %v", err)
	}
}

// MustCloseCode is CloseCode that fails t on an error.
func MustCloseCode(t testing.TB, c *websocket.Conn) int {
	t.Helper()
	code, err := CloseCode(c)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// AnswerPings makes c answer each ping with a pong, as gorilla's own
// handler does, and report it on the channel returned (what it does not
// hold, 1000 unread, is not reported). Pings are handled while c is read.
func AnswerPings(c *websocket.Conn) <-chan struct{} {
	pings := make(chan struct{}, 1000)
	c.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		err := c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if ne, ok := err.(net.Error); err == websocket.ErrCloseSent || ok && ne.Timeout() {
			return nil // as gorilla's handler: the reader goes on
		}
		return err
	})
	return pings
}

// Drain reads and drops c's messages (answering pings and closes as c's
// handlers do) until reading fails, and then sends that error on the
// channel returned.
func Drain(c *websocket.Conn) <-chan error {
	failed := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				failed <- err
				return
			}
		}
	}()
	return failed
}

// Output collects what is written to it from any goroutine (a process's
// output, a logger's) for the test to read while it runs.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// String returns what was written so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// FreePorts returns a port p such that p..p+n-1 are free on host and on
// each of also, or fails t.
func FreePorts(t testing.TB, host string, n int, also ...string) int {
	t.Helper()
	for try := 0; try < 200; try++ {
		// Below Linux's ephemeral range (32768..60999 by default), so that
		// the tests' own outgoing connections do not take these ports.
		base := 10000 + rand.IntN(20000)
		ok := true
		for p := base; p < base+n && ok; p++ {
			for _, h := range append([]string{host}, also...) {
				l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(p)))
				if err != nil {
					ok = false
					break
				}
				l.Close()
			}
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free ports")
	return 0
}
