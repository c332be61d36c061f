// Package status gathers what `wsgate status` shows: each sidecar's
// GET /status, asked over its push socket, and nginx's stub_status.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wsgate/wsgate/config"
	"github.com/wsgate/wsgate/sidecar"
)

// Options tune Query.
type Options struct {
	// Interval separates the two samples pushes/s is computed from; with 0
	// Query takes one sample and pushes/s is the average since each
	// instance started.
	Interval time.Duration
	// Timeout bounds each request.
	Timeout time.Duration
}

// Report is the state of every instance and of nginx.
type Report struct {
	Instances []Instance `json:"instances"`
	Totals    Totals     `json:"totals"`
	Nginx     Nginx      `json:"nginx"`
}

// Instance is one sidecar as Query found it.
type Instance struct {
	ID              int             `json:"instance"`
	Up              bool            `json:"up"`
	Error           string          `json:"error,omitempty"` // why it is down
	PushesPerSecond float64         `json:"pushes_per_second"`
	Status          *sidecar.Status `json:"status,omitempty"` // nil when down
}

// Totals add up the instances that answered.
type Totals struct {
	Instances       int     `json:"instances"`
	Up              int     `json:"up"`
	Connections     int     `json:"connections"`
	PushesPerSecond float64 `json:"pushes_per_second"`
	Drops           uint64  `json:"drops"`
}

// Down is the number of instances that did not answer.
func (r *Report) Down() int { return r.Totals.Instances - r.Totals.Up }

// Query asks every instance of c for its status, all in parallel, and nginx
// for its stub_status at push.listen[0]:push.port_base (not served with
// nginx.push_proxy = "stream" or "none": Nginx.Error says so).
func Query(ctx context.Context, c *config.Config, o Options) *Report {
	r := &Report{Instances: make([]Instance, c.Instances)}
	ngx := make(chan Nginx, 1)
	go func() { ngx <- queryNginx(ctx, c, o.Timeout) }()

	first := sample(ctx, c, o.Timeout, nil)
	second := first
	if o.Interval > 0 {
		select {
		case <-time.After(o.Interval):
		case <-ctx.Done():
		}
		second = sample(ctx, c, o.Timeout, first)
	}
	for i := range r.Instances {
		in := &r.Instances[i]
		in.ID = i + 1
		s := second[i]
		if s.err != nil {
			in.Error = s.err.Error()
			continue
		}
		in.Up, in.Status = true, s.st
		in.PushesPerSecond = pushRate(first[i].st, s.st)
		r.Totals.Up++
		r.Totals.Connections += s.st.Connections
		r.Totals.PushesPerSecond += in.PushesPerSecond
		r.Totals.Drops += s.st.Counters.Drops
	}
	r.Totals.Instances = c.Instances
	r.Nginx = <-ngx
	return r
}

// pushRate is pushes per second between two samples of one process, or
// the average since it started when there is no earlier sample of it.
func pushRate(a, b *sidecar.Status) float64 {
	if a != nil && a != b && a.PID == b.PID && b.UptimeSeconds > a.UptimeSeconds && b.Counters.Pushes >= a.Counters.Pushes {
		return float64(b.Counters.Pushes-a.Counters.Pushes) / (b.UptimeSeconds - a.UptimeSeconds)
	}
	if b.UptimeSeconds <= 0 {
		return 0
	}
	return float64(b.Counters.Pushes) / b.UptimeSeconds
}

// result is one instance's answer.
type result struct {
	st  *sidecar.Status
	err error
}

// sample asks every instance at once; with prev, only those that answered
// then (the others keep their error).
func sample(ctx context.Context, c *config.Config, timeout time.Duration, prev []result) []result {
	out := make([]result, c.Instances)
	var wg sync.WaitGroup
	for i := range out {
		if prev != nil && prev[i].err != nil {
			out[i] = prev[i]
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			network, addr := pushAddr(c, i+1)
			st, err := fetch(ctx, network, addr, timeout)
			out[i] = result{st, err}
		}()
	}
	wg.Wait()
	return out
}

// pushAddr is where instance i serves its push API: its push socket, or
// with nginx.push_proxy = "none" its push port on the first push address.
func pushAddr(c *config.Config, i int) (network, addr string) {
	if c.DirectPush() {
		return "tcp", net.JoinHostPort(localHost(c), strconv.Itoa(c.PushPort(i)))
	}
	return "unix", c.PushSocket(i)
}

// localHost is the first push.listen address, loopback for a wildcard.
func localHost(c *config.Config) string {
	host := strings.Trim(c.Push.Listen[0], "[]")
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return host
}

// fetch gets GET /status from the push socket or port at addr.
func fetch(ctx context.Context, network, path string, timeout time.Duration) (*sidecar.Status, error) {
	hc := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, path)
			},
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://wsgate/status", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil, fmt.Errorf("%s: no answer within %v", path, timeout)
		}
		return nil, fmt.Errorf("%s: %w", path, unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: GET /status: %s", path, resp.Status)
	}
	var st sidecar.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: GET /status: %w", path, err)
	}
	return &st, nil
}
