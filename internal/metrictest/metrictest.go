// Package metrictest reads samples from the Prometheus text format that a
// sidecar's /metrics serves, for the tests of the sidecar and of the whole
// gateway.
package metrictest

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Sample returns the value of the sample named exactly name, labels
// included as exposed (`wsgate_disconnects_total{code="1000"}`), and
// whether r has it.
func Sample(r io.Reader, name string) (value float64, found bool, err error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, true, fmt.Errorf("metric %s: %w", name, err)
			}
			return f, true, nil
		}
	}
	return 0, false, sc.Err()
}
