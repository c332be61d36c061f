package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// report reads results (JSON, one per line) from path and prints, for each
// figure, the best wsgate and Nchan value over all rounds, their ratio and
// whether wsgate meets its target against Nchan (factor 0: no target).
func report(path string, w io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	best := map[string]*Result{}
	dec := json.NewDecoder(f)
	for dec.More() {
		var r Result
		if err := dec.Decode(&r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		b, ok := best[r.Target]
		if !ok {
			best[r.Target] = &r
			continue
		}
		b.HandshakesPerS = max(b.HandshakesPerS, r.HandshakesPerS)
		b.PushesPerS = max(b.PushesPerS, r.PushesPerS)
		b.BatchMsgsPerS = max(b.BatchMsgsPerS, r.BatchMsgsPerS)
		b.BytesPerConn = min(b.BytesPerConn, r.BytesPerConn)
		b.HandshakeCPU, b.PushCPU = minKnown(b.HandshakeCPU, r.HandshakeCPU), minKnown(b.PushCPU, r.PushCPU)
		b.BatchCPU = minKnown(b.BatchCPU, r.BatchCPU)
		b.P50ms, b.P99ms, b.MaxMs = min(b.P50ms, r.P50ms), min(b.P99ms, r.P99ms), min(b.MaxMs, r.MaxMs)
		b.Lost, b.PushErrors, b.HandshakeFails = max(b.Lost, r.Lost), max(b.PushErrors, r.PushErrors), max(b.HandshakeFails, r.HandshakeFails)
	}
	g, n := best["wsgate"], best["nchan"]
	if g == nil {
		return fmt.Errorf("%s: no wsgate result", path)
	}
	if n == nil {
		n = &Result{}
	}
	fmt.Fprintf(w, "best of all rounds, %d clients, %d pushes\n", g.Clients, g.Pushes)
	fmt.Fprintf(w, "%-32s %12s %12s %8s  %s\n", "figure", "wsgate", "nchan", "ratio", "target")
	row := func(name string, gv, nv float64, higherBetter bool, factor float64) {
		ratio, verdict := "-", "-"
		if nv > 0 {
			q := gv / nv
			ratio = fmt.Sprintf("%.2f", q)
		}
		if nv > 0 && factor > 0 {
			q := gv / nv
			ok := q >= factor
			want := fmt.Sprintf(">= %.1fx", factor)
			if !higherBetter {
				ok = q <= factor
				want = fmt.Sprintf("<= %.1fx", factor)
			}
			verdict = want + map[bool]string{true: " met", false: " MISSED"}[ok]
		}
		fmt.Fprintf(w, "%-32s %12.1f %12.1f %8s  %s\n", name, gv, nv, ratio, verdict)
	}
	row("handshakes/s", g.HandshakesPerS, n.HandshakesPerS, true, 1)
	row("server bytes / idle connection", g.BytesPerConn, n.BytesPerConn, false, 1)
	row("pushes/s (single client)", g.PushesPerS, n.PushesPerS, true, 1)
	row("push latency p50 ms", g.P50ms, n.P50ms, false, 1)
	row("push latency p99 ms", g.P99ms, n.P99ms, false, 1)
	row("push latency max ms", g.MaxMs, n.MaxMs, false, 0)
	row("batch msgs/s vs nchan pushes/s", g.BatchMsgsPerS, n.PushesPerS, true, 5)
	row("server CPU µs / handshake", g.HandshakeCPU, n.HandshakeCPU, false, 0)
	row("server CPU µs / push", g.PushCPU, n.PushCPU, false, 0)
	row("server CPU µs / batch message", g.BatchCPU, n.PushCPU, false, 0)
	fmt.Fprintf(w, "lost: wsgate %d (batch %d), nchan %d; push errors: wsgate %d, nchan %d; failed handshakes: wsgate %d, nchan %d\n",
		g.Lost, g.BatchLost, n.Lost, g.PushErrors, n.PushErrors, g.HandshakeFails, n.HandshakeFails)
	return nil
}

// minKnown is the smaller of two figures where 0 means not measured.
func minKnown(a, b float64) float64 {
	if a == 0 || b == 0 {
		return max(a, b)
	}
	return min(a, b)
}
