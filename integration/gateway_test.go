package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
)

// Hundreds of clients spread over 4 sidecars; a push to each client's URL
// goes through nginx's push port for the sidecar that holds it and reaches
// exactly that client.
func TestAffinityThroughNginx(t *testing.T) {
	g := startUp(t, 4, "127.0.0.1", "")
	const clients = 200
	conns := make([]*websocket.Conn, clients)
	urls := make([]string, clients)
	ports := map[string]int{}
	for i := range conns {
		var welcome string
		conns[i], welcome = mustDial(t, g.clientWS, "")
		urls[i] = firstURL(welcome)
		u, err := url.Parse(urls[i])
		if err != nil || u.User.Username() == "" {
			t.Fatalf("welcome %q", welcome)
		}
		ports[u.Port()]++
	}
	if len(ports) != 4 {
		t.Fatalf("clients on %d push ports, want all 4: %v", len(ports), ports)
	}
	hc := httpClient("")
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				s, body, err := tryDo(hc, "POST", urls[i], "", []byte(fmt.Sprintf("%d/%d", i, j)))
				if err != nil || s != 204 {
					errs <- fmt.Errorf("push to client %d: %d %s %v", i, s, body, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i, c := range conns {
		for j := 0; j < 5; j++ {
			if _, msg := wstest.ReadMessage(t, c); string(msg) != fmt.Sprintf("%d/%d", i, j) {
				t.Fatalf("client %d got %q, want %d/%d", i, msg, i, j)
			}
		}
	}
	t.Logf("clients per push port: %v", ports)
	// Every push took the sidecars' fast path: the one connection each
	// handed to net/http is the one /metrics is read on now.
	for i := range 4 {
		push := net.JoinHostPort("127.0.0.1", strconv.Itoa(g.portBase+i))
		if got := metric(t, push, "wsgate_push_handovers_total"); got != 1 {
			t.Errorf("sidecar %d handed %v connections to net/http, want 1", i+1, got)
		}
	}
}

// The sidecars share the machine's cores: each runs on its share of
// threads (GOMAXPROCS), at least one.
func TestSidecarsShareCores(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment, which the sidecars inherit")
	}
	g := startUp(t, 2, "127.0.0.1", "")
	want := max(1, runtime.NumCPU()/2)
	for i := range 2 {
		push := net.JoinHostPort("127.0.0.1", strconv.Itoa(g.portBase+i))
		if got := int(metric(t, push, "go_sched_gomaxprocs_threads")); got != want {
			t.Errorf("sidecar %d runs on %d threads, want %d of %d CPUs", i+1, got, want, runtime.NumCPU())
		}
	}
}

// Every push case of SPEC §4, through nginx, with push ports that are
// http servers and with push ports that are stream servers.
func TestPushCasesThroughNginx(t *testing.T) {
	forPushProxies(t, testPushCases)
}

func testPushCases(t *testing.T, extra string) {
	g := startUp(t, 2, "127.0.0.1", extra)
	c, welcome := mustDial(t, g.clientWS, "")
	pushURL := firstURL(welcome)
	u, _ := url.Parse(pushURL)
	id := u.User.Username()
	noUser := "http://" + u.Host + u.Path
	byPath := noUser + "/" + id
	hc := httpClient("")
	const max = 64 << 10

	expectFrame := func(kind int, want []byte) {
		t.Helper()
		gotKind, got := wstest.ReadMessage(t, c)
		if gotKind != kind || !bytes.Equal(got, want) {
			t.Fatalf("frame type %d, %d bytes; want type %d, %d bytes", gotKind, len(got), kind, len(want))
		}
	}
	expectError := func(method, target, ctype string, body []byte, status int, has string) {
		t.Helper()
		s, resp := do(t, hc, method, target, ctype, body)
		var e struct{ Error string }
		if s != status || json.Unmarshal([]byte(resp), &e) != nil || !strings.Contains(e.Error, has) {
			t.Fatalf("%s %s: %d %q, want %d with a JSON error containing %q", method, target, s, resp, status, has)
		}
	}

	exact := bytes.Repeat([]byte("é"), max/2) // 64 KiB of valid UTF-8
	if s, body := post(t, hc, pushURL, "text/plain; charset=utf-8", exact); s != 204 {
		t.Fatalf("exactly max_body: %d %s", s, body)
	}
	expectFrame(websocket.TextMessage, exact)

	bin := make([]byte, 3000)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	if s, _ := post(t, hc, byPath, "application/octet-stream", bin); s != 204 {
		t.Fatalf("binary by path: %d", s)
	}
	expectFrame(websocket.BinaryMessage, bin)

	if s, _ := post(t, hc, pushURL, "", nil); s != 204 {
		t.Fatalf("empty: %d", s)
	}
	expectFrame(websocket.TextMessage, []byte{})

	expectError("POST", pushURL, "", append(exact, 'x'), 413, "max_body")
	// Far over the limit: the backend gets the 413 (from nginx, or with
	// push_proxy = "stream" from the sidecar, which reads the rest of the
	// body first), not a reset, and the next push goes through.
	expectError("POST", pushURL, "", bytes.Repeat([]byte("x"), 4<<20), 413, "max_body")
	if s, body := post(t, hc, pushURL, "", []byte("after 413")); s != 204 {
		t.Fatalf("after 413: %d %s", s, body)
	}
	expectFrame(websocket.TextMessage, []byte("after 413"))
	expectError("POST", pushURL, "text/plain", []byte{0xc3, 0x28}, 400, "UTF-8")
	expectError("POST", noUser, "", []byte("x"), 400, "no client id")
	expectError("POST", "http://AAAAAAAAAAAAAAAAAAAAAA@"+u.Host+u.Path, "", []byte("x"), 404, "no such client")
	expectError("GET", pushURL, "", nil, 405, "not allowed")

	// Nothing refused reached the client; DELETE closes it with 1000.
	if s, _ := do(t, hc, "DELETE", pushURL, "", nil); s != 204 {
		t.Fatalf("DELETE: %d", s)
	}
	if code := wstest.MustCloseCode(t, c); code != websocket.CloseNormalClosure {
		t.Fatalf("close %d, want 1000", code)
	}
	expectError("POST", pushURL, "", []byte("late"), 404, "no such client")

	// Metrics are served on the push port.
	s, metrics := do(t, hc, "GET", "http://"+u.Host+"/metrics", "", nil)
	if s != 200 || !strings.Contains(metrics, `wsgate_pushes_total{code="405"} 1`) {
		t.Fatalf("metrics: %d\n%s", s, metrics)
	}

	// nginx's stub_status is on the first push port when it is an http
	// server; as a stream server, or with push_proxy = "none", that port
	// reaches the sidecar.
	httpPush := extra == "" || strings.Contains(extra, `push_proxy = "http"`)
	s, page := do(t, hc, "GET", fmt.Sprintf("http://127.0.0.1:%d/nginx_status", g.portBase), "", nil)
	if served := s == 200 && strings.Contains(page, "Active connections"); served != httpPush {
		t.Fatalf("%s: GET /nginx_status: %d %s", extra, s, page)
	}
}

func TestIPv6(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback on this machine")
	} else {
		l.Close()
	}
	g := startUp(t, 2, "::1", "")
	if !strings.HasPrefix(g.clientWS, "ws://[::1]:") {
		t.Fatalf("client URL %s", g.clientWS)
	}
	c, welcome := mustDial(t, g.clientWS, "")
	pushURL := firstURL(welcome)
	if !strings.Contains(pushURL, "@[::1]:") {
		t.Fatalf("push URL %q: IPv6 host must be in brackets", pushURL)
	}
	if s, body := post(t, httpClient(""), pushURL, "", []byte("over v6")); s != 204 {
		t.Fatalf("push: %d %s", s, body)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "over v6" {
		t.Fatalf("got %q", msg)
	}
}

// With short intervals, nginx keeps a pinged client that answers and the
// sidecar closes one that does not with 1001, through nginx.
func TestKeepaliveThroughNginx(t *testing.T) {
	g := startUp(t, 1, "127.0.0.1", "[websocket]\nping_interval = \"100ms\"\nidle_timeout = \"500ms\"\n")
	alive, _ := mustDial(t, g.clientWS, "")
	pings := wstest.AnswerPings(alive)
	aliveErr := make(chan error, 1)
	go func() {
		_, _, err := alive.ReadMessage()
		aliveErr <- err
	}()
	silent, _ := mustDial(t, g.clientWS, "")
	silent.SetPingHandler(func(string) error { return nil })
	if code := wstest.MustCloseCode(t, silent); code != websocket.CloseGoingAway {
		t.Fatalf("silent client: close %d, want 1001", code)
	}
	for i := 0; i < 15; i++ { // 15 pings: three idle timeouts
		select {
		case <-pings:
		case err := <-aliveErr:
			t.Fatalf("answering client lost after %d pings: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatal("no ping through nginx")
		}
	}
}

// A client that only receives, pushed to more often than ping_interval
// through nginx, is pinged anyway, answers through nginx, and stays past
// idle_timeout.
func TestKeepaliveBusyClientThroughNginx(t *testing.T) {
	g := startUp(t, 1, "127.0.0.1", "[websocket]\nping_interval = \"300ms\"\nidle_timeout = \"1500ms\"\n")
	c, welcome := mustDial(t, g.clientWS, "")
	pings := wstest.AnswerPings(c)
	read := wstest.Drain(c)
	hc := httpClient("")
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if status, body := post(t, hc, firstURL(welcome), "", []byte("x")); status != 204 {
			t.Fatalf("push: %d %s", status, body)
		}
	}
	select {
	case err := <-read:
		t.Fatalf("closed although it answered every ping: %v", err)
	default:
	}
	if len(pings) == 0 {
		t.Fatal("never pinged while pushes flowed")
	}
}

// kill -9 of a sidecar under up: it is restarted on the same sockets, and no
// client that connects meanwhile is refused.
func TestSidecarCrashRefusesNoClient(t *testing.T) {
	g := startUp(t, 2, "127.0.0.1", "")
	old := g.sidecarPID(t, 1)
	stop := make(chan struct{})
	results := make(chan error, 100000)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, _, err := dialWS(g.clientWS, "")
				if err == nil {
					c.Close()
					ok.Add(1)
				}
				results <- err
			}
		}()
	}
	waitFor(t, 20*time.Second, "connects before the kill", func() bool { return ok.Load() >= 20 })
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "sidecar 1 restarted", func() bool {
		for pid, line := range g.pids() {
			if pid != old && strings.Contains(line, " serve ") && strings.HasSuffix(line, "-instance 1") {
				return true
			}
		}
		return false
	})
	after := ok.Load()
	waitFor(t, 20*time.Second, "connects after the restart", func() bool { return ok.Load() >= after+40 })
	close(stop)
	wg.Wait()
	close(results)
	n, lost := 0, 0
	for err := range results {
		n++
		var we *welcomeError
		switch {
		case errors.As(err, &we):
			lost++ // accepted by the sidecar that was killed: its clients go with it
		case err != nil:
			t.Errorf("client refused during the restart: %v", err)
		}
	}
	if lost > 4 {
		t.Errorf("%d clients lost; only those being accepted at the kill may be", lost)
	}
	// The new sidecar 1 serves clients and pushes.
	hc := httpClient("")
	for i := 0; i < 10; i++ {
		c, welcome := mustDial(t, g.clientWS, "")
		if s, _ := post(t, hc, firstURL(welcome), "", []byte("after crash")); s != 204 {
			t.Fatalf("push after restart: %d", s)
		}
		if _, msg := wstest.ReadMessage(t, c); string(msg) != "after crash" {
			t.Fatalf("got %q", msg)
		}
	}
	t.Logf("%d clients connected while sidecar 1 was killed and restarted", n)
}

