package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate/internal/proctree"
)

// memory returns the proportional set size (PSS, bytes) of root and all its
// descendants (nginx master and workers, sidecars) by command name. PSS
// splits shared pages among the processes that share them, so the sum does
// not count them twice. nil when root is 0.
func memory(root int) map[string]int64 {
	if root == 0 {
		return nil
	}
	m := map[string]int64{}
	for _, pid := range append(proctree.Descendants(root), root) {
		if comm, _, ok := proctree.CPU(pid); ok {
			m[comm] += pss(pid)
		}
	}
	return m
}

// perConn returns the memory grown since before, in bytes per connection, in
// total and by command name.
func perConn(now, before map[string]int64, conns int) (total float64, split map[string]float64) {
	if now == nil || conns == 0 {
		return 0, nil
	}
	split = map[string]float64{}
	for comm, b := range now {
		per := float64(b-before[comm]) / float64(conns)
		split[comm] = per
		total += per
	}
	return total, split
}

// cpuTime is CPU time used by a process tree, by command name ("nginx",
// "wsgate"), so a phase's cost shows where it went.
type cpuTime map[string]time.Duration

// cpu returns the CPU time root and its descendants have used so far; nil
// when root is 0.
func cpu(root int) cpuTime {
	if root == 0 {
		return nil
	}
	t := cpuTime{}
	for _, pid := range append(proctree.Descendants(root), root) {
		if comm, used, ok := proctree.CPU(pid); ok {
			t[comm] += used
		}
	}
	return t
}

// perOp returns the CPU time used since before, in microseconds per op,
// in total and by command name.
func (t cpuTime) perOp(before cpuTime, ops int) (total float64, split map[string]float64) {
	if t == nil || ops == 0 {
		return 0, nil
	}
	split = map[string]float64{}
	for comm, used := range t {
		us := float64(used-before[comm]) / float64(time.Microsecond) / float64(ops)
		split[comm] = us
		total += us
	}
	return total, split
}

func pss(pid int) int64 {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
