package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/internal/wstest"
	"github.com/wsgate/wsgate/status"
)

// scrape sums the samples of every instance's /metrics, read through
// nginx's push ports, by series (name and labels as exposed).
func scrape(t *testing.T, g *gateway, instances int) map[string]float64 {
	t.Helper()
	sums := map[string]float64{}
	for i := 0; i < instances; i++ {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", g.portBase+i))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			sp := strings.LastIndexByte(line, ' ')
			if strings.HasPrefix(line, "#") || sp < 0 {
				continue
			}
			v, err := strconv.ParseFloat(line[sp+1:], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			sums[line[:sp]] += v
		}
		resp.Body.Close()
	}
	return sums
}

// The scripted workload through nginx: connect 10, push 50, push 5
// to unknown ids, close 3; the metrics of both sidecars add up to it.
func TestMetricsUnderWorkload(t *testing.T) {
	const instances = 2
	g := startUp(t, instances, "127.0.0.1", "")
	conns := make([]*websocket.Conn, 10)
	urls := make([]string, 10)
	for i := range conns {
		var welcome string
		conns[i], welcome = mustDial(t, g.clientWS, "")
		urls[i] = firstURL(welcome)
	}
	hc := httpClient("")
	bytes := 0
	for i := 0; i < 50; i++ {
		msg := fmt.Sprintf("message %d", i)
		bytes += len(msg)
		if s, body := post(t, hc, urls[i%10], "", []byte(msg)); s != 204 {
			t.Fatalf("push %d: %d %s", i, s, body)
		}
	}
	for _, c := range conns {
		for j := 0; j < 5; j++ {
			wstest.ReadMessage(t, c)
		}
	}
	for i := 0; i < 5; i++ {
		u := fmt.Sprintf("http://127.0.0.1:%d/ws/AAAAAAAAAAAAAAAAAAAAA%d", g.portBase+i%instances, i)
		if s, body := post(t, hc, u, "", []byte("lost")); s != 404 {
			t.Fatalf("push to an unknown id: %d %s", s, body)
		}
	}
	for _, c := range conns[:3] {
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		if code := wstest.MustCloseCode(t, c); code != websocket.CloseNormalClosure {
			t.Fatalf("close answered with %d", code)
		}
	}

	want := map[string]float64{
		"wsgate_connections":                           7,
		"wsgate_connects_total":                        10,
		`wsgate_pushes_total{code="204"}`:              50,
		`wsgate_pushes_total{code="404"}`:              5,
		`wsgate_disconnects_total{code="1000"}`:        3,
		"wsgate_messages_sent_total":                   50,
		"wsgate_message_sent_bytes_total":              float64(bytes),
		"wsgate_push_latency_seconds_count":            50,
		"wsgate_send_queue_messages":                   0,
		`wsgate_push_drops_total{reason="queue_full"}`: 0,
		`wsgate_build_info{version="dev"}`:             instances,
	}
	var diff []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := scrape(t, g, instances)
		diff = diff[:0]
		for k, v := range want {
			if got[k] != v {
				diff = append(diff, fmt.Sprintf("%s = %v, want %v", k, got[k], v))
			}
		}
		for _, k := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes"} {
			if got[k] <= 0 {
				diff = append(diff, k+" missing")
			}
		}
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics after the workload:\n%s", strings.Join(diff, "\n"))
		}
	}
}

