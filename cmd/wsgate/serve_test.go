package main

import "testing"

func TestThreads(t *testing.T) {
	for _, tc := range []struct{ procs, instances, want int }{
		{2, 2, 1}, {2, 4, 1}, {1, 1, 1}, {8, 2, 4}, {16, 3, 5}, {4, 1, 4},
	} {
		if got := threads(tc.procs, tc.instances); got != tc.want {
			t.Errorf("threads(%d, %d) = %d, want %d", tc.procs, tc.instances, got, tc.want)
		}
	}
}
