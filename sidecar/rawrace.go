//go:build race

package sidecar

import (
	"runtime"
	"unsafe"
)

// raceWritten tells the race detector that a raw system call wrote p, as
// package syscall does for its own read(2): RawSyscall is invisible to it.
// Unlike package syscall, these annotations order no read after a write
// on another socket: the sidecar's own synchronization does that.
func raceWritten(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
}

// raceRead tells the race detector that a raw system call reads p.
func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}
