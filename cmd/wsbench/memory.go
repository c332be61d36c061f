package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wsgate/wsgate/internal/proctree"
)

// memory returns the proportional set size (PSS, bytes) of root and all its
// descendants: nginx master and workers, sidecars. PSS splits shared pages
// among the processes that share them, so the sum does not count them twice.
// 0 when root is 0.
func memory(root int) int64 {
	if root == 0 {
		return 0
	}
	total := pss(root)
	for _, pid := range proctree.Descendants(root) {
		total += pss(pid)
	}
	return total
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
