package sidecar

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
)

// BenchmarkPush is one push through the push API to a connected client that
// reads it: HTTP parse, lookup, queue, frame write, over real unix sockets.
func BenchmarkPush(b *testing.B) {
	ts := newTestServer(b, nil)
	c, id := ts.connect(b)
	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	body := bytes.Repeat([]byte("x"), 64)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Stay well inside the send queue: a push that finds it full is
		// refused (503), which is not what this measures.
		for int64(i)-received.Load() >= 32 {
			runtime.Gosched()
		}
		req, _ := http.NewRequest("POST", "http://push/ws/"+id, bytes.NewReader(body))
		resp, err := ts.http.Do(req)
		if err != nil || resp.StatusCode != 204 {
			b.Fatalf("push: %v %v", err, resp)
		}
		resp.Body.Close()
	}
	<-done
}

// BenchmarkRegistryGetParallel looks ids up from every core at once.
func BenchmarkRegistryGetParallel(b *testing.B) {
	r := newRegistry()
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = newID()
		r.add(&client{id: ids[i]})
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if r.get(ids[i%len(ids)]) == nil {
				b.Fatal("lost")
			}
			i++
		}
	})
}

// BenchmarkIdleClientMemory reports the sidecar's heap and stack bytes per
// idle client (the clients' ends live in the same process and are measured
// before the server's are created, then subtracted).
func BenchmarkIdleClientMemory(b *testing.B) {
	const n = 2000
	ts := newTestServer(b, nil)
	for range b.N {
		var clients []net.Conn
		before := memInUse()
		for range n {
			// A bare client: the handshake written by hand and the 101
			// with the welcome read at once (they come in one write), so
			// that the client side is a socket and little else.
			c, err := net.Dial("unix", ts.wsPath)
			if err != nil {
				b.Fatal(err)
			}
			io.WriteString(c, upgradeRequest+"\r\n")
			buf := make([]byte, 512)
			if m, err := c.Read(buf); err != nil || !bytes.Contains(buf[:m], []byte("\r\n\r\n\x81")) {
				b.Fatalf("handshake: %v %q", err, buf[:m])
			}
			clients = append(clients, c)
		}
		eventually(b, "clients registered", func() bool { return ts.Connections() == n })
		after := memInUse()
		// Go heap and stacks in use, per client; the client end is a
		// socket (a few hundred bytes) of it.
		b.ReportMetric(float64(after-before)/n, "B/conn")
		for _, c := range clients {
			c.Close()
		}
		eventually(b, "clients gone", func() bool { return ts.Connections() == 0 })
	}
}

func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// BenchmarkHandshake is one client accepted end to end: upgrade, id,
// registration and the welcome read by the client.
func BenchmarkHandshake(b *testing.B) {
	ts := newTestServer(b, nil)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, _, err := ts.tryDial(nil)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
