package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The report takes the best value of each figure over the rounds, per
// target, and judges each ratio against its target. A round that measured
// nothing (no latency, as nothing was delivered; memory below its
// baseline) is not the best of anything.
func TestReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	os.WriteFile(path, []byte(`{"target":"wsgate","clients":10,"pushes":100,"handshakes_per_s":100,"server_bytes_per_idle_conn":3000,"pushes_per_s":50,"p50_ms":2,"p99_ms":9,"max_ms":20,"batch_messages_per_s":400,"cpu_us_per_handshake":300,"cpu_us_per_push":100,"cpu_us_per_batch_message":20,"rate":500,"rate_p50_ms":0.5,"rate_p99_ms":4,"rate_max_ms":9}
{"target":"nchan","clients":10,"pushes":100,"handshakes_per_s":80,"server_bytes_per_idle_conn":2000,"pushes_per_s":100,"p50_ms":1,"p99_ms":10,"max_ms":30,"cpu_us_per_handshake":100,"cpu_us_per_push":50,"rate":500,"rate_p50_ms":0.4,"rate_p99_ms":5,"rate_max_ms":8,"rate_lost":1}
{"target":"wsgate","clients":10,"pushes":100,"handshakes_per_s":120,"server_bytes_per_idle_conn":5000,"pushes_per_s":40,"p50_ms":3,"p99_ms":8,"max_ms":25,"batch_messages_per_s":600,"lost":2,"rate":500,"rate_p50_ms":0.6,"rate_p99_ms":3,"cpu_us_per_handshake":250,"cpu_us_per_handshake_by_process":{"nginx":150,"wsgate":100}}
{"target":"wsgate","label":"wsgate-stream","clients":10,"pushes":100,"handshakes_per_s":90,"server_bytes_per_idle_conn":1500,"server_bytes_per_idle_conn_by_process":{"nginx":1000,"wsgate":500},"pushes_per_s":50}
{"target":"wsgate","clients":10,"pushes":100,"handshakes_per_s":10,"server_bytes_per_idle_conn":-200,"pushes_per_s":1,"lost":99}
`), 0o644)
	var out strings.Builder
	if err := report(path, &out); err != nil {
		t.Fatal(err)
	}
	first, stream, ok := strings.Cut(out.String(), "wsgate-stream against nchan")
	for _, want := range []string{
		"handshakes/s                            120.0         80.0     1.50  >= 1.0x met",
		"server bytes / idle connection         3000.0       2000.0     1.50  <= 1.0x MISSED",
		"pushes/s (single client)                 50.0        100.0     0.50  >= 1.0x MISSED",
		"push latency p99 ms                       8.0         10.0     0.80  <= 1.0x met",
		"push latency max ms                      20.0         30.0     0.67  -",
		"batch msgs/s vs nchan pushes/s          600.0        100.0     6.00  >= 5.0x met",
		"server CPU µs / handshake               250.0        100.0     2.50  -",
		"  of which nginx                        150.0        100.0     1.50  -",
		"  of which wsgate                       100.0        100.0     1.00  -",
		"server CPU µs / push                    100.0         50.0     2.00  -",
		"server CPU µs / batch message            20.0         50.0     0.40  -",
		"push latency p50 ms at 500/s              0.5          0.4     1.25  -",
		"push latency p99 ms at 500/s              3.0          5.0     0.60  -",
		"push latency max ms at 500/s              9.0          8.0     1.12  -",
		"lost: wsgate 99 (fixed rate 0, batch 0), nchan 0 (fixed rate 1)",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("wsgate table lacks %q:\n%s", want, out.String())
		}
	}
	for _, want := range []string{
		"handshakes/s                             90.0         80.0     1.12  >= 1.0x met",
		"server bytes / idle connection         1500.0       2000.0     0.75  <= 1.0x met",
		"  of which nginx                       1000.0       2000.0     0.50  -",
		"  of which wsgate                       500.0       2000.0     0.25  -",
	} {
		if !ok || !strings.Contains(stream, want) {
			t.Errorf("stream table lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(stream, " at 500/s") {
		t.Errorf("fixed-rate rows for a setup run without them:\n%s", stream)
	}
	if err := report(filepath.Join(t.TempDir(), "none.json"), &out); err == nil {
		t.Error("report of a missing file succeeded")
	}
}

// Percentiles by nearest rank: the p99 of 100 values is the 99th, not the
// largest.
func TestPercentiles(t *testing.T) {
	lat := make([]int64, 100)
	for i := range lat {
		lat[i] = int64(100-i) * 1e6 // 100..1 ms, unsorted
	}
	if p50, p99, maxMs := percentiles(lat); p50 != 50 || p99 != 99 || maxMs != 100 {
		t.Fatalf("p50 %v, p99 %v, max %v; want 50, 99, 100", p50, p99, maxMs)
	}
	if p50, p99, maxMs := percentiles([]int64{7e6}); p50 != 7 || p99 != 7 || maxMs != 7 {
		t.Fatalf("one value: %v %v %v", p50, p99, maxMs)
	}
}

// waitDelivered gives the time of the last arrival, not of the end of its
// wait for messages that never come: a lost one does not slow the rate.
func TestWaitDeliveredEndsAtTheLastArrival(t *testing.T) {
	defer func(d time.Duration) { quietWait = d }(quietWait)
	quietWait = 300 * time.Millisecond
	var delivered atomic.Int64
	go func() {
		for range 3 {
			time.Sleep(10 * time.Millisecond)
			delivered.Add(1)
		}
	}()
	start := time.Now()
	last := waitDelivered(&delivered, 4) // one is lost
	if delivered.Load() != 3 || time.Since(last) < quietWait || last.Sub(start) >= quietWait {
		t.Fatalf("last arrival %v after the start, wait ended %v after it", last.Sub(start), time.Since(last))
	}
}
