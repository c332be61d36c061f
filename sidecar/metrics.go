package sidecar

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are one instance's Prometheus metrics. Each Server has its own
// registry, so several servers can run in one process (as in tests).
type metrics struct {
	reg     *prometheus.Registry
	handler http.Handler // serves reg

	connects         prometheus.Counter
	disconnects      *prometheus.CounterVec // by close code
	handshakeRejects *prometheus.CounterVec // by reason
	messagesIn       prometheus.Counter
	bytesIn          prometheus.Counter
	discarded        prometheus.Counter
	messagesOut      prometheus.Counter
	bytesOut         prometheus.Counter
	pushes           *prometheus.CounterVec // by HTTP status
	pushed204        prometheus.Counter     // pushes{code="204"}, resolved once for the hot path
	pushLatency      prometheus.Histogram
	queued           prometheus.Gauge
	drops            *prometheus.CounterVec // by reason
	slowCloses       prometheus.Counter
	undelivered      prometheus.Counter
	handovers        prometheus.Counter // push connections handed to net/http
	// The upstream's metrics are upstreamMetrics, below.
}

func newMetrics(version string, connections func() float64) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "wsgate_" + name, Help: help})
		m.reg.MustRegister(c)
		return c
	}
	vec := func(name, help, label string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wsgate_" + name, Help: help}, []string{label})
		m.reg.MustRegister(c)
		return c
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsgate_connections", Help: "WebSocket clients connected now.",
		}, connections),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wsgate_build_info", Help: "Always 1; the version label is the running wsgate's.",
			ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }),
	)
	m.connects = counter("connects_total", "WebSocket clients accepted (welcome sent).")
	m.disconnects = vec("disconnects_total", "WebSocket clients gone, by close code (1006: no close frame).", "code")
	m.handshakeRejects = vec("handshake_rejections_total", "WebSocket handshakes refused, by reason.", "reason")
	m.messagesIn = counter("client_messages_total", "Messages received from clients.")
	m.bytesIn = counter("client_message_bytes_total", "Bytes of messages received from clients.")
	m.discarded = counter("client_messages_discarded_total", "Client messages discarded because no upstream (or no \"message\" event) is configured.")
	m.messagesOut = counter("messages_sent_total", "Messages written to clients (welcome excluded).")
	m.bytesOut = counter("message_sent_bytes_total", "Bytes of messages written to clients.")
	m.pushes = vec("pushes_total", "Push API requests (POST, DELETE) and batch lines, by HTTP status.", "code")
	m.pushed204 = m.pushes.WithLabelValues("204")
	m.pushLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsgate_push_latency_seconds",
		Help:    "Time from a push request's arrival to its frame written to the client socket.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10), // 50µs .. 13s
	})
	m.reg.MustRegister(m.pushLatency)
	m.queued = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "wsgate_send_queue_messages", Help: "Messages queued for clients, over all send queues.",
	})
	m.reg.MustRegister(m.queued)
	m.drops = vec("push_drops_total", "Pushes refused with 503, by reason.", "reason")
	m.handovers = counter("push_handovers_total", "Push connections the fast path handed to net/http, at a request it does not take (chunked, Expect, batch, /metrics...).")
	m.undelivered = counter("messages_undelivered_total", "Messages accepted for a client (204) but never written, because its connection ended first.")
	m.slowCloses = counter("slow_client_closes_total", "Clients closed because their send queue was full.")
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func (m *metrics) pushed(code int) {
	if code == 204 {
		m.pushed204.Inc()
		return
	}
	m.pushes.WithLabelValues(strconv.Itoa(code)).Inc()
}

// serveMetrics answers GET /metrics in the Prometheus text format.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if readOnly(w, r) {
		s.metrics.handler.ServeHTTP(w, r)
	}
}

// upstreamMetrics are the upstream's metrics, registered only when
// upstream.url is set.
type upstreamMetrics struct {
	latency   *prometheus.HistogramVec // by event
	errors    *prometheus.CounterVec   // by event and reason
	forwarded prometheus.Counter
	dropped   *prometheus.CounterVec // by reason
	queued    prometheus.Gauge
}

func newUpstreamMetrics(reg *prometheus.Registry) *upstreamMetrics {
	m := &upstreamMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wsgate_upstream_request_seconds",
			Help:    "Upstream request latency, by event (waiting for a concurrency slot included).",
			Buckets: prometheus.ExponentialBuckets(250e-6, 4, 9), // 250µs .. 16s
		}, []string{"event"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_upstream_errors_total",
			Help: "Upstream requests without a 2xx reply, by event and reason (timeout, unreachable, canceled, status, bad_reply).",
		}, []string{"event", "reason"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsgate_upstream_messages_forwarded_total", Help: "Client messages the upstream answered with 2xx.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsgate_upstream_messages_dropped_total",
			Help: "Client messages not forwarded, by reason (refused: 4xx; upstream_error: 5xx, timeout, unreachable; closed: after a failure or at shutdown).",
		}, []string{"reason"}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsgate_upstream_queue_events", Help: "Client messages and disconnects waiting for the upstream, over all clients.",
		}),
	}
	reg.MustRegister(m.latency, m.errors, m.forwarded, m.dropped, m.queued)
	return m
}
