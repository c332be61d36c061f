#!/usr/bin/env bash
# make bench: the same workload against wsgate (`wsgate up`: nginx + 2
# sidecars) in three setups: `wsgate`, clients through an http location and
# pushes through http servers (the defaults); `wsgate-stream`, both through
# nginx's stream module (nginx.client_proxy and nginx.push_proxy =
# "stream"); `wsgate-direct`, clients through the stream module and pushes
# straight to the sidecars (nginx.push_proxy = "none"); and against Nchan
# (nginx with libnginx-mod-nchan), alternating them on loopback, then each
# figure as a ratio wsgate/Nchan from the best run of each. Knobs: CLIENTS,
# PUSHES, PUSHERS, CONC, SIZE, BATCH, ROUNDS, RATE, RATE_PUSHES; SETUPS
# (e.g. "wsgate-direct") runs only those; WSGATE_ENV adds environment to
# `wsgate up` (e.g. WSGATE_ENV=GOMAXPROCS=1); PROFILE=DIR records every
# phase into DIR (`make profile`; see summarize below), the last round's.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-8000} PUSHES=${PUSHES:-30000} PUSHERS=${PUSHERS:-32} CONC=${CONC:-64}
SIZE=${SIZE:-64} BATCH=${BATCH:-100} ROUNDS=${ROUNDS:-2}
# The fixed-rate run: latency at the same load for both, below what either
# sustains here.
RATE=${RATE:-8000} RATE_PUSHES=${RATE_PUSHES:-16000}
NCHAN_MOD=/usr/lib/nginx/modules/ngx_nchan_module.so
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so
export PATH="$PATH:/usr/sbin"

