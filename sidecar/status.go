package sidecar

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Status is what GET /status on the push socket answers: one instance's
// identity, limits and counters. `wsgate status` reads it.
type Status struct {
	Instance      int      `json:"instance"`
	PID           int      `json:"pid"`
	Version       string   `json:"version"`
	GoVersion     string   `json:"go_version"`
	UptimeSeconds float64  `json:"uptime_seconds"`
	Connections   int      `json:"connections"`
	Limits        Limits   `json:"limits"`
	Counters      Counters `json:"counters"`
}

// Limits are the configured bounds, bytes and seconds.
type Limits struct {
	MaxBody             int64   `json:"max_body"`
	MaxBatch            int64   `json:"max_batch"`
	MaxMessage          int64   `json:"max_message"`
	SendQueue           int     `json:"send_queue"`
	SendQueueBytes      int64   `json:"send_queue_bytes"`
	SlowClient          string  `json:"slow_client"`
	PingIntervalSeconds float64 `json:"ping_interval_seconds"`
	IdleTimeoutSeconds  float64 `json:"idle_timeout_seconds"`
}

// Counters are totals since the instance started, the same numbers
// /metrics exposes.
type Counters struct {
	Connects         uint64            `json:"connects"`
	Disconnects      uint64            `json:"disconnects"`
	Pushes           uint64            `json:"pushes"` // requests and batch lines, any status
	PushesByCode     map[string]uint64 `json:"pushes_by_code"`
	Drops            uint64            `json:"drops"` // pushes refused with 503
	SlowCloses       uint64            `json:"slow_closes"`
	MessagesSent     uint64            `json:"messages_sent"`
	MessagesReceived uint64            `json:"messages_received"`
	Queued           uint64            `json:"queued"` // messages in send queues now
}

// Status returns the instance's status now.
func (s *Server) Status() Status {
	m := s.metrics
	byCode := counterValues(m.pushes)
	return Status{
		Instance:      s.instance,
		PID:           os.Getpid(),
		Version:       s.version,
		GoVersion:     runtime.Version(),
		UptimeSeconds: time.Since(s.epoch).Seconds(),
		Connections:   s.reg.len(),
		Limits: Limits{
			MaxBody:             s.maxBody,
			MaxBatch:            s.maxBatch,
			MaxMessage:          s.maxMessage,
			SendQueue:           s.queueLen,
			SendQueueBytes:      s.queueBytes,
			SlowClient:          s.cfg.WebSocket.SlowClient,
			PingIntervalSeconds: s.pingInterval.Seconds(),
			IdleTimeoutSeconds:  s.idleTimeout.Seconds(),
		},
		Counters: Counters{
			Connects:         counterValues(m.connects)[""],
			Disconnects:      sum(counterValues(m.disconnects)),
			Pushes:           sum(byCode),
			PushesByCode:     byCode,
			Drops:            sum(counterValues(m.drops)),
			SlowCloses:       counterValues(m.slowCloses)[""],
			MessagesSent:     counterValues(m.messagesOut)[""],
			MessagesReceived: counterValues(m.messagesIn)[""],
			Queued:           gaugeValue(m.queued),
		},
	}
}

// serveStatus answers GET /status with Status as JSON.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if !readOnly(w, r) {
		return
	}
	b, err := json.MarshalIndent(s.Status(), "", "  ")
	if err != nil {
		writeError(w, &pushError{http.StatusInternalServerError, err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// readOnly answers 405 to anything but GET and HEAD and reports whether the
// request may go on.
func readOnly(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	writeError(w, &pushError{http.StatusMethodNotAllowed, "method " + r.Method + " not allowed: GET " + r.URL.Path})
	return false
}

// counterValues reads the counters c collects, keyed by their one label's
// value ("" for a counter without labels).
func counterValues(c prometheus.Collector) map[string]uint64 {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	out := map[string]uint64{}
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		key := ""
		if len(d.Label) > 0 {
			key = d.Label[0].GetValue()
		}
		out[key] += uint64(d.GetCounter().GetValue())
	}
	return out
}

func gaugeValue(g prometheus.Gauge) uint64 {
	var d dto.Metric
	g.Write(&d)
	return uint64(max(d.GetGauge().GetValue(), 0))
}

func sum(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}
