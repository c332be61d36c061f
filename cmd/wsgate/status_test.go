package main

import (
	"strings"
	"testing"
)

// A -timeout of 0 (no timeout) would let a stuck instance hang the query.
func TestStatusFlags(t *testing.T) {
	for _, args := range [][]string{{"-timeout", "0"}, {"-timeout", "-1s"}, {"-interval", "-1s"}} {
		code, stdout, stderr := run(t, append([]string{"status"}, args...)...)
		if code == 0 || !strings.Contains(stderr, "-timeout must be positive") {
			t.Errorf("status %v: exit %d\n%s%s", args, code, stdout, stderr)
		}
	}
}
