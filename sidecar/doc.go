// Package sidecar is one wsgate instance: it holds WebSocket clients that
// nginx proxies to it and delivers pushes that nginx routes to it.
//
// # Where things happen
//
//   - listeners.go: the two listening sockets, from systemd socket activation
//     (names "ws" and "push") or bound by hand.
//   - server.go: wires both listeners to HTTP servers and owns shutdown.
//   - welcome.go: client ids and the welcome frame with push URLs.
//   - registry.go: the sharded id → client map pushes look clients up in.
//   - push.go: the push API, where an HTTP request becomes a queued frame.
//   - client.go: one WebSocket connection: its read loop, its bounded send
//     queue and the writer that turns queued frames into WebSocket frames,
//     keepalive and close.
//   - upstream.go: the optional backend at upstream.url: its HTTP client,
//     the connect event that can refuse a handshake, shutdown's drain.
//   - events.go: each client's outbox, which carries its messages and its
//     disconnect to the backend in order, and the policies on failure.
//   - metrics.go: Prometheus metrics served on the push socket.
//
// # Concurrency
//
// Each client has one reader (the goroutine that accepted it) and at most one
// writer goroutine, started when its queue becomes non-empty and ended when it
// drains, so an idle client costs one goroutine. Keepalive runs on a timer.
// Close frames and pings use gorilla's WriteControl, which is safe to call
// concurrently with the writer. With an upstream, a client also has at most
// one sender goroutine, running only while its outbox holds events; a full
// outbox makes the reader wait for room (backpressure). Lock order: registry
// shard, then client.mu; outbox.mu is a leaf. Nothing blocks while holding
// any of them.
package sidecar