// A backend that keeps its push connections alive goes on pushing across a
// kill -9 of the sidecar behind the port: its next push is answered by the
// restarted sidecar (404: the client went with the old one), not failed,
// and pushes to new clients are delivered; with push ports as http servers
// (nginx retries on a fresh upstream connection) and as stream servers
// (nginx closes the backend's connection, which its client replaces).
func TestPushAcrossSidecarCrash(t *testing.T) {
	forPushProxies(t, func(t *testing.T, extra string) {
		g := startUp(t, 2, "127.0.0.1", extra)
		port := strconv.Itoa(g.portBase) // instance 1
		dial := func() (*websocket.Conn, string) {
			t.Helper()
			for i := 0; i < 50; i++ {
				c, welcome := mustDial(t, g.clientWS, "")
				if u, _ := url.Parse(firstURL(welcome)); u.Port() == port {
					return c, firstURL(welcome)
				}
				c.Close()
			}
			t.Fatal("no client on instance 1 in 50 tries")
			return nil, ""
		}
		c, pushURL := dial()
		hc := httpClient("")
		if s, body := post(t, hc, pushURL, "", []byte("before")); s != 204 {
			t.Fatalf("push before the kill: %d %s", s, body)
		}
		old := g.sidecarPID(t, 1)
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if _, msg := wstest.ReadMessage(t, c); string(msg) != "before" {
			t.Fatalf("got %q", msg)
		}
		wstest.MustCloseCode(t, c) // gone with the sidecar
		waitFor(t, 20*time.Second, "sidecar 1 restarted", func() bool {
			for pid, line := range g.pids() {
				if pid != old && strings.Contains(line, " serve ") && strings.HasSuffix(line, "-instance 1") {
					return true
				}
			}
			return false
		})
		if s, body := post(t, hc, pushURL, "", []byte("to the old client")); s != 404 {
			t.Fatalf("push to the old client after the restart: %d %s", s, body)
		}
		c, pushURL = dial()
		if s, body := post(t, hc, pushURL, "", []byte("after")); s != 204 {
			t.Fatalf("push to a new client: %d %s", s, body)
		}
		if _, msg := wstest.ReadMessage(t, c); string(msg) != "after" {
			t.Fatalf("got %q", msg)
		}
	})
}

