// Package proctree finds a process's descendants in /proc: the sidecars,
// nginx master and nginx workers under `wsgate up`, for the benchmark's
// memory figure and for tests that check no process is left behind.
package proctree

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Descendants returns the live (not zombie) processes below root, at any
// depth.
func Descendants(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid, ok := stat(pid); ok && state != "Z" {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	for todo := children[root]; len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[pid]...)
		out = append(out, pid)
	}
	return out
}

// Alive reports whether pid runs and is not a zombie.
func Alive(pid int) bool {
	state, _, ok := stat(pid)
	return ok && state != "Z"
}

// Cmdline is pid's command line with arguments separated by spaces.
func Cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// stat reads a process's state and parent from /proc/PID/stat, whose
// second field (comm) may hold spaces: the rest follows the last ')'.
func stat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(fields[1])
	return fields[0], ppid, err == nil
}
