#!/usr/bin/env bash
# make test-systemd: boot the wsgate units under a real systemd.
#
# Boots a Debian 12 container with systemd-nspawn (own network namespace:
# loopback only), installs wsgate into it with `make install DESTDIR=...`,
# serves it through the container's nginx on 127.0.0.1:8080 and checks:
#   - the sockets are held by systemd with the modes nginx needs, and no
#     sidecar runs before the first client (lazy start);
#   - a WebSocket through nginx starts one sidecar and gets the welcome;
#     a push to the URL in it reaches that client;
#   - `systemctl restart wsgate@1` (three times) refuses no new connection,
#     counted by clients connecting in a loop through nginx, straight to
#     ws-1.sock and pushing through nginx's instance-1 push port;
#   - `systemctl stop` closes clients with 1012 and leaves the units
#     inactive, not failed; stopping wsgate.target removes the sockets;
#   - with nginx.push_proxy = "none" and the drop-ins make install writes,
#     systemd holds the push ports: a push reaches the client with nginx
#     out of its way, and restarting a sidecar refuses no push.
#
# Needs root. Installs systemd-container and debootstrap when missing. The
# rootfs comes from the Debian mirror apt uses here and is cached as a
# tarball in $WSGATE_TEST_CACHE (default /var/cache/wsgate-test).
# WSGATE_TEST_KEEP=1 keeps the scratch directory for a post-mortem.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD

SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,nginx-light,curl
CACHE=${WSGATE_TEST_CACHE:-/var/cache/wsgate-test}
PUSH_PORT_BASE=48775 # config.Default().Push.PortBase; the container config keeps it

START=$EPOCHREALTIME
step() { printf '[%6.1fs] %s\n' "$(awk -v a="$START" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')" "$*"; }
ok() { printf '           ok: %s\n' "$*"; }
fail() {
	printf '\nFAIL: %s\n' "$*" >&2
	diagnostics >&2 || true
	exit 1
}

[ "$(id -u)" = 0 ] || { echo "test-systemd needs root (systemd-nspawn, debootstrap)" >&2; exit 1; }
export PATH="$PATH:/usr/sbin:/sbin:/usr/local/go/bin"

# --- tools ----------------------------------------------------------------
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nsenter >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
	step "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
fi

