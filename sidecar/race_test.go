//go:build race

package sidecar

// raceEnabled reports whether the tests run under the race detector.
const raceEnabled = true
