package metrictest

import (
	"strings"
	"testing"
)

func TestSample(t *testing.T) {
	const text = `# HELP wsgate_pushes_total Pushes by status.
# TYPE wsgate_pushes_total counter
wsgate_pushes_total{code="204"} 12
wsgate_pushes_total{code="404"} 3
wsgate_connections 7
wsgate_connections_max 9
wsgate_broken x
`
	for _, tc := range []struct {
		name  string
		want  float64
		found bool
		err   bool
	}{
		{`wsgate_pushes_total{code="404"}`, 3, true, false},
		{"wsgate_connections", 7, true, false}, // not wsgate_connections_max
		{"wsgate_pushes_total", 0, false, false},
		{"wsgate_absent", 0, false, false},
		{"wsgate_broken", 0, true, true},
	} {
		v, found, err := Sample(strings.NewReader(text), tc.name)
		if v != tc.want || found != tc.found || (err != nil) != tc.err {
			t.Errorf("Sample(%s) = %v, %v, %v; want %v, %v, error %v", tc.name, v, found, err, tc.want, tc.found, tc.err)
		}
	}
}
