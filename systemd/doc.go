// Package systemd holds wsgate's systemd units, their tests, and the unit
// drop-ins rendered from the TOML (WriteDropIns, run by `wsgate systemd`
// from make install). In production each sidecar instance i runs as
// wsgate@i.service, started on the first connection to one of the two
// sockets systemd holds for it:
//
//   - wsgate-ws@.socket: <runtime_dir>/ws-<i>.sock, passed as "ws".
//   - wsgate-push@.socket: <runtime_dir>/push-<i>.sock, passed as "push";
//     with nginx.push_proxy = "none" a drop-in replaces it with the
//     instance's push port on each push.listen address.
//   - wsgate@.service: `wsgate serve -config /etc/wsgate/wsgate.toml
//     -instance %i`, Type=notify, sandboxed (DynamicUser, ProtectSystem=strict
//     and the rest; `systemd-analyze security` exposure at most 2.5).
//   - wsgate.target: groups every instance; enabling it enables instances
//     1..4, the default `instances`.
//   - wsgate.toml: the commented default config `make install` puts in
//     /etc/wsgate when none is there.
//
// Because systemd owns the listening sockets, a sidecar's restart or upgrade
// refuses no connection: the kernel queues new ones until the next process
// accepts them.
//
// The tests here run in `make test`: they install the units with `make
// install` into a scratch root, then require `systemd-analyze verify` to
// print nothing and `systemd-analyze security --offline=yes` to score at most
// 2.5, and check the units against config.Default(). test/boot.sh (`make
// test-systemd`) boots the installed units under a real systemd in a
// Debian 12 container; test/wsclient is its WebSocket client. README.md is
// the production setup.
package systemd