// nginx reload (SIGHUP to up, forwarded to nginx) keeps connected clients.
func TestNginxReloadKeepsClients(t *testing.T) {
	g := startUp(t, 2, "127.0.0.1", "")
	c, welcome := mustDial(t, g.clientWS, "")
	master, workersBefore := reload(g)
	waitFor(t, 20*time.Second, "new nginx workers", func() bool {
		for pid := range childrenOf(g, master) {
			if _, old := workersBefore[pid]; !old {
				return true
			}
		}
		return false
	})
	if s, _ := post(t, httpClient(""), firstURL(welcome), "", []byte("after reload")); s != 204 {
		t.Fatalf("push after reload: %d", s)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "after reload" {
		t.Fatalf("got %q", msg)
	}
	// New clients connect through the new workers.
	mustDial(t, g.clientWS, "")
}

// After a reload an old worker keeps its WebSockets only for
// nginx.worker_shutdown_timeout, then closes them and exits; the client
// reconnects through a new worker.
func TestNginxReloadBoundsOldWorkers(t *testing.T) {
	g := startUp(t, 1, "127.0.0.1", "[nginx]\nworker_shutdown_timeout = \"1s\"\n")
	c, _ := mustDial(t, g.clientWS, "")
	master, workersBefore := reload(g)
	waitFor(t, 30*time.Second, "the old nginx workers to exit", func() bool {
		for pid := range workersBefore {
			if _, alive := childrenOf(g, master)[pid]; alive {
				return false
			}
		}
		return true
	})
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
		t.Fatalf("the client of an old worker: %v, want its connection closed (1006)", err)
	}
	mustDial(t, g.clientWS, "")
}

