// Command wsbench is a load generator for wsgate and, for comparison, Nchan:
// it connects N idle WebSocket clients, measures the handshake rate and the
// server memory they cost, then has P concurrent pushers send M pushes to
// random clients and measures delivery rate, latency and losses, and finally
// (wsgate only) the same with batch requests. One run measures one target;
// bench/bench.sh alternates targets and prints ratios.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

type options struct {
	target       string // "wsgate" or "nchan"
	label        string // names the setup in the report; default target
	wsURL        string // wsgate: ws://host:port/ws; nchan: ws://host:port/sub/
	pubURL       string // nchan: http://host:port/pub/
	clients      int
	handshakeCon int
	pushes       int
	pushers      int
	size         int
	batch        int // lines per batch request; 0 skips the batch run
	rate         int // pushes/s of the fixed-rate run; 0 skips it
	ratePushes   int // pushes of the fixed-rate run
	rootPID      int // server process tree whose memory is measured
	settle       time.Duration
	perfDir      string // where to write a CPU profile of each phase; "" for none
}

// profile starts recording phase when o.perfDir asks for it.
func (o options) profile(phase string) (*profile, error) {
	name := o.label
	if name == "" {
		name = o.target
	}
	return startProfile(o.perfDir, name, phase, o.rootPID)
}

