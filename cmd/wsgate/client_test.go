package main

import (
	"bufio"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/gorilla/websocket"
)

// Ctrl-C ends wsgate client with exit 0, whether the server echoes its
// close (the read loop sees it) or never reads it (the connection is cut).
func TestClientInterrupt(t *testing.T) {
	for _, echo := range []bool{true, false} {
		done := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			c.WriteMessage(websocket.TextMessage, []byte("http://id@127.0.0.1:1/ws"))
			if echo {
				for _, _, err := c.ReadMessage(); err == nil; _, _, err = c.ReadMessage() {
				}
			} else {
				<-done // r's context does not end with a hijacked connection
			}
		}))
		cmd := exec.Command(bin, "client", "ws"+strings.TrimPrefix(srv.URL, "http"))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(out).ReadString('\n'); !strings.HasPrefix(line, "welcome: ") {
			t.Fatalf("first line %q", line)
		}
		cmd.Process.Signal(syscall.SIGINT)
		if err := cmd.Wait(); err != nil {
			t.Errorf("echo %v: wsgate client after Ctrl-C: %v, want exit 0", echo, err)
		}
		close(done)
		srv.Close()
	}
}
