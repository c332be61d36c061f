//go:build !race

package sidecar

// Without the race detector, raw system calls need no annotations
// (rawrace.go).

func raceWritten([]byte) {}

func raceRead([]byte) {}