// Result is what one run measured; field names are the JSON output.
type Result struct {
	Target         string  `json:"target"`
	Label          string  `json:"label,omitempty"` // the setup, e.g. "wsgate-stream"; report groups by it
	Clients        int     `json:"clients"`
	HandshakesPerS float64 `json:"handshakes_per_s"`
	HandshakeFails int     `json:"handshake_failures"`
	BytesPerConn   float64 `json:"server_bytes_per_idle_conn"`
	// Of that, by process name (nginx, wsgate); with -pid only.
	BytesPerConnSplit map[string]float64 `json:"server_bytes_per_idle_conn_by_process,omitempty"`
	Pushes            int                `json:"pushes"`
	PushesPerS        float64            `json:"pushes_per_s"`
	Lost              int                `json:"lost"`
	PushErrors        int                `json:"push_errors"`
	P50ms             float64            `json:"p50_ms"`
	P99ms             float64            `json:"p99_ms"`
	MaxMs             float64            `json:"max_ms"`
	BatchMsgsPerS     float64            `json:"batch_messages_per_s,omitempty"`
	// The fixed-rate run: pushes sent at Rate per second, each timed from
	// when it was due (not when it went), so a server that falls behind
	// shows it in its latency.
	Rate      int     `json:"rate,omitempty"`
	RateP50ms float64 `json:"rate_p50_ms,omitempty"`
	RateP99ms float64 `json:"rate_p99_ms,omitempty"`
	RateMaxMs float64 `json:"rate_max_ms,omitempty"`
	RateLost  int     `json:"rate_lost,omitempty"`
	// Server CPU time per handshake, per delivered push and per delivered
	// batch message (µs), in all and by process name; with -pid only.
	HandshakeCPU      float64            `json:"cpu_us_per_handshake,omitempty"`
	HandshakeCPUSplit map[string]float64 `json:"cpu_us_per_handshake_by_process,omitempty"`
	PushCPU           float64            `json:"cpu_us_per_push,omitempty"`
	PushCPUSplit      map[string]float64 `json:"cpu_us_per_push_by_process,omitempty"`
	BatchCPU          float64            `json:"cpu_us_per_batch_message,omitempty"`
	BatchCPUSplit     map[string]float64 `json:"cpu_us_per_batch_message_by_process,omitempty"`
	BatchLost         int                `json:"batch_lost,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.target, "target", "wsgate", "wsgate or nchan")
	flag.StringVar(&o.label, "label", "", "name of the setup measured, for the report (default: -target)")
	flag.StringVar(&o.wsURL, "ws", "ws://127.0.0.1:8080/ws", "client URL (nchan: the subscriber prefix, ws://host:port/sub/)")
	flag.StringVar(&o.pubURL, "pub", "", "nchan publisher prefix, http://host:port/pub/")
	flag.IntVar(&o.clients, "clients", 8000, "idle clients to connect")
	flag.IntVar(&o.handshakeCon, "c", 64, "concurrent handshakes")
	flag.IntVar(&o.pushes, "pushes", 30000, "single-client pushes")
	flag.IntVar(&o.pushers, "p", 32, "concurrent pushers")
	flag.IntVar(&o.size, "size", 64, "push payload bytes (at least 16: send time and sequence)")
	flag.IntVar(&o.batch, "batch", 100, "messages per batch request for the batch run (wsgate; 0: skip)")
	flag.IntVar(&o.rate, "rate", 0, "pushes per second of the fixed-rate run, for latency at equal load (0: skip)")
	flag.IntVar(&o.ratePushes, "rate-pushes", 10000, "pushes of the fixed-rate run")
	flag.IntVar(&o.rootPID, "pid", 0, "server process tree to measure memory of (0: skip)")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "wait before measuring memory")
	flag.StringVar(&o.perfDir, "perf", "", "record the handshake, push and batch phases into `dir`/<label>-<phase>.data (perf record, all CPUs) and .syscalls (the server's system calls per operation, with -pid)")
	asJSON := flag.Bool("json", false, "print the result as JSON instead of a line of text")
	reportPath := flag.String("report", "", "print the comparison of the results (JSON lines) in this `file` and exit")
	flag.Parse()
	if *reportPath != "" {
		if err := report(*reportPath, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "wsbench:", err)
			os.Exit(1)
		}
		return
	}
	if o.size < 16 || (o.target == "nchan" && o.pubURL == "") || (o.target != "nchan" && o.target != "wsgate") {
		fmt.Fprintln(os.Stderr, "wsbench: -size must be ≥16; -target wsgate|nchan; nchan needs -pub")
		os.Exit(2)
	}
	r, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	fmt.Printf("%-8s clients %d: %.0f handshakes/s (%d failed), %.0f B/idle conn, %.0f pushes/s, lost %d, errors %d, p50 %.2fms p99 %.2fms max %.2fms, batch %.0f msgs/s",
		r.Target, r.Clients, r.HandshakesPerS, r.HandshakeFails, r.BytesPerConn, r.PushesPerS, r.Lost, r.PushErrors, r.P50ms, r.P99ms, r.MaxMs, r.BatchMsgsPerS)
	if r.Rate > 0 {
		fmt.Printf(", at %d pushes/s p50 %.2fms p99 %.2fms max %.2fms lost %d", r.Rate, r.RateP50ms, r.RateP99ms, r.RateMaxMs, r.RateLost)
	}
	fmt.Println()
}

// sub is one connected client.
type sub struct {
	conn    *websocket.Conn
	pushURL string // wsgate: its push URL; nchan: the publisher URL of its channel
	batch   string // wsgate: the batch URL of its push port
	id      string
}

// fmtSplit formats a figure by process name, e.g. "(nginx 80, wsgate 40)".
func fmtSplit(split map[string]float64) string {
	names := slices.Sorted(maps.Keys(split))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.0f", n, split[n])
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "wsbench: "+format+"\n", args...)
}

func run(o options) (Result, error) {
	r := Result{Target: o.target, Label: o.label, Clients: o.clients, Pushes: o.pushes}
	base := memory(o.rootPID)
	cpuBefore := cpu(o.rootPID)

	// Handshakes.
	subs := make([]*sub, o.clients)
	var next, fails atomic.Int64
	var wg sync.WaitGroup
	prof, err := o.profile("handshake")
	if err != nil {
		return r, err
	}
	start := time.Now()
	for w := 0; w < o.handshakeCon; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 512, WriteBufferSize: 512}
			for {
				i := int(next.Add(1)) - 1
				if i >= o.clients {
					return
				}
				s, err := connect(d, o)
				if err != nil {
					fails.Add(1)
					if fails.Load() <= 3 {
						progress("handshake: %v", err)
					}
					continue
				}
				subs[i] = s
			}
		}()
	}
	wg.Wait()
	r.HandshakeFails = int(fails.Load())
	r.HandshakesPerS = float64(o.clients-r.HandshakeFails) / time.Since(start).Seconds()
	r.HandshakeCPU, r.HandshakeCPUSplit = cpu(o.rootPID).perOp(cpuBefore, o.clients-r.HandshakeFails)
	profErr := prof.stop(o.clients - r.HandshakeFails)
	live := subs[:0]
	for _, s := range subs {
		if s != nil {
			live = append(live, s)
		}
	}
	subs = live
	defer func() {
		for _, s := range subs {
			// Reset, leaving no TIME_WAIT: the next round's clients would
			// get recycled ports (tcp_tw_reuse on loopback), and some of
			// those connections were reset mid-handshake.
			if tcp, ok := s.conn.NetConn().(*net.TCPConn); ok {
				tcp.SetLinger(0)
			}
			s.conn.Close()
		}
	}()
	progress("%s: %d clients at %.0f handshakes/s, server CPU %.0f µs each %s", o.target, len(subs), r.HandshakesPerS, r.HandshakeCPU, fmtSplit(r.HandshakeCPUSplit))
	if profErr != nil {
		return r, profErr
	}
	if len(subs) == 0 {
		return r, errors.New("no client connected")
	}

	time.Sleep(o.settle)
	if o.rootPID > 0 {
		r.BytesPerConn, r.BytesPerConnSplit = perConn(memory(o.rootPID), base, len(subs))
		progress("%s: %.0f bytes of server memory per idle connection %s", o.target, r.BytesPerConn, fmtSplit(r.BytesPerConnSplit))
	}

	// Readers record each message's latency from the send time it carries.
	lat := make([]int64, 0, o.pushes)
	var latMu sync.Mutex
	var delivered atomic.Int64
	for _, s := range subs {
		go func() {
			for {
				_, msg, err := s.conn.ReadMessage()
				if err != nil {
					return
				}
				if len(msg) >= 16 {
					d := time.Now().UnixNano() - int64(binary.BigEndian.Uint64(msg))
					latMu.Lock()
					lat = append(lat, d)
					latMu.Unlock()
				}
				delivered.Add(1)
			}
		}()
	}
	// takeLatencies returns the percentiles of the latencies so far and
	// starts afresh.
	takeLatencies := func() (p50, p99, maxMs float64) {
		latMu.Lock()
		defer latMu.Unlock()
		p50, p99, maxMs = percentiles(lat)
		lat = lat[:0]
		return p50, p99, maxMs
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.pushers, MaxConnsPerHost: o.pushers}, Timeout: 30 * time.Second}
	var errs atomic.Int64
	if prof, err = o.profile("push"); err != nil {
		return r, err
	}
	cpuBefore = cpu(o.rootPID)
	start = time.Now()
	pushMany(o, subs, hc, o.pushes, func(int64) time.Time { return time.Now() }, &errs)
	want := int64(o.pushes) - errs.Load()
	elapsed := waitDelivered(&delivered, want).Sub(start)
	r.PushesPerS = float64(delivered.Load()) / elapsed.Seconds()
	r.Lost = int(want - delivered.Load())
	r.PushErrors = int(errs.Load())
	r.PushCPU, r.PushCPUSplit = cpu(o.rootPID).perOp(cpuBefore, int(delivered.Load()))
	if err := prof.stop(int(delivered.Load())); err != nil {
		return r, err
	}
	r.P50ms, r.P99ms, r.MaxMs = takeLatencies()
	progress("%s: %.0f pushes/s, p99 %.2fms, lost %d, server CPU %.0f µs each %s", o.target, r.PushesPerS, r.P99ms, r.Lost, r.PushCPU, fmtSplit(r.PushCPUSplit))

	if o.rate > 0 {
		// Open loop: push i is due at start + i/rate, and goes then or,
		// when the pushers are behind, at once.
		before, errsBefore := delivered.Load(), errs.Load()
		interval := time.Second / time.Duration(o.rate)
		start = time.Now()
		pushMany(o, subs, hc, o.ratePushes, func(i int64) time.Time { return start.Add(time.Duration(i-1) * interval) }, &errs)
		want := int64(o.ratePushes) - (errs.Load() - errsBefore)
		waitDelivered(&delivered, before+want)
		r.Rate, r.RateLost = o.rate, int(before+want-delivered.Load())
		r.PushErrors = int(errs.Load())
		r.RateP50ms, r.RateP99ms, r.RateMaxMs = takeLatencies()
		progress("%s: at %d pushes/s p50 %.2fms, p99 %.2fms, lost %d", o.target, o.rate, r.RateP50ms, r.RateP99ms, r.RateLost)
	}

	if o.target == "wsgate" && o.batch > 0 {
		if prof, err = o.profile("batch"); err != nil {
			return r, err
		}
		cpuBefore = cpu(o.rootPID)
		before := delivered.Load()
		r.BatchMsgsPerS, r.BatchLost = runBatch(o, subs, hc, &delivered)
		r.BatchCPU, r.BatchCPUSplit = cpu(o.rootPID).perOp(cpuBefore, int(delivered.Load()-before))
		if err := prof.stop(int(delivered.Load() - before)); err != nil {
			return r, err
		}
		progress("%s: batch %.0f messages/s, lost %d, server CPU %.0f µs each %s", o.target, r.BatchMsgsPerS, r.BatchLost, r.BatchCPU, fmtSplit(r.BatchCPUSplit))
	}
	return r, nil
}

// pushMany has o.pushers goroutines send n pushes of o.size bytes to
// random clients: push i (from 1) goes when due(i) says, or at once when
// that has passed, carrying that time and i; failures are counted in errs.
func pushMany(o options, subs []*sub, hc *http.Client, n int, due func(i int64) time.Time, errs *atomic.Int64) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < o.pushers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := bytes.Repeat([]byte{'x'}, o.size)
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				at := due(i)
				time.Sleep(time.Until(at))
				binary.BigEndian.PutUint64(payload, uint64(at.UnixNano()))
				binary.BigEndian.PutUint64(payload[8:], uint64(i))
				if err := post(hc, subs[rand.IntN(len(subs))].pushURL, payload); err != nil && errs.Add(1) <= 3 {
					progress("push: %v", err)
				}
			}
		}()
	}
	wg.Wait()
}

// percentiles sorts latencies (ns) and returns their p50, p99 and max in ms.
func percentiles(lat []int64) (p50, p99, maxMs float64) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	n := len(lat)
	if n == 0 {
		return 0, 0, 0
	}
	return float64(lat[rank(n, 50)]) / 1e6, float64(lat[rank(n, 99)]) / 1e6, float64(lat[n-1]) / 1e6
}

// rank is the index of the p-th percentile of n sorted values, by nearest
// rank: the smallest value with at least p% of them at or below it.
func rank(n, p int) int {
	return max((p*n+99)/100-1, 0)
}

// runBatch sends o.pushes messages in batches of o.batch lines, each batch to
// clients of one push port, and returns the delivered rate and losses.
func runBatch(o options, subs []*sub, hc *http.Client, delivered *atomic.Int64) (float64, int) {
	byPort := map[string][]*sub{}
	for _, s := range subs {
		byPort[s.batch] = append(byPort[s.batch], s)
	}
	ports := make([]string, 0, len(byPort))
	for p := range byPort {
		ports = append(ports, p)
	}
	before := delivered.Load()
	requests := (o.pushes + o.batch - 1) / o.batch
	var next, msgs atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.pushers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body bytes.Buffer
			payload := make([]byte, o.size)
			for i := next.Add(1); i <= int64(requests); i = next.Add(1) {
				port := ports[int(i)%len(ports)]
				body.Reset()
				for j := 0; j < o.batch; j++ {
					s := byPort[port][rand.IntN(len(byPort[port]))]
					binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
					text := fmt.Sprintf("%x", payload)[:o.size] // JSON-safe text of the same size
					fmt.Fprintf(&body, "{\"id\":%q,\"text\":%q}\n", s.id, text)
				}
				resp, err := hc.Post(port, "application/x-ndjson", &body)
				if err != nil {
					progress("batch: %v", err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				msgs.Add(int64(bytes.Count(b, []byte(`{"status":204}`))))
			}
		}()
	}
	wg.Wait()
	want := before + msgs.Load()
	last := waitDelivered(delivered, want)
	return float64(delivered.Load()-before) / last.Sub(start).Seconds(), int(want - delivered.Load())
}

// quietWait is how long waitDelivered waits for a message that may be lost.
var quietWait = 5 * time.Second

// waitDelivered waits until want messages arrived, or until none arrive for
// quietWait, and returns when the last of them arrived (to the
// millisecond): a rate over that time does not count the wait for a
// message that was lost.
func waitDelivered(delivered *atomic.Int64, want int64) time.Time {
	last, lastChange := delivered.Load(), time.Now()
	for {
		if n := delivered.Load(); n != last {
			last, lastChange = n, time.Now()
		}
		if last >= want || time.Since(lastChange) >= quietWait {
			return lastChange
		}
		time.Sleep(time.Millisecond)
	}
}

// connect opens one client. wsgate's push URL comes in its welcome; Nchan's
// channel is an id the bench makes up.
func connect(d websocket.Dialer, o options) (*sub, error) {
	if o.target == "nchan" {
		id := fmt.Sprintf("c%016x", rand.Uint64())
		c, _, err := d.DialContext(context.Background(), o.wsURL+id, nil)
		if err != nil {
			return nil, err
		}
		return &sub{conn: c, pushURL: o.pubURL + id, id: id}, nil
	}
	c, _, err := d.Dial(o.wsURL, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, welcome, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("welcome: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	u, err := url.Parse(strings.Split(string(welcome), ",")[0])
	if err != nil || u.User == nil {
		c.Close()
		return nil, fmt.Errorf("welcome %q", welcome)
	}
	id := u.User.Username()
	return &sub{conn: c, pushURL: "http://" + u.Host + u.Path + "/" + id, batch: "http://" + u.Host + u.Path + "/batch", id: id}, nil
}

func post(hc *http.Client, url string, body []byte) error {
	resp, err := hc.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}
