package wstest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// CloseCode reports a close frame's code, and 1006 for a connection cut
// without one, after the messages before them.
func TestCloseCode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.WriteMessage(websocket.TextMessage, []byte("hello"))
		if r.URL.Path == "/close" {
			c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, ""), time.Now().Add(time.Second))
		}
	}))
	defer srv.Close()
	dial := func(path string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial("/close")
	if kind, msg := ReadMessage(t, c); kind != websocket.TextMessage || string(msg) != "hello" {
		t.Fatalf("ReadMessage: %d %q", kind, msg)
	}
	if code := MustCloseCode(t, c); code != websocket.CloseTryAgainLater {
		t.Fatalf("MustCloseCode: %d", code)
	}
	if code, err := CloseCode(dial("/cut")); code != websocket.CloseAbnormalClosure || err != nil {
		t.Fatalf("a connection cut without a close frame: %d %v", code, err)
	}
	// Drain reads past the message to the close, and reports that.
	if err := <-Drain(dial("/close")); !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("Drain: %v, want the close 1013", err)
	}
}

// Output keeps what any goroutine wrote.
func TestOutput(t *testing.T) {
	var o Output
	done := make(chan struct{})
	for i := 0; i < 4; i++ {
		go func() {
			fmt.Fprintf(&o, "line %d\n", i)
			done <- struct{}{}
		}()
	}
	for i := 0; i < 4; i++ {
		<-done
	}
	if n := strings.Count(o.String(), "line "); n != 4 {
		t.Fatalf("%d lines in %q", n, o.String())
	}
}

// AnswerPings answers a ping with its pong and reports it.
func TestAnswerPings(t *testing.T) {
	pong := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPongHandler(func(data string) error { pong <- data; return nil })
		c.WriteControl(websocket.PingMessage, []byte("p1"), time.Now().Add(time.Second))
		c.ReadMessage() // handles the pong, until the client goes
	}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pings := AnswerPings(c)
	go c.ReadMessage()
	select {
	case <-pings:
	case <-time.After(10 * time.Second):
		t.Fatal("no ping reported")
	}
	select {
	case got := <-pong:
		if got != "p1" {
			t.Fatalf("pong %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pong")
	}
}
