// Package sidecar is one wsgate instance: it holds WebSocket clients that
// nginx proxies to it and delivers pushes that nginx routes to it.
//
// # Where things happen
//
//   - listeners.go: the two listening sockets, from systemd socket activation
//     (names "ws" and "push") or bound by hand.
//   - server.go: wires both listeners up, owns shutdown, and releases
//     clients (end).
//   - accept.go: the WebSocket listener: handshakes read without net/http's
//     server and checked by gorilla's Upgrader; the 101 leaves with the
//     welcome.
//   - welcome.go: client ids and the welcome frame with push URLs.
//   - registry.go: the sharded id → client map pushes look clients up in.
//   - pushconn.go: the push socket's connections, served by the fast path
//     (fastpush.go parses the plain pushes it takes) until a request it
//     does not take hands the connection to net/http.
//   - push.go: the push API, where an HTTP request becomes a queued frame;
//     batch.go, status.go: the batch API, /status.
//   - rawio.go: raw system calls for the sockets' reads and writes.
//   - client.go: one WebSocket connection: its reads, its bounded send
//     queue and the writer that turns queued frames into WebSocket frames,
//     keepalive and close.
//   - poller.go: one epoll set that watches idle clients' sockets.
//   - frames.go: the incremental parser of the frames clients send.
//   - wsconn.go: the writer of the frames clients get (gorilla only
//     upgrades the connection).
//   - upstream.go: the optional backend at upstream.url: its HTTP client,
//     the connect event that can refuse a handshake, shutdown's drain.
//   - events.go: each client's outbox, which carries its messages and its
//     disconnect to the backend in order, and the policies on failure.
//   - metrics.go: Prometheus metrics served on the push socket.
//
// # Concurrency
//
// An idle client has no goroutine. The poller (one epoll set, EPOLLONESHOT,
// waited on through Go's netpoller) starts a read when a client's socket is
// readable; the read takes what is there without blocking, parses it, and
// re-arms the socket, so at most one read runs per client. A push to an
// idle client is written by the pushing goroutine if the socket takes it at
// once; otherwise the client gets a writer goroutine, at most one, which
// ends when its queue drains. Keepalive runs on a timer. Ending a connection
// from our side is a shutdown(2) of its socket: the read that sees the end
// releases the client, the one path that does.
// Close frames, pings and pongs are written by other goroutines too; each
// client's wsConn lets one write at a time, and a write that cannot start by
// its deadline gives up. With an upstream, a client also has at most
// one sender goroutine, running only while its outbox holds events; a full
// outbox makes the read wait for room (backpressure). Lock order: registry
// shard, then client.mu; outbox.mu is a leaf. Nothing blocks while holding
// any of them. Each push connection has a goroutine, the fast path's or
// net/http's.
package sidecar
