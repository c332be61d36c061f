package sidecar

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// writeAll sends every byte of its buffers in order, empty ones and more
// than one writev takes included, waiting while the socket is full.
func TestWriteAll(t *testing.T) {
	server, client := unixPair(t)
	var bufs [][]byte
	var want []byte
	for i, n := range []int{0, 3, 0, 1 << 20, 5, 0, 7, 1, 0} {
		b := bytes.Repeat([]byte{'a' + byte(i)}, n)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	server.SetWriteDeadline(time.Now().Add(10 * time.Second))
	n, err := writeAll(rawConnOf(t, server), bufs...)
	server.Close()
	if err != nil || n != len(want) {
		t.Fatalf("wrote %d of %d: %v", n, len(want), err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("read %d bytes, not what was written", len(b))
	}
	if n, err := writeAll(rawConnOf(t, client), nil, []byte{}); n != 0 || err != nil {
		t.Fatalf("nothing to write: %d %v", n, err)
	}
}

// A rawConn reads what arrives, waits for more until its deadline, and
// reads io.EOF when the peer has closed; its writes wait for room until
// their deadline, and fail once the peer is gone.
func TestRawConn(t *testing.T) {
	server, client := unixPair(t)
	c := newRawConn(server)
	if _, ok := c.(*rawConn); !ok {
		t.Fatalf("a unix socket made %T, not a rawConn", c)
	}
	client.Write([]byte("hello"))
	buf := make([]byte, 16)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing sent: %v, want the deadline", err)
	}
	var ne net.Error
	if _, err := c.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v is not a net.Error timeout (net/http needs one)", err)
	}

	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	big := make([]byte, 8<<20) // more than the socket holds: the peer does not read
	if n, err := c.Write(big); !errors.Is(err, os.ErrDeadlineExceeded) || n == len(big) {
		t.Fatalf("write to a full socket: %d of %d, %v; want at most part of it, then the deadline", n, len(big), err)
	}

	// A peer that closes with data unread resets the connection: a
	// *net.OpError, as package net gives.
	server, client = unixPair(t)
	c = newRawConn(server)
	c.Write([]byte("unread"))
	client.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var oe *net.OpError
	if _, err := c.Read(buf); !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &oe) || oe.Op != "read" {
		t.Fatalf("read after a reset: %v, want ECONNRESET in a *net.OpError", err)
	}

	// CloseWrite: the peer reads EOF, the other direction still works.
	server, client = unixPair(t)
	c = newRawConn(server)
	if err := c.(*rawConn).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	client.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := client.Read(buf); err != io.EOF {
		t.Fatalf("peer read after CloseWrite: %v, want EOF", err)
	}
	client.Write([]byte("still"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "still" {
		t.Fatalf("read after CloseWrite: %q %v", buf[:n], err)
	}

	// A peer that closed cleanly: EOF, and writes fail.
	server, client = unixPair(t)
	c = newRawConn(server)
	client.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("read after the peer closed: %v, want EOF", err)
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("write after the peer closed succeeded")
	}
}

// A connection without a file descriptor is used as it is.
func TestNewRawConnPipe(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if c := newRawConn(a); c != a {
		t.Fatalf("net.Pipe made %T", c)
	}
}

// Closing a rawConn ends a Read waiting for input and a Write waiting for
// room with net.ErrClosed, as package net does (shutdown closes push
// connections net/http is reading).
func TestRawConnCloseWhileWaiting(t *testing.T) {
	for _, op := range []string{"read", "write"} {
		t.Run(op, func(t *testing.T) {
			server, client := unixPair(t)
			defer client.Close()
			c := newRawConn(server)
			done := make(chan error, 1)
			go func() {
				var err error
				if op == "read" {
					_, err = c.Read(make([]byte, 16))
				} else {
					_, err = c.Write(make([]byte, 8<<20)) // more than the socket holds
				}
				done <- err
			}()
			time.Sleep(50 * time.Millisecond) // most likely waiting by now; if not, it finds the conn closed
			c.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("%s on a closed conn: %v, want net.ErrClosed", op, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s still waiting after Close", op)
			}
		})
	}
}
