package status

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/sidecar"
)

// serve runs instance i of c in process on the sockets it binds itself.
func serve(t *testing.T, c *config.Config, i int) {
	t.Helper()
	ws, push, _, err := sidecar.Listeners(c, i)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		sidecar.New(c, i, slog.New(slog.DiscardHandler), sidecar.WithVersion("test")).Serve(ctx, ws, push...)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// connect opens a WebSocket to instance i and waits for its welcome.
func connect(t *testing.T, c *config.Config, i int) {
	t.Helper()
	d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("unix", c.WSSocket(i)) }}
	conn, _, err := d.Dial("ws://wsgate/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatal(err)
	}
}

// Instances 1 and 2 run, 3 has no socket, and nothing serves stub_status.
func TestQuery(t *testing.T) {
	c := config.Default()
	c.Instances = 3
	c.RuntimeDir = t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.Push.PortBase = l.Addr().(*net.TCPAddr).Port
	l.Close() // refused from now on
	serve(t, &c, 1)
	serve(t, &c, 2)
	connect(t, &c, 1)
	connect(t, &c, 2)
	connect(t, &c, 2)

	r := Query(context.Background(), &c, Options{Timeout: 5 * time.Second})
	if r.Down() != 1 || r.Totals.Up != 2 || r.Totals.Instances != 3 || r.Totals.Connections != 3 {
		t.Errorf("totals %+v, down %d", r.Totals, r.Down())
	}
	for i, want := range []int{1, 2, -1} {
		in := r.Instances[i]
		if in.ID != i+1 || in.Up != (want >= 0) {
			t.Errorf("instance %d: %+v", i+1, in)
			continue
		}
		if want < 0 {
			if !strings.Contains(in.Error, "push-3.sock") || in.Status != nil {
				t.Errorf("instance 3 down without the reason: %+v", in)
			}
			continue
		}
		if st := in.Status; st.Instance != i+1 || st.PID != os.Getpid() || st.Version != "test" || st.Connections != want {
			t.Errorf("instance %d status %+v", i+1, st)
		}
	}
	if r.Nginx.Up || r.Nginx.Error == "" || !strings.HasSuffix(r.Nginx.URL, "/nginx_status") {
		t.Errorf("nginx %+v, want down", r.Nginx)
	}

	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"INSTANCE  PID", "\n3         -", "total     2/3 up", "instance 3 is down: ", "nginx: no stub_status at "} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// Push ports through the stream module: nginx serves no stub_status,
	// which Query reports without asking.
	c.Nginx.PushProxy = "stream"
	r = Query(context.Background(), &c, Options{Timeout: 5 * time.Second})
	if r.Nginx.Up || r.Nginx.URL != "" || r.Nginx.Error != noStubStatus(&c) || r.Totals.Up != 2 {
		t.Errorf("push_proxy = \"stream\": nginx %+v, totals %+v", r.Nginx, r.Totals)
	}
	b.Reset()
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "nginx: stub_status not served with nginx.push_proxy = \"stream\"") {
		t.Errorf("push_proxy = \"stream\": table\n%s", out)
	}
}

// With nginx.push_proxy = "none" the sidecars are asked on their push
// ports, and nginx serves no stub_status.
func TestQueryDirectPush(t *testing.T) {
	c := config.Default()
	c.Instances = 2
	c.RuntimeDir = t.TempDir()
	c.Nginx.PushProxy = "none"
	c.Push.Listen = []string{"0.0.0.0"} // asked on loopback
	c.Push.PortBase = wstest.FreePorts(t, "127.0.0.1", 2)
	serve(t, &c, 1)
	serve(t, &c, 2)
	connect(t, &c, 2)
	r := Query(context.Background(), &c, Options{Timeout: 5 * time.Second})
	if r.Totals.Up != 2 || r.Totals.Connections != 1 || r.Instances[1].Status.Connections != 1 {
		t.Errorf("totals %+v, instances %+v", r.Totals, r.Instances)
	}
	if r.Nginx.Up || r.Nginx.URL != "" || !strings.Contains(r.Nginx.Error, `push_proxy = "none"`) {
		t.Errorf("nginx %+v", r.Nginx)
	}
}

// A sidecar that accepts but never answers is down once the timeout passes.
func TestQueryTimeout(t *testing.T) {
	c := config.Default()
	c.Instances = 1
	c.RuntimeDir = t.TempDir()
	l, err := net.Listen("unix", c.PushSocket(1)) // accepts into the backlog, never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := Query(context.Background(), &c, Options{Timeout: 100 * time.Millisecond})
	if r.Down() != 1 || !strings.Contains(r.Instances[0].Error, "no answer within 100ms") {
		t.Errorf("%+v", r.Instances[0])
	}
}

func TestPushRate(t *testing.T) {
	at := func(pid int, up float64, pushes uint64) *sidecar.Status {
		return &sidecar.Status{PID: pid, UptimeSeconds: up, Counters: sidecar.Counters{Pushes: pushes}}
	}
	for _, tc := range []struct {
		name string
		a, b *sidecar.Status
		want float64
	}{
		{"two samples", at(1, 10, 100), at(1, 12, 140), 20},
		{"one sample: average", nil, at(1, 10, 100), 10},
		{"restarted between samples", at(1, 10, 100), at(2, 4, 8), 2},
		{"just started", nil, at(1, 0, 0), 0},
	} {
		if got := pushRate(tc.a, tc.b); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseStubStatus(t *testing.T) {
	var n Nginx
	err := n.parse("Active connections: 291 \nserver accepts handled requests\n 16630948 16630947 31070465 \nReading: 6 Writing: 179 Waiting: 106 \n")
	want := Nginx{Active: 291, Accepts: 16630948, Handled: 16630947, Requests: 31070465, Reading: 6, Writing: 179, Waiting: 106}
	if err != nil || n != want {
		t.Errorf("parse: %+v %v", n, err)
	}
	for _, bad := range []string{"", "<html>404</html>", "Active connections: x \nserver accepts handled requests\n 1 1 1 \nReading: 0 Writing: 1 Waiting: 0 \n"} {
		if err := (&Nginx{}).parse(bad); err == nil {
			t.Errorf("parse(%q) accepted", bad)
		}
	}
}

func TestNginxURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1": "http://127.0.0.1:48775/nginx_status",
		"0.0.0.0":   "http://127.0.0.1:48775/nginx_status",
		"::":        "http://[::1]:48775/nginx_status",
		"[::1]":     "http://[::1]:48775/nginx_status",
		"10.0.0.5":  "http://10.0.0.5:48775/nginx_status",
	} {
		c := config.Default()
		c.Push.Listen = []string{listen}
		if got := NginxURL(&c); got != want {
			t.Errorf("push.listen %q: %s, want %s", listen, got, want)
		}
	}
}
