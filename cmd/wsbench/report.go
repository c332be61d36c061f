package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
)

// report reads results (JSON, one per line) from path and prints, for each
// wsgate setup (label) against Nchan, each figure's best value over all
// rounds, their ratio and whether wsgate meets its target against Nchan
// (factor 0: no target), and under memory and CPU the share of each process.
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
		if r.Label == "" {
			r.Label = r.Target
		}
		if b, ok := best[r.Label]; ok {
			b.merge(&r)
		} else {
			best[r.Label] = &r
		}
	}
	n := best["nchan"]
	if n == nil {
		n = &Result{}
	}
	var labels []string
	for l, r := range best {
		if r.Target == "wsgate" {
			labels = append(labels, l)
		}
	}
	if len(labels) == 0 {
		return fmt.Errorf("%s: no wsgate result", path)
	}
	sort.Strings(labels)
	for i, l := range labels {
		if i > 0 {
			fmt.Fprintln(w)
		}
		table(w, l, best[l], n)
	}
	return nil
}

// merge keeps the best of each figure of r and b in b, with the split by
// process of the run it came from.
func (b *Result) merge(r *Result) {
	b.HandshakesPerS = max(b.HandshakesPerS, r.HandshakesPerS)
	b.PushesPerS = max(b.PushesPerS, r.PushesPerS)
	b.BatchMsgsPerS = max(b.BatchMsgsPerS, r.BatchMsgsPerS)
	if minKnown(b.BytesPerConn, r.BytesPerConn) != b.BytesPerConn {
		b.BytesPerConn, b.BytesPerConnSplit = r.BytesPerConn, r.BytesPerConnSplit
	}
	if minKnown(b.HandshakeCPU, r.HandshakeCPU) != b.HandshakeCPU {
		b.HandshakeCPU, b.HandshakeCPUSplit = r.HandshakeCPU, r.HandshakeCPUSplit
	}
	if minKnown(b.PushCPU, r.PushCPU) != b.PushCPU {
		b.PushCPU, b.PushCPUSplit = r.PushCPU, r.PushCPUSplit
	}
	if minKnown(b.BatchCPU, r.BatchCPU) != b.BatchCPU {
		b.BatchCPU, b.BatchCPUSplit = r.BatchCPU, r.BatchCPUSplit
	}
	b.P50ms, b.P99ms, b.MaxMs = minKnown(b.P50ms, r.P50ms), minKnown(b.P99ms, r.P99ms), minKnown(b.MaxMs, r.MaxMs)
	b.Lost, b.PushErrors, b.HandshakeFails = max(b.Lost, r.Lost), max(b.PushErrors, r.PushErrors), max(b.HandshakeFails, r.HandshakeFails)
	b.BatchLost = max(b.BatchLost, r.BatchLost)
	b.Rate = max(b.Rate, r.Rate)
	b.RateP50ms, b.RateP99ms, b.RateMaxMs = minKnown(b.RateP50ms, r.RateP50ms), minKnown(b.RateP99ms, r.RateP99ms), minKnown(b.RateMaxMs, r.RateMaxMs)
	b.RateLost = max(b.RateLost, r.RateLost)
}

// table prints the comparison of one wsgate setup g with Nchan n.
func table(w io.Writer, label string, g, n *Result) {
	fmt.Fprintf(w, "%s against nchan: best of all rounds, %d clients, %d pushes\n", label, g.Clients, g.Pushes)
	fmt.Fprintf(w, "%-32s %12s %12s %8s  %s\n", "figure", "wsgate", "nchan", "ratio", "target")
	row := func(name string, gv, nv float64, higherBetter bool, factor float64) {
		ratio, verdict := "-", "-"
		if nv > 0 && gv > 0 { // 0: not measured, or nothing delivered
			q := gv / nv
			ratio = fmt.Sprintf("%.2f", q)
		}
		if nv > 0 && factor > 0 && (gv > 0 || higherBetter) {
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
	// shares prints, under a figure, each process's part of wsgate's value
	// against Nchan's whole.
	shares := func(split map[string]float64, nv float64) {
		for _, p := range slices.Sorted(maps.Keys(split)) {
			row("  of which "+p, split[p], nv, false, 0)
		}
	}
	row("handshakes/s", g.HandshakesPerS, n.HandshakesPerS, true, 1)
	row("server bytes / idle connection", g.BytesPerConn, n.BytesPerConn, false, 1)
	shares(g.BytesPerConnSplit, n.BytesPerConn)
	row("pushes/s (single client)", g.PushesPerS, n.PushesPerS, true, 1)
	row("push latency p50 ms", g.P50ms, n.P50ms, false, 1)
	row("push latency p99 ms", g.P99ms, n.P99ms, false, 1)
	row("push latency max ms", g.MaxMs, n.MaxMs, false, 0)
	if g.Rate > 0 && g.Rate == n.Rate {
		at := fmt.Sprintf(" at %d/s", g.Rate)
		row("push latency p50 ms"+at, g.RateP50ms, n.RateP50ms, false, 0)
		row("push latency p99 ms"+at, g.RateP99ms, n.RateP99ms, false, 0)
		row("push latency max ms"+at, g.RateMaxMs, n.RateMaxMs, false, 0)
	}
	row("batch msgs/s vs nchan pushes/s", g.BatchMsgsPerS, n.PushesPerS, true, 5)
	row("server CPU µs / handshake", g.HandshakeCPU, n.HandshakeCPU, false, 0)
	shares(g.HandshakeCPUSplit, n.HandshakeCPU)
	row("server CPU µs / push", g.PushCPU, n.PushCPU, false, 0)
	shares(g.PushCPUSplit, n.PushCPU)
	row("server CPU µs / batch message", g.BatchCPU, n.PushCPU, false, 0)
	shares(g.BatchCPUSplit, n.PushCPU)
	fmt.Fprintf(w, "lost: wsgate %d (fixed rate %d, batch %d), nchan %d (fixed rate %d); push errors: wsgate %d, nchan %d; failed handshakes: wsgate %d, nchan %d\n",
		g.Lost, g.RateLost, g.BatchLost, n.Lost, n.RateLost, g.PushErrors, n.PushErrors, g.HandshakeFails, n.HandshakeFails)
}

// minKnown is the smaller of two figures where 0 or less means not
// measured (nothing delivered, a memory reading below its baseline).
func minKnown(a, b float64) float64 {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