// reload sends up the SIGHUP that reloads nginx and returns nginx's master
// and the workers it had before.
func reload(g *gateway) (master int, workers map[int]string) {
	for pid, line := range g.pids() {
		if strings.Contains(line, "nginx") && strings.Contains(line, " -p ") {
			master = pid
		}
	}
	workers = childrenOf(g, master)
	g.cmd.Process.Signal(syscall.SIGHUP)
	return master, workers
}

func childrenOf(g *gateway, parent int) map[int]string {
	out := map[int]string{}
	for pid, line := range g.pids() {
		if strings.HasPrefix(line, "nginx: worker") && pid != parent {
			out[pid] = line
		}
	}
	return out
}

// SIGTERM to up: clients get 1012 through nginx, up exits 0, and no
// sidecar or nginx process is left.
func TestUpShutdown(t *testing.T) {
	g := startUp(t, 2, "127.0.0.1", "")
	var conns []*websocket.Conn
	for i := 0; i < 6; i++ {
		c, _ := mustDial(t, g.clientWS, "")
		conns = append(conns, c)
	}
	procs := g.pids()
	if len(procs) < 4 { // 2 sidecars, nginx master, at least one worker
		t.Fatalf("processes under up: %v", procs)
	}
	g.stopExpecting1012(t, conns)
	waitFor(t, 10*time.Second, "no process left", func() bool { return len(alive(procs)) == 0 })
}

