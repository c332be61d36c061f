// Command wsclient is the test client that systemd/test/boot.sh copies into
// the booted container: a WebSocket client and two connection loops that
// count every refused or failed connection while a sidecar restarts.
//
//	wsclient client [-url U | -unix PATH] [-messages N] [-want-close CODE] [-timeout D]
//	    Connects, prints "welcome <text>", then "message <text>" for each of
//	    N messages, then, with -want-close, waits for the server's close and
//	    prints "close <code>"; exits 1 on any other outcome.
//	wsclient wsloop [-url U | -unix PATH] -stop FILE -window FILE [-workers N]
//	    Opens connections in a loop (handshake, welcome, close) until FILE
//	    exists; then reads "<start> <end>" (unix nanoseconds) from the window
//	    file and reports how many attempts started inside that window.
//	    Exits 1 when any attempt failed or none fell inside the window.
//	wsclient pushloop -push-url U -stop FILE -window FILE [-workers N] [-fresh]
//	    The same with pushes to a client that does not exist: each must be
//	    answered 404 by the sidecar (nginx answers 502 when it cannot connect).
//	    -fresh: each on a new connection, as a kept-alive one the sidecar
//	    closes as it stops can fail a push sent on it just then, which with
//	    nginx.push_proxy = "none" no nginx retries (README).
//
// It is built statically on the host and needs nothing in the container.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wsclient client|wsloop|pushloop [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "client":
		err = runClient(os.Args[2:])
	case "wsloop":
		err = runLoop(os.Args[1], os.Args[2:])
	case "pushloop":
		err = runLoop(os.Args[1], os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wsclient %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// dialer connects to url, or, with unixPath set, to that socket directly.
func dialer(unixPath string, timeout time.Duration) *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: timeout}
	if unixPath != "" {
		d.NetDialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", unixPath)
		}
	}
	return d
}

// connect opens a WebSocket and reads the welcome frame.
func connect(d *websocket.Dialer, url string, timeout time.Duration) (*websocket.Conn, string, error) {
	conn, resp, err := d.Dial(url, nil)
	if err != nil {
		if resp != nil {
			return nil, "", fmt.Errorf("handshake: %w (HTTP %s)", err, resp.Status)
		}
		return nil, "", fmt.Errorf("handshake: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	typ, msg, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("reading the welcome: %w", err)
	}
	if typ != websocket.TextMessage || len(msg) == 0 {
		conn.Close()
		return nil, "", fmt.Errorf("welcome is not a non-empty text frame: type %d, %q", typ, msg)
	}
	return conn, string(msg), nil
}

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/ws", "WebSocket URL")
	unixPath := fs.String("unix", "", "connect to this unix socket instead of the URL's host")
	messages := fs.Int("messages", 0, "messages to receive after the welcome")
	wantClose := fs.Int("want-close", 0, "then wait for the server to close with this code")
	timeout := fs.Duration("timeout", 20*time.Second, "bound on the whole exchange")
	if err := fs.Parse(args); err != nil {
		return err
	}
	deadline := time.Now().Add(*timeout)
	conn, welcome, err := connect(dialer(*unixPath, *timeout), *url, *timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	fmt.Printf("welcome %s\n", welcome)
	conn.SetReadDeadline(deadline)
	for i := 0; i < *messages; i++ {
		typ, msg, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("message %d: %w", i+1, err)
		}
		if typ != websocket.TextMessage {
			return fmt.Errorf("message %d is not a text frame: %q", i+1, msg)
		}
		fmt.Printf("message %s\n", msg)
	}
	if *wantClose == 0 {
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline)
		return nil
	}
	for {
		_, msg, err := conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			fmt.Printf("close %d %s\n", ce.Code, ce.Text)
			if ce.Code != *wantClose {
				return fmt.Errorf("closed with %d, want %d", ce.Code, *wantClose)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("waiting for close %d: %w", *wantClose, err)
		}
		fmt.Printf("message %s\n", msg)
	}
}

// attempt is one connection or push of a loop.
type attempt struct {
	start    time.Time
	duration time.Duration
	err      error
}

func runLoop(kind string, args []string) error {
	fs := flag.NewFlagSet(kind, flag.ContinueOnError)
	url := fs.String("url", "ws://127.0.0.1:8080/ws", "WebSocket URL (wsloop)")
	unixPath := fs.String("unix", "", "connect to this unix socket instead of the URL's host (wsloop)")
	pushURL := fs.String("push-url", "", "push URL of a client that does not exist (pushloop)")
	stop := fs.String("stop", "", "stop once this file exists (required)")
	window := fs.String("window", "", "file with \"<start> <end>\" in unix nanoseconds (required)")
	workers := fs.Int("workers", 4, "concurrent loops")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on one attempt")
	maxRun := fs.Duration("max", 90*time.Second, "stop after this long even without the stop file")
	fresh := fs.Bool("fresh", false, "each push on a new connection (pushloop)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *stop == "" || *window == "" || (kind == "pushloop" && *pushURL == "") {
		fs.Usage()
		return errors.New("missing flags")
	}

	var once func() error
	switch kind {
	case "wsloop":
		d := dialer(*unixPath, *timeout)
		once = func() error {
			conn, _, err := connect(d, *url, *timeout)
			if err != nil {
				return err
			}
			conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return conn.Close()
		}
	case "pushloop":
		client := &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: *fresh}}
		once = func() error {
			resp, err := client.Post(*pushURL, "text/plain", strings.NewReader("nobody is there"))
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				return fmt.Errorf("HTTP %d, want 404: %s", resp.StatusCode, strings.TrimSpace(string(body)))
			}
			return nil
		}
	}

	end := time.Now().Add(*maxRun)
	var (
		mu       sync.Mutex
		attempts []attempt
		wg       sync.WaitGroup
	)
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, err := os.Stat(*stop); err == nil {
					return
				}
				start := time.Now()
				err := once()
				mu.Lock()
				attempts = append(attempts, attempt{start, time.Since(start), err})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	from, to, err := readWindow(*window)
	if err != nil {
		return err
	}
	var failed, inWindow int
	var slowest time.Duration
	for _, a := range attempts {
		if a.err != nil {
			failed++
			if failed <= 5 {
				fmt.Fprintf(os.Stderr, "attempt started at %s (restart %+dms) failed after %s: %v\n",
					a.start.Format("15:04:05.000000"), a.start.Sub(from).Milliseconds(), a.duration.Round(time.Millisecond), a.err)
			}
		}
		if !a.start.Before(from) && a.start.Before(to) {
			inWindow++
			slowest = max(slowest, a.duration)
		}
	}
	fmt.Printf("%s: %d attempts, %d failed, %d started during the restart (%s), slowest of those %s\n",
		kind, len(attempts), failed, inWindow, to.Sub(from).Round(time.Millisecond), slowest.Round(time.Millisecond))
	if failed > 0 {
		return fmt.Errorf("%d of %d attempts failed", failed, len(attempts))
	}
	if inWindow == 0 {
		return errors.New("no attempt started during the restart window: the test proved nothing")
	}
	return nil
}

// readWindow reads "<start> <end>" in unix nanoseconds.
func readWindow(path string) (from, to time.Time, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return from, to, err
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return from, to, fmt.Errorf("%s: want \"<start> <end>\", got %q", path, data)
	}
	a, err1 := strconv.ParseInt(f[0], 10, 64)
	b, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil || b < a {
		return from, to, fmt.Errorf("%s: bad window %q", path, data)
	}
	return time.Unix(0, a), time.Unix(0, b), nil
}