// wsgate status, as up's banner says to run it, against that up: every
// instance with its connections, nginx's stub_status, and a stopped sidecar
// reported down with exit 1.
func TestStatusCommand(t *testing.T) {
	const instances = 3
	g := startUp(t, instances, "127.0.0.1", "")
	var m []string
	waitFor(t, 10*time.Second, "the status command in up's banner", func() bool {
		m = regexp.MustCompile(`wsgate status -config (\S+)\n`).FindStringSubmatch(g.out.String())
		return m != nil
	})
	cfg := m[1]
	perInstance := make([]int, instances)
	for i := 0; i < 7; i++ {
		_, welcome := mustDial(t, g.clientWS, "")
		u := firstURL(welcome)
		port, _ := strconv.Atoi(u[strings.LastIndexByte(u, ':')+1 : strings.LastIndexByte(u, '/')])
		perInstance[port-g.portBase]++
		if s, body := post(t, httpClient(""), u, "", []byte("x")); s != 204 {
			t.Fatalf("push: %d %s", s, body)
		}
	}

	code, out := runStatus(t, "-config", cfg, "-json", "-interval", "0")
	var r status.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 {
		t.Fatalf("wsgate status -json: exit %d, %v\n%s", code, err, out)
	}
	for i, in := range r.Instances {
		if !in.Up || in.Status.Instance != i+1 || in.Status.PID != g.sidecarPID(t, i+1) ||
			in.Status.Connections != perInstance[i] || (perInstance[i] > 0) != (in.PushesPerSecond > 0) {
			t.Errorf("instance %d: %+v %+v, want %d connections", i+1, in, in.Status, perInstance[i])
		}
	}
	if r.Totals.Up != instances || r.Totals.Connections != 7 {
		t.Errorf("totals %+v", r.Totals)
	}
	if !r.Nginx.Up || r.Nginx.Active < 7 || r.Nginx.Requests < 7 {
		t.Errorf("nginx %+v, want at least the 7 WebSockets", r.Nginx)
	}

	// A stopped sidecar accepts into its socket's backlog but never answers.
	pid := g.sidecarPID(t, 2)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) }) // before up stops
	code, out = runStatus(t, "-config", cfg, "-timeout", "1s")
	if code != 1 {
		t.Errorf("exit %d with instance 2 stopped, want 1\n%s", code, out)
	}
	for _, want := range []string{
		fmt.Sprintf(`\n1 +%d +\S+ +%d +\d+\.\d +0\n`, g.sidecarPID(t, 1), perInstance[0]),
		`\n2 +- +down +- +- +-\n`,
		fmt.Sprintf(`\n3 +%d +\S+ +%d +\d+\.\d +0\n`, g.sidecarPID(t, 3), perInstance[2]),
		fmt.Sprintf(`\ntotal +2/3 up +%d +\d+\.\d +0\n`, perInstance[0]+perInstance[2]),
		regexp.QuoteMeta("\ninstance 2 is down: " + filepath.Join(g.dir, "run", "push-2.sock") + ": no answer within 1s\n"),
		`\nnginx: \d+ active connections`,
		`\nwsgate status: 1 of 3 instances down\n`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("wsgate status output does not match %s:\n%s", want, out)
		}
	}
}

// runStatus runs wsgate status and returns its exit code and output.
func runStatus(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(wsgateBin, append([]string{"status"}, args...)...).CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	return exitCode(err), string(out)
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

// logLines decodes the JSON lines of out; other lines (nginx's) are skipped.
func logLines(out string) []map[string]any {
	var lines []map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			lines = append(lines, m)
		}
	}
	return lines
}

// findLine returns the first line with msg and id, or nil.
func findLine(lines []map[string]any, msg, id string) map[string]any {
	for _, l := range lines {
		if l["msg"] == msg && l["id"] == id {
			return l
		}
	}
	return nil
}

