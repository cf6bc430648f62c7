#!/usr/bin/env bash
# Where memgate's CPU goes: perf profile + syscalls and context switches per request under load.
#
#   bash bench/profile.sh [CONNS] [musl]     # CONNS default 64; "musl" profiles the static build
#
# Builds an unstripped copy with line tables (same release profile otherwise) into
# /tmp/memgate-prof-target (not target/, so the benchmark's binaries stay as they are), runs it
# pinned to core 0 with memgate-mock + wrk on core 1 like bench/run.sh, and prints:
#   * syscalls, context switches and futex / epoll_ctl / sendto / recvfrom calls per request
#     (perf stat on tracepoints), for memgate and for the same nginx setup as run.sh;
#   * the top functions by self time (perf record, cpu-clock sampling, 6 s).
# Needs perf (apt-get install linux-perf) and root (or perf_event_paranoid <= 1).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
CONNS=${1:-64}
PROF_TARGET=${PROF_TARGET:-/tmp/memgate-prof-target}
command -v perf >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null

cd "$ROOT"
if [ "${2:-}" = musl ]; then
    TARGET_ARGS=(--target x86_64-unknown-linux-musl)
    BIN=$PROF_TARGET/x86_64-unknown-linux-musl/release/memgate
else
    TARGET_ARGS=()
    BIN=$PROF_TARGET/release/memgate
fi
echo "profile: building an unstripped memgate into $PROF_TARGET (fat LTO: a few minutes)" >&2
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release -q --bin memgate --target-dir "$PROF_TARGET" "${TARGET_ARGS[@]}"
cargo build --release -q --bin memgate-mock

T=$(mktemp -d /tmp/memgate-profile.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local i
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

MOCK_PORT=$(free_port)
taskset -c 1 target/release/memgate-mock --dir "$BENCH_DIR/fixtures" --listen "127.0.0.1:$MOCK_PORT" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT"

MG_PORT=$(free_port)
mkdir -p "$T/data"
cat >"$T/memgate.toml" <<EOF
listen = "127.0.0.1:$MG_PORT"
data_dir = "$T/data"
[providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key = "sk-bench"
EOF
RUST_LOG=warn taskset -c 0 "$BIN" serve --config "$T/memgate.toml" 2>"$T/memgate.err" &
MG_PID=$!
PIDS+=("$MG_PID")
wait_port "$MG_PORT"

NG_PORT=$(free_port)
mkdir -p "$T/nginx"
cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 1; daemon off; user root; pid $T/nginx/nginx.pid; error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NG_PORT;
        location / {
            proxy_pass http://mock; proxy_http_version 1.1;
            proxy_set_header Connection ""; proxy_buffering off;
        }
    }
}
EOF
taskset -c 0 nginx -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" &
NG_PID=$!
PIDS+=("$NG_PID")
wait_port "$NG_PORT"

load() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$2"s -s "$BENCH_DIR/post.lua" "http://127.0.0.1:$1" | sed -n 's/^WRKJSON //p'; }
EV=raw_syscalls:sys_enter,context-switches
for s in sendto recvfrom writev readv epoll_ctl epoll_wait epoll_pwait futex read write timerfd_settime; do
    EV+=",syscalls:sys_enter_$s"
done
per_request() { # NAME PORT PID...
    local name=$1 port=$2 p
    shift 2
    load "$port" 1 >/dev/null
    for p in "$@"; do perf stat -e "$EV" -p "$p" -o "$T/stat.$p" -- sleep 5 & done
    load "$port" 5 >"$T/wrk.json"
    wait $(jobs -p | grep -vxF -f <(printf '%s\n' "${PIDS[@]}")) 2>/dev/null || true
    python3 - "$name" "$CONNS" "$T" "$@" <<'PY'
import collections, json, sys
name, conns, tmp, pids = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
wrk = json.load(open(f"{tmp}/wrk.json"))
counts = collections.Counter()
for p in pids:
    for line in open(f"{tmp}/stat.{p}"):
        f = line.split()
        if len(f) >= 2 and f[0].replace(",", "").isdigit():
            counts[f[1].replace("syscalls:sys_enter_", "")] += int(f[0].replace(",", ""))
n = wrk["requests"]
print(f"{name}: {n / wrk['duration_us'] * 1e6:,.0f} req/s at c={conns}; per request: "
      + ", ".join(f"{k} {v / n:.2f}" for k, v in counts.most_common() if v))
PY
}
echo "== syscalls and context switches per request (perf stat, 5 s at c=$CONNS)"
per_request memgate "$MG_PORT" "$MG_PID"
per_request nginx "$NG_PORT" "$NG_PID" $(pgrep -P "$NG_PID")

echo "== memgate: top functions by self time (perf record, 6 s at c=$CONNS)"
load "$MG_PORT" 1 >/dev/null
perf record -q -F 999 -o "$T/perf.data" -p "$MG_PID" -- sleep 6 2>/dev/null &
REC=$!
load "$MG_PORT" 6 >/dev/null
wait "$REC" || true
perf report -i "$T/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -4
perf report -i "$T/perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -30 | cut -c1-140
