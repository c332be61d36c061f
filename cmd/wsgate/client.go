package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// runClient is a WebSocket client for trying the gateway from a shell: it
// prints the welcome and then every message, one per line (binary as length
// and hex), until the server closes or Ctrl-C.
func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	count := fs.Int("n", 0, "exit after this many messages after the welcome (0: run until closed)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: wsgate client [-n N] [ws://127.0.0.1:8080/ws]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	url := "ws://127.0.0.1:8080/ws"
	if fs.NArg() > 1 {
		fs.Usage()
		return errors.New("one URL at most")
	} else if fs.NArg() == 1 {
		url = fs.Arg(0)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("%s: %v (HTTP %s)", url, err, resp.Status)
		}
		return fmt.Errorf("%s: %v", url, err)
	}
	defer c.Close()
	// Ctrl-C closes with 1000; the server's echo ends the read loop, or
	// the connection is cut a second later. Either way it is no error.
	var stopping atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		stopping.Store(true)
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		time.AfterFunc(time.Second, func() { c.Close() })
	}()
	for n := -1; *count == 0 || n < *count; n++ {
		kind, msg, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				fmt.Fprintf(os.Stderr, "closed: %d %s\n", ce.Code, ce.Text)
				return nil
			}
			if stopping.Load() {
				return nil
			}
			return err
		}
		switch {
		case n < 0:
			fmt.Printf("welcome: %s\n", msg)
		case kind == websocket.BinaryMessage:
			fmt.Printf("binary %d bytes: %x\n", len(msg), msg)
		default:
			fmt.Printf("%s\n", msg)
		}
	}
	return nil
}
