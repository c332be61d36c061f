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
//   - metrics.go: Prometheus metrics served on the push socket.
//
// # Concurrency
//
// Each client has one reader (the goroutine that accepted it) and at most one
// writer goroutine, started when its queue becomes non-empty and ended when it
// drains, so an idle client costs one goroutine. Keepalive runs on a timer.
// Close frames and pings use gorilla's WriteControl, which is safe to call
// concurrently with the writer. Lock order: registry shard, then client.mu;
// nothing blocks while holding either.
package sidecar