// The connect and close lines carry the documented fields, with the
// client's address as nginx saw it (X-Real-IP).
func TestConnectCloseLogFields(t *testing.T) {
	g := startUp(t, 1, "127.0.0.1", "[log]\nformat = \"json\"\nlevel = \"debug\"\n")
	c, welcome := mustDial(t, g.clientWS, "")
	u := firstURL(welcome)
	id := u[len("http://"):strings.IndexByte(u, '@')]
	for _, m := range []string{"one", "two"} {
		if s, body := post(t, httpClient(""), u, "", []byte(m)); s != 204 {
			t.Fatalf("push: %d %s", s, body)
		}
		wstest.ReadMessage(t, c)
	}
	c.WriteMessage(websocket.TextMessage, []byte("up"))
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	wstest.MustCloseCode(t, c)
	waitFor(t, 10*time.Second, "the close line", func() bool { return findLine(logLines(g.out.String()), "close", id) != nil })

	lines := logLines(g.out.String())
	connect, closed := findLine(lines, "connect", id), findLine(lines, "close", id)
	if connect == nil {
		t.Fatalf("no connect line for %s", id)
	}
	for _, l := range []map[string]any{connect, closed} {
		if l["level"] != "DEBUG" || l["instance"] != 1.0 || l["remote"] != "127.0.0.1" {
			t.Errorf("%s line: %v", l["msg"], l)
		}
	}
	d, err := time.ParseDuration(fmt.Sprint(closed["duration"]))
	if closed["code"] != 1000.0 || closed["in"] != 1.0 || closed["out"] != 2.0 || err != nil || d < 0 {
		t.Errorf("close line: %v", closed)
	}
}

// -log-level overrides log.level, and SIGUSR1 toggles debug (connect lines)
// on and back off.
func TestLogLevelFlagAndSIGUSR1(t *testing.T) {
	dir := t.TempDir()
	runtime := filepath.Join(dir, "run")
	cfg := writeConfig(t, dir, "instances = 1\nruntime_dir = \""+runtime+"\"\n[log]\nlevel = \"warn\"\nformat = \"text\"\n")
	cmd := exec.Command(wsgateBin, "serve", "-config", cfg, "-instance", "1", "-log-level", "info")
	out := &wstest.Output{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("wsgate serve output:\n%s", out)
		}
	})
	wsPath, pushPath := filepath.Join(runtime, "ws-1.sock"), filepath.Join(runtime, "push-1.sock")
	waitFor(t, 10*time.Second, "the sockets", func() bool { _, err := os.Stat(pushPath); return err == nil })
	if !strings.Contains(out.String(), "msg=starting") {
		t.Fatalf("no info line at -log-level info over log.level warn:\n%s", out)
	}
	dial := func() string {
		d := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("unix", wsPath) }}
		c, _, err := d.Dial("ws://wsgate/ws", http.Header{"X-Real-Ip": {"192.0.2.7"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_, welcome := wstest.ReadMessage(t, c)
		return string(welcome[len("http://"):strings.IndexByte(string(welcome), '@')])
	}
	hc := httpClient(pushPath)
	disconnects := func() string {
		_, body := do(t, hc, "GET", "http://push/metrics", "", nil)
		for _, l := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(l, `wsgate_disconnects_total{code="1000"} `); ok {
				return v
			}
		}
		return "0"
	}

	// At info, a client comes and goes without a line.
	quiet := dial()
	if s, _ := do(t, hc, "DELETE", "http://push/ws/"+quiet, "", nil); s != 204 {
		t.Fatalf("DELETE: %d", s)
	}
	waitFor(t, 10*time.Second, "the disconnect", func() bool { return disconnects() == "1" })

	syscall.Kill(cmd.Process.Pid, syscall.SIGUSR1)
	waitFor(t, 10*time.Second, "debug on", func() bool {
		return strings.Contains(out.String(), `msg="log level changed" instance=1 log_level=DEBUG`)
	})
	loud := dial()
	waitFor(t, 10*time.Second, "the connect line", func() bool {
		return strings.Contains(out.String(), "msg=connect instance=1 id="+loud+" remote=192.0.2.7")
	})
	syscall.Kill(cmd.Process.Pid, syscall.SIGUSR1)
	waitFor(t, 10*time.Second, "debug off", func() bool {
		return strings.Contains(out.String(), `msg="log level changed" instance=1 log_level=INFO`)
	})
	if strings.Contains(out.String(), quiet) {
		t.Errorf("a client connected at info level was logged:\n%s", out)
	}
}