# need MODULE PACKAGE: apt-get installs PACKAGE when MODULE is missing
# and it can.
need() {
  [ -f "$1" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bench: installing $2" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >&2
  else
    echo "bench: $2 is not installed (apt-get install $2); skipping what needs it" >&2
  fi
}
need "$NCHAN_MOD" libnginx-mod-nchan
need "$STREAM_MOD" libnginx-mod-stream
if [ -n "${PROFILE:-}" ]; then
  command -v perf >/dev/null || need /usr/bin/perf linux-perf
  command -v perf >/dev/null || { echo "bench: PROFILE needs perf (apt-get install linux-perf)" >&2; exit 1; }
  mkdir -p "$PROFILE"
  # What an earlier run left (perf would keep it as .old).
  rm -f "$PROFILE"/*-{handshake,push,batch}.{data,syscalls,txt}
fi

state=$(mktemp -d /tmp/wsgate-bench.XXXXXX)
chmod 755 "$state"
wsgate_pid= nchan_pid=
cleanup() { stop "$wsgate_pid"; stop "$nchan_pid"; rm -rf "$state"; }
trap cleanup EXIT

# Both servers get 2 nginx workers on this 2-core machine. A wsgate client
# is two nginx connections (client and sidecar), a Nchan client one, so
# wsgate's workers get more, up to what the 20,000 open files a process may
# have here allow: nginx's workers do not share clients evenly, and a worker
# out of connections closes idle and not yet read ones (handshakes,
# kept-alive pushes) to make room.
cat > "$state/wsgate.toml" <<EOT
instances = 2
runtime_dir = "$state/run"
listen = ["127.0.0.1:18080"]
[push]
port_base = 18775
[nginx]
worker_processes = 2
worker_connections = 18900
EOT
# The same with clients and pushes through the stream module, and with
# clients through it and pushes straight to the sidecars, each on another
# port ([nginx] is the last table).
{ sed 's/127.0.0.1:18080/127.0.0.1:18081/' "$state/wsgate.toml"; echo 'client_proxy = "stream"'; echo 'push_proxy = "stream"'; } > "$state/wsgate-stream.toml"
{ sed 's/127.0.0.1:18080/127.0.0.1:18082/' "$state/wsgate.toml"; echo 'client_proxy = "stream"'; echo 'push_proxy = "none"'; } > "$state/wsgate-direct.toml"
setups=(wsgate)
[ -f "$STREAM_MOD" ] && setups+=(wsgate-stream wsgate-direct)
[ -n "${SETUPS:-}" ] && read -ra setups <<< "$SETUPS"
have_nchan=
if [ -f "$NCHAN_MOD" ]; then
  have_nchan=1
  mkdir -p "$state/nchan"
  chmod 755 "$state/nchan"
  cat > "$state/nchan/nginx.conf" <<EOT
load_module $NCHAN_MOD;
daemon off;
worker_processes 2;
worker_rlimit_nofile 16384;
pid $state/nchan/nginx.pid;
error_log $state/nchan/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $state/nchan/body;
  proxy_temp_path $state/nchan/proxy;
  fastcgi_temp_path $state/nchan/fastcgi;
  uwsgi_temp_path $state/nchan/uwsgi;
  scgi_temp_path $state/nchan/scgi;
  server {
    listen 127.0.0.1:18090;
    location ~ ^/sub/(\w+)$ { nchan_subscriber websocket; nchan_channel_id \$1; }
    location ~ ^/pub/(\w+)$ { nchan_publisher; nchan_channel_id \$1; nchan_message_buffer_length 1; nchan_message_timeout 30s; }
  }
}
EOT
fi

# Each round starts both servers afresh, so that memory is measured on a
# server that never held clients before (a process keeps freed memory).
start_wsgate() { # SETUP: wsgate or wsgate-stream
  rm -rf "$state/up"
  env ${WSGATE_ENV:-} bin/wsgate up -config "$state/$1.toml" -state "$state/up" > "$state/up.log" 2>&1 &
  wsgate_pid=$!
  for _ in $(seq 100); do
    grep -q "wsgate is up" "$state/up.log" && return 0
    sleep 0.1
  done
  cat "$state/up.log"; exit 1
}
start_nchan() {
  nginx -p "$state/nchan" -c "$state/nchan/nginx.conf" -e stderr 2> "$state/nchan.log" &
  nchan_pid=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/18090) 2>/dev/null && return 0
    sleep 0.1
  done
  cat "$state/nchan.log"; exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

common=(-clients "$CLIENTS" -pushes "$PUSHES" -p "$PUSHERS" -c "$CONC" -size "$SIZE" -rate "$RATE" -rate-pushes "$RATE_PUSHES" -json)
[ -n "${PROFILE:-}" ] && common+=(-perf "$PROFILE")
: > "$state/results.json"
for round in $(seq "$ROUNDS"); do
  for setup in "${setups[@]}"; do
    echo "bench: round $round: $setup" >&2
    start_wsgate "$setup"
    sleep 0.5
    port=18080; [ "$setup" = wsgate-stream ] && port=18081; [ "$setup" = wsgate-direct ] && port=18082
    bin/wsbench -target wsgate -label "$setup" -ws "ws://127.0.0.1:$port/ws" -batch "$BATCH" -pid "$wsgate_pid" "${common[@]}" >> "$state/results.json"
    stop "$wsgate_pid"
  done
  if [ -n "$have_nchan" ]; then
    echo "bench: round $round: nchan" >&2
    start_nchan
    sleep 0.5
    bin/wsbench -target nchan -ws ws://127.0.0.1:18090/sub/ -pub http://127.0.0.1:18090/pub/ -pid "$nchan_pid" "${common[@]}" >> "$state/results.json"
    stop "$nchan_pid"
  fi
done
bin/wsbench -report "$state/results.json"

# summarize FILE.data: FILE.txt, the server's system calls per operation of
# that phase (FILE.syscalls, from wsbench), then where the two CPUs' time
# went: the share of all samples by process (swapper is idle time), then for each
# of nginx (wsgate's or Nchan's), wsgate (the sidecars) and wsbench (the load
# generator) its share in the kernel and in its own code, its top
# functions with what they call (a system call with the kernel's work for
# it, the loopback's delivery to the reader included), and its top
# functions by their own time. Every percentage is of all samples of the phase, so figures of
# different processes add up.
summarize() {
  local f=$1 comm
  report() { perf report -i "$f" --stdio --no-children -g none --percent-limit "$@" 2>/dev/null | grep -v -e '^#' -e '^$' || true; }
  # A file perf cannot read says so once, here.
  perf report -i "$f" --stdio --sort comm > /dev/null || echo "bench: perf cannot read $f" >&2
  {
    cat "${f%.data}.syscalls" 2>/dev/null || true
    echo "== $(basename "$f" .data): share of all samples by process"
    report 0.5 --sort comm
    for comm in nginx wsgate wsbench; do
      echo
      echo "== $comm: kernel and user"
      # comm in every sort: perf merges entries before it filters them.
      report 0.5 --comms "$comm" --sort comm,dso
      echo "== $comm: top functions with what they call (children, then self)"
      report 1 --children --comms "$comm" --sort comm,sym | head -25
      echo "== $comm: top functions by their own time"
      report 0.7 --comms "$comm" --sort comm,dso,sym | head -12
    done
  } > "${f%.data}.txt"
}
if [ -n "${PROFILE:-}" ]; then
  for f in "$PROFILE"/*.data; do summarize "$f"; done
  echo "bench: profiles in $PROFILE (*.txt summaries; perf report -i FILE.data for the rest)" >&2
fi