# mirror prints the first Debian mirror apt is configured with for $SUITE.
mirror() {
	local f
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v suite="$SUITE" '
			BEGIN { RS = ""; FS = "\n" }
			{
				types = ""; uris = ""; suites = ""; enabled = "yes"
				for (i = 1; i <= NF; i++) {
					if ($i ~ /^[ \t]*#/ || index($i, ":") == 0) continue
					key = tolower(substr($i, 1, index($i, ":") - 1))
					val = substr($i, index($i, ":") + 1)
					gsub(/^[ \t]+|[ \t]+$/, "", val)
					if (key == "types") types = val
					else if (key == "uris") uris = val
					else if (key == "suites") suites = val
					else if (key == "enabled") enabled = tolower(val)
				}
				if (enabled == "no" || (" " types " ") !~ / deb /) next
				if ((" " suites " ") ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk -v suite="$SUITE" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == suite) { print $i; exit }
			}' "$f"
	done
}

# --- rootfs ---------------------------------------------------------------
mkdir -p "$CACHE"
TARBALL=$CACHE/debian-$SUITE-minbase-$(printf '%s' "$PACKAGES" | sha256sum | cut -c1-12).tar
if [ -s "$TARBALL" ]; then
	step "rootfs: cached $TARBALL"
else
	MIRROR=${WSGATE_TEST_MIRROR:-$(mirror | head -n1)}
	[ -n "$MIRROR" ] || fail "no Debian $SUITE mirror in /etc/apt/sources.list{,.d}; set WSGATE_TEST_MIRROR"
	step "rootfs: debootstrap $SUITE from $MIRROR (once; cached afterwards)"
	build=$(mktemp -d "$CACHE/build.XXXXXX")
	if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$build/root" "$MIRROR" >"$build/log" 2>&1; then
		tail -n 30 "$build/log" >&2
		rm -rf "$build"
		fail "debootstrap failed"
	fi
	tar --numeric-owner -C "$build/root" -cf "$build/rootfs.tar" .
	mv "$build/rootfs.tar" "$TARBALL"
	rm -rf "$build"
	step "rootfs: cached as $TARBALL"
fi

WORK=$(mktemp -d /var/tmp/wsgate-boot.XXXXXX)
ROOT=$WORK/root
NSPAWN=
BG=()
cleanup() {
	local rc=$? p
	for p in "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
	if [ -n "$NSPAWN" ] && kill -0 "$NSPAWN" 2>/dev/null; then
		kill -TERM "$NSPAWN" 2>/dev/null || true # nspawn powers the container off
		for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$NSPAWN" 2>/dev/null || true
		wait "$NSPAWN" 2>/dev/null || true
	fi
	if [ "${WSGATE_TEST_KEEP:-}" = 1 ]; then
		echo "kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT

# inside runs a command in the booted container.
inside() {
	nsenter -t "$INIT" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

diagnostics() {
	[ -n "${INIT:-}" ] || { tail -n 40 "$WORK/console.log" 2>/dev/null; return; }
	echo "--- units"
	inside systemctl list-units --all --no-pager --plain 'wsgate*' nginx.service
	echo "--- journal (wsgate, nginx)"
	inside journalctl --no-pager -o short-precise -n 80 -u 'wsgate*' -u nginx.service
	echo "--- nginx error.log"
	inside tail -n 20 /var/log/nginx/error.log
	local f
	for f in "$WORK"/*.out; do [ -e "$f" ] && { echo "--- $(basename "$f")"; cat "$f"; }; done
}

# await waits up to $1 seconds for the command that follows to succeed.
await() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}

# bg starts a command in the container in the background, output in $WORK/$1.out.
bg() {
	local name=$1
	shift
	inside "$@" >"$WORK/$name.out" 2>&1 &
	BG+=($!)
	eval "PID_$name=$!"
}

# welcomed waits for the welcome line in $WORK/$1.out and prints its text.
welcomed() {
	await 20 grep -q '^welcome ' "$WORK/$1.out" || fail "$1: no welcome within 20s"
	sed -n 's/^welcome //p' "$WORK/$1.out" | head -n1
}

active() { inside systemctl is-active "$@" || true; }
mainpid() { inside systemctl show -P MainPID "$1"; }

# --- build and install ----------------------------------------------------
step "unpacking the rootfs into $ROOT"
mkdir -p "$ROOT"
tar --numeric-owner -xpf "$TARBALL" -C "$ROOT"

step "building wsgate and the test client (static), make install DESTDIR=$ROOT"
export CGO_ENABLED=0
mkdir -p "$ROOT/etc/wsgate"
cat >"$ROOT/etc/wsgate/wsgate.toml" <<'EOF'
# written by systemd/test/boot.sh before `make install`, which must keep it
instances = 2
shutdown_timeout = "10s"

[log]
level = "info"
EOF
cp "$ROOT/etc/wsgate/wsgate.toml" "$WORK/wsgate.toml.mine"
go build -o "$ROOT/usr/local/bin/wsclient" ./systemd/test/wsclient
make --no-print-directory install DESTDIR="$ROOT" BIN="$WORK/wsgate" >"$WORK/install.log" 2>&1 ||
	{ cat "$WORK/install.log" >&2; fail "make install"; }
cmp -s "$ROOT/etc/wsgate/wsgate.toml" "$WORK/wsgate.toml.mine" || fail "make install overwrote an existing /etc/wsgate/wsgate.toml"
ok "installed; the existing /etc/wsgate/wsgate.toml was kept"

rm -f "$ROOT/etc/nginx/sites-enabled/default"
cat >"$ROOT/etc/nginx/sites-enabled/wsgate" <<'EOF'
server {
    listen 127.0.0.1:8080;
    include snippets/wsgate-location.conf;
}
EOF
echo wsgate-test >"$ROOT/etc/hostname"

# --- boot -----------------------------------------------------------------
step "booting the container (systemd-nspawn -b, private network)"
systemd-nspawn -D "$ROOT" -b --register=no --keep-unit --console=pipe --private-network \
	>"$WORK/console.log" 2>&1 </dev/null &
NSPAWN=$!
INIT=
container_init() {
	local p
	for p in $(ps -o pid= --ppid "$NSPAWN"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && { INIT=$p; return 0; }
	done
	return 1
}
await 30 container_init || fail "the container's init did not appear"
container_init
# Until systemd's private socket exists, systemctl fails at once; then --wait
# blocks until the boot is over.
deadline=$((SECONDS + 60))
state=
while [ $SECONDS -lt $deadline ]; do
	state=$(timeout 60 nsenter -t "$INIT" -a systemctl is-system-running --wait 2>/dev/null || true)
	case $state in running | degraded | maintenance | stopping) break ;; esac
	sleep 0.2
done
case $state in
running) ;;
degraded) echo "           (degraded: $(inside systemctl --failed --plain --no-legend | awk '{print $1}' | xargs))" ;;
*) fail "the container did not boot: is-system-running says '$state'" ;;
esac
[ "$(active nginx.service)" = active ] || fail "nginx is not running in the container"
step "booted ($state); nginx active"

# --- sockets, lazy start --------------------------------------------------
step "systemctl enable --now wsgate-{ws,push}@{1,2}.socket"
inside systemctl enable --now wsgate-ws@1.socket wsgate-ws@2.socket wsgate-push@1.socket wsgate-push@2.socket \
	>"$WORK/enable.log" 2>&1 || { cat "$WORK/enable.log"; fail "enabling the sockets"; }
for s in wsgate-ws@1.socket wsgate-ws@2.socket wsgate-push@1.socket wsgate-push@2.socket wsgate.target; do
	[ "$(active $s)" = active ] || fail "$s is not active"
done
for s in ws-1 ws-2 push-1 push-2; do
	got=$(inside stat -c '%F %a %U %G' "/run/wsgate/$s.sock")
	[ "$got" = "socket 660 root www-data" ] || fail "/run/wsgate/$s.sock is '$got', want 'socket 660 root www-data'"
done
ok "4 sockets listening as root:www-data 0660; wsgate.target active"
[ "$(active wsgate@1.service wsgate@2.service | xargs)" = "inactive inactive" ] ||
	fail "a sidecar runs before any client: $(active wsgate@1.service wsgate@2.service | xargs)"
ok "no sidecar running before the first client"

# --- first client through nginx, push -------------------------------------
step "first WebSocket through nginx"
t=$EPOCHREALTIME
bg first wsclient client -url ws://127.0.0.1:8080/ws -messages 1 -timeout 30s
welcome=$(welcomed first)
ms=$(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", (b - a) * 1000 }')
url=${welcome%%,*}
[[ $url =~ ^http://[A-Za-z0-9_-]{22,}@127\.0\.0\.1:([0-9]+)/ws$ ]] || fail "welcome '$welcome' is not a push URL list"
inst=$((BASH_REMATCH[1] - PUSH_PORT_BASE + 1))
other=$((3 - inst))
[ "$inst" = 1 ] || [ "$inst" = 2 ] || fail "welcome names port ${BASH_REMATCH[1]}, not an instance's push port"
[ "$(active "wsgate@$inst.service")" = active ] || fail "welcome came from instance $inst, but wsgate@$inst is not active"
[ "$(active "wsgate@$other.service")" = inactive ] || fail "wsgate@$other started without a client"
ok "welcome '$welcome' after ${ms}ms; wsgate@$inst started lazily, wsgate@$other still inactive"

step "push through nginx to $url"
code=$(inside curl -sS -o /dev/null -w '%{http_code}' -X POST --data-binary 'hello from systemd' "$url")
[ "$code" = 204 ] || fail "push answered $code, want 204"
wait "$PID_first" || fail "the first client failed"
grep -qx 'message hello from systemd' "$WORK/first.out" || fail "the push did not reach the client"
ok "204, and the client received 'hello from systemd'"

step "metrics of wsgate@$inst under the unit's sandbox"
metrics=$(inside curl -sS --unix-socket "/run/wsgate/push-$inst.sock" http://localhost/metrics) || fail "GET /metrics on push-$inst.sock failed"
for m in 'wsgate_pushes_total{code="204"} 1' process_start_time_seconds process_open_fds; do
	grep -q "^$m" <<<"$metrics" || fail "/metrics has no '$m' (the sandbox hides what it needs?)"
done
ok "/metrics has the delivered push and the process metrics"

# --- restart without refusing ---------------------------------------------
step "restart: clients connecting in a loop during systemctl restart wsgate@1 (x3)"
bg hold1 wsclient client -unix /run/wsgate/ws-1.sock -want-close 1012 -timeout 60s
welcomed hold1 >/dev/null
[ "$(active wsgate@1.service)" = active ] || fail "wsgate@1 is not active with a client on ws-1.sock"
pid_before=$(mainpid wsgate@1.service)
inside mkdir -p /run/wsgate-test
inside rm -f /run/wsgate-test/stop /run/wsgate-test/window
loop=(-stop /run/wsgate-test/stop -window /run/wsgate-test/window -workers 4)
# Through nginx, a failed connect to ws-1.sock is retried on ws-2.sock and
# only shows in nginx's error.log, checked below; hence also a loop straight
# to ws-1.sock, and pushes through nginx's instance-1 push port, whose
# upstream is that one socket: nginx answers 502 when it cannot reach it.
bg loop_nginx wsclient wsloop -url ws://127.0.0.1:8080/ws "${loop[@]}"
bg loop_ws1 wsclient wsloop -unix /run/wsgate/ws-1.sock "${loop[@]}"
bg loop_push1 wsclient pushloop -push-url "http://127.0.0.1:$PUSH_PORT_BASE/ws/AAAAAAAAAAAAAAAAAAAAAA" "${loop[@]}"
sleep 1 # traffic before the restarts
# Three restarts: a race in the handover shows up more often than not.
t0=$(date +%s%N)
pids=$pid_before
for r in 1 2 3; do
	inside systemctl restart wsgate@1.service || fail "systemctl restart wsgate@1 ($r) failed"
	pid=$(mainpid wsgate@1.service)
	[ "$pid" != 0 ] && [ "$pid" != "${pids##* }" ] || fail "restart $r: wsgate@1 MainPID ${pids##* } -> $pid: it did not restart"
	pids="$pids -> $pid"
done
t1=$(date +%s%N)
sleep 1 # and traffic after them
echo "$t0 $t1" | inside tee /run/wsgate-test/window >/dev/null
inside touch /run/wsgate-test/stop
for l in loop_nginx loop_ws1 loop_push1; do
	p=PID_$l
	wait "${!p}" || fail "$l: $(tail -n 3 "$WORK/$l.out")"
	printf '           %-11s %s\n' "$l:" "$(tail -n 1 "$WORK/$l.out")"
done
wait "$PID_hold1" || fail "the client held on wsgate@1 was not closed with 1012: $(cat "$WORK/hold1.out")"
inside test -f /var/log/nginx/error.log || fail "no /var/log/nginx/error.log to check"
refused=$(inside grep -c 'connect() to unix:/run/wsgate/' /var/log/nginx/error.log || true)
[ "${refused:-0}" = 0 ] || fail "nginx logged $refused failed connects to the sidecars: $(inside grep 'connect() to unix:' /var/log/nginx/error.log | tail -n 3)"
ok "3 restarts in $(((t1 - t0) / 1000000))ms (pid $pids): no connection refused or failed, the held client got 1012, nginx logged no failed connect"

# --- clean stop -----------------------------------------------------------
step "stop: systemctl stop wsgate@1 wsgate@2 with a client on each"
bg hold1 wsclient client -unix /run/wsgate/ws-1.sock -want-close 1012 -timeout 60s
bg hold2 wsclient client -unix /run/wsgate/ws-2.sock -want-close 1012 -timeout 60s
welcomed hold1 >/dev/null
welcomed hold2 >/dev/null
t0=$(date +%s%N)
# (systemctl warns that the sockets can still start them: that is the design.)
inside systemctl stop wsgate@1.service wsgate@2.service >"$WORK/stop.log" 2>&1 || fail "systemctl stop failed: $(cat "$WORK/stop.log")"
t1=$(date +%s%N)
wait "$PID_hold1" || fail "client on wsgate@1 not closed with 1012: $(cat "$WORK/hold1.out")"
wait "$PID_hold2" || fail "client on wsgate@2 not closed with 1012: $(cat "$WORK/hold2.out")"
for i in 1 2; do
	got=$(inside systemctl show -p ActiveState -p Result -p ExecMainCode -p ExecMainStatus "wsgate@$i.service" | sort | xargs)
	[ "$got" = "ActiveState=inactive ExecMainCode=1 ExecMainStatus=0 Result=success" ] ||
		fail "wsgate@$i after stop: $got (want inactive, exited 0, success)"
done
ok "stopped in $(((t1 - t0) / 1000000))ms; clients closed with 1012; both units inactive, exit 0, Result=success"

step "systemctl stop wsgate.target"
inside systemctl stop wsgate.target
for s in wsgate-ws@1.socket wsgate-ws@2.socket wsgate-push@1.socket wsgate-push@2.socket wsgate@1.service wsgate@2.service; do
	[ "$(active $s)" = inactive ] || fail "$s is $(active $s) after stopping wsgate.target"
done
left=$(inside find /run/wsgate -name '*.sock' 2>/dev/null || true)
[ -z "$left" ] || fail "sockets left after stopping the target: $left"
failed=$(inside systemctl list-units --all --state=failed --plain --no-legend 'wsgate*') || fail "systemctl list-units failed"
[ -z "$failed" ] || fail "failed wsgate units: $failed"
ok "every wsgate unit inactive, none failed, socket files removed"

# --- push ports held by systemd (nginx.push_proxy = "none") ----------------
step "push_proxy = \"none\" on a running system, as systemd/README.md says: stop wsgate.target, make install (drop-ins), reload nginx, start wsgate.target"
inside systemctl start wsgate.target
bg before wsclient client -url ws://127.0.0.1:8080/ws -want-close 1012 -timeout 60s
welcomed before >/dev/null
inside systemctl stop wsgate.target || fail "systemctl stop wsgate.target"
wait "$PID_before" || fail "the client connected before was not closed with 1012: $(cat "$WORK/before.out")"
printf '\n[nginx]\npush_proxy = "none"\n' >>"$ROOT/etc/wsgate/wsgate.toml"
make --no-print-directory install DESTDIR="$ROOT" BIN="$WORK/wsgate" >"$WORK/install2.log" 2>&1 ||
	{ cat "$WORK/install2.log" >&2; fail "make install with push_proxy = \"none\""; }
for i in 1 2; do
	inside grep -qx "ListenStream=127.0.0.1:$((PUSH_PORT_BASE + i - 1))" "/usr/local/lib/systemd/system/wsgate-push@$i.socket.d/wsgate-push-port.conf" ||
		fail "make install wrote no drop-in with instance $i's push port: $(cat "$WORK/install2.log")"
done
inside grep -q 'wsgate_push_' /etc/nginx/conf.d/wsgate.conf && fail "conf.d/wsgate.conf still has push servers"
inside systemctl daemon-reload
inside systemctl reload nginx || fail "nginx reload"
# nginx's old workers let go of the push ports once they are done.
await 20 sh -c "! nsenter -t $INIT -a cat /proc/net/tcp | awk '\$4 == \"0A\"' | grep -qi ':$(printf %04X $PUSH_PORT_BASE) '" ||
	fail "nginx still listens on $PUSH_PORT_BASE after its reload"
inside systemctl start wsgate.target || fail "systemctl start wsgate.target"
for s in wsgate-ws@1.socket wsgate-ws@2.socket wsgate-push@1.socket wsgate-push@2.socket; do
	[ "$(active $s)" = active ] || fail "$s is not active after the restart"
done
inside test -e /run/wsgate/push-1.sock && fail "/run/wsgate/push-1.sock is still there"
listens=$(inside systemctl show -P Listen wsgate-push@1.socket)
[ "$listens" = "127.0.0.1:$PUSH_PORT_BASE (Stream)" ] || fail "wsgate-push@1.socket listens on '$listens'"
ok "the old client got 1012; wsgate-push@1.socket listens on $listens; the unix push sockets are gone"

step "a push straight to the sidecar"
bg direct wsclient client -url ws://127.0.0.1:8080/ws -messages 1 -timeout 30s
welcome=$(welcomed direct)
url=${welcome%%,*}
[[ $url =~ @127\.0\.0\.1:([0-9]+)/ws$ ]] || fail "welcome '$welcome' is not a push URL list"
inst=$((BASH_REMATCH[1] - PUSH_PORT_BASE + 1))
code=$(inside curl -sS -o /dev/null -w '%{http_code}' -X POST --data-binary 'straight from systemd' "$url")
[ "$code" = 204 ] || fail "push answered $code, want 204"
wait "$PID_direct" || fail "the client failed"
grep -qx 'message straight from systemd' "$WORK/direct.out" || fail "the push did not reach the client"
inside curl -sS "http://127.0.0.1:${BASH_REMATCH[1]}/metrics" | grep -q '^wsgate_pushes_total{code="204"} 1' ||
	fail "no /metrics on the push port, or no push counted there"
ok "204 from wsgate@$inst on its port; the client received it; /metrics served there"

step "restart: pushes to instance 1's port in a loop during systemctl restart wsgate@1 (x3)"
inside systemctl start wsgate@1.service
inside rm -f /run/wsgate-test/stop /run/wsgate-test/window
bg loop_direct wsclient pushloop -fresh -push-url "http://127.0.0.1:$PUSH_PORT_BASE/ws/AAAAAAAAAAAAAAAAAAAAAA" "${loop[@]}"
sleep 1
t0=$(date +%s%N)
for r in 1 2 3; do
	inside systemctl restart wsgate@1.service || fail "systemctl restart wsgate@1 ($r) failed"
done
t1=$(date +%s%N)
sleep 1
echo "$t0 $t1" | inside tee /run/wsgate-test/window >/dev/null
inside touch /run/wsgate-test/stop
wait "$PID_loop_direct" || fail "loop_direct: $(tail -n 3 "$WORK/loop_direct.out")"
printf '           %-11s %s\n' "loop_direct:" "$(tail -n 1 "$WORK/loop_direct.out")"
ok "3 restarts in $(((t1 - t0) / 1000000))ms: every push answered by a sidecar, none refused"
inside systemctl stop wsgate.target
for s in wsgate-push@1.socket wsgate-push@2.socket wsgate@1.service wsgate@2.service; do
	[ "$(active $s)" = inactive ] || fail "$s is $(active $s) after stopping wsgate.target"
done

step "PASS"
