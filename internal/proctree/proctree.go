// Package proctree finds a process's descendants in /proc: the sidecars,
// nginx master and nginx workers under `wsgate up`, for the benchmark's
// memory figure and for tests that check no process is left behind.
package proctree

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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

// CPU returns pid's command name and the CPU time (user and system) it has
// used so far.
func CPU(pid int) (comm string, used time.Duration, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", 0, false
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return "", 0, false
	}
	fields := strings.Fields(s[end+1:])
	if len(fields) < 13 {
		return "", 0, false
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, false
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return s[open+1 : end], time.Duration(utime+stime) * tick, true
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