// POST <location>/batch through nginx delivers many messages in one request
// to the clients of that push port's sidecar; over push.max_batch nginx
// (or with push_proxy = "stream" the sidecar) answers 413 in JSON.
func TestBatchThroughNginx(t *testing.T) {
	forPushProxies(t, testBatch)
}

func testBatch(t *testing.T, extra string) {
	g := startUp(t, 2, "127.0.0.1", extra)
	byPort := map[string][]*websocket.Conn{}
	ids := map[*websocket.Conn]string{}
	var port string
	for port == "" {
		c, welcome := mustDial(t, g.clientWS, "")
		u, _ := url.Parse(firstURL(welcome))
		ids[c] = u.User.Username()
		byPort[u.Port()] = append(byPort[u.Port()], c)
		if len(byPort[u.Port()]) == 2 {
			port = u.Port()
		}
	}
	a, b := byPort[port][0], byPort[port][1]
	var body strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&body, "{\"id\":%q,\"text\":\"a%d\"}\n{\"id\":%q,\"binary\":\"AAE=\"}\n", ids[a], i, ids[b])
	}
	hc := httpClient("")
	batchURL := "http://127.0.0.1:" + port + "/ws/batch"
	s, resp := post(t, hc, batchURL, "application/x-ndjson", []byte(body.String()))
	if s != 200 || strings.Count(resp, `{"status":204}`) != 200 {
		t.Fatalf("batch: %d %.200s", s, resp)
	}
	for i := 0; i < 100; i++ {
		if _, msg := wstest.ReadMessage(t, a); string(msg) != fmt.Sprintf("a%d", i) {
			t.Fatalf("a got %q", msg)
		}
		if kind, msg := wstest.ReadMessage(t, b); kind != websocket.BinaryMessage || !bytes.Equal(msg, []byte{0, 1}) {
			t.Fatalf("b got %d %x", kind, msg)
		}
	}
	s, resp = post(t, hc, batchURL, "", bytes.Repeat([]byte("x"), 256<<10+1))
	if s != 413 || !strings.Contains(resp, "max_batch") {
		t.Fatalf("over max_batch: %d %s", s, resp)
	}
}

// `wsgate up` works for a user without privileges too: nginx then runs as
// that user, with no user directive, and everything lives in its state dir.
func TestUpAsUnprivilegedUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("already unprivileged: every other test here runs up as this user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	g := startUpAs(t, 2, "127.0.0.1", "", []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"})
	procs := g.pids()
	if len(procs) < 4 { // 2 sidecars, nginx master, at least one worker
		t.Fatalf("processes under up: %v", procs)
	}
	for pid, line := range procs {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "\nUid:\t65534\t") {
			t.Errorf("%s runs as another user:\n%s", line, status)
		}
	}
	c, welcome := mustDial(t, g.clientWS, "")
	if s, body := post(t, httpClient(""), firstURL(welcome), "", []byte("unprivileged")); s != 204 {
		t.Fatalf("push: %d %s", s, body)
	}
	if _, msg := wstest.ReadMessage(t, c); string(msg) != "unprivileged" {
		t.Fatalf("got %q", msg)
	}
	g.stop(t)
}

// With push.listen on two addresses (IPv4 and IPv6 loopback), each client's
// welcome has a push URL for each, and a push to either reaches it, with
// push ports as http servers and as stream servers.
func TestPushOnEveryListenAddress(t *testing.T) {
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no ::1 on this machine")
	} else {
		l.Close()
	}
	forPushProxies(t, func(t *testing.T, extra string) {
		g := launch(t, 2, "127.0.0.1", []string{"127.0.0.1", "::1"}, extra, nil)
		hc := httpClient("")
		for i := 0; i < 4; i++ {
			c, welcome := mustDial(t, g.clientWS, "")
			urls := strings.Split(welcome, ",")
			if len(urls) != 2 || !strings.Contains(urls[0], "@127.0.0.1:") || !strings.Contains(urls[1], "@[::1]:") {
				t.Fatalf("welcome %q, want a push URL on 127.0.0.1 and one on [::1]", welcome)
			}
			for j, u := range urls {
				msg := fmt.Sprintf("%d via %d", i, j)
				if s, body := post(t, hc, u, "", []byte(msg)); s != 204 {
					t.Fatalf("push to %s: %d %s", u, s, body)
				}
				if _, got := wstest.ReadMessage(t, c); string(got) != msg {
					t.Fatalf("got %q, want %q", got, msg)
				}
			}
		}
	})
}
