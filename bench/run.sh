#!/usr/bin/env bash
# memgate benchmark: direct to memgate-mock vs through memgate vs through a plain nginx reverse
# proxy, in one run. See bench/README.md for what each figure means.
#
#   bash bench/run.sh            # whole run: ~4 minutes once the binaries are built
#
# Knobs (environment): BENCH_DURATION (s per latency run, 5), BENCH_TPUT_DURATION (s per c=64 run, 6),
# BENCH_REPS (3), BENCH_TTFB_N (300), BENCH_STREAMS (256), BENCH_GW_CORE (0), BENCH_LOAD_CORE (1),
# BENCH_REBUILD_STATIC=1 (rebuild the musl binary even if present), BENCH_KEEP=1 (keep the temp dir),
# BENCH_WAIT_IDLE=N (wait up to ~N s for other processes to stop using the CPU before starting),
# BENCH_RETRIES (12: how many disturbed wrk runs may be redone in all).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
DUR=${BENCH_DURATION:-5}
TPUT_DUR=${BENCH_TPUT_DURATION:-6}
REPS=${BENCH_REPS:-3}
TTFB_N=${BENCH_TTFB_N:-300}
STREAMS=${BENCH_STREAMS:-256}
GW_CORE=${BENCH_GW_CORE:-0}
LOAD_CORE=${BENCH_LOAD_CORE:-1}
MUSL_TARGET=x86_64-unknown-linux-musl

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# ---------------------------------------------------------------- tools
APT_UPDATED=0
apt_install() {
    [ "$(id -u)" = 0 ] || die "missing packages ($*) and not root: install them first"
    say "bench: apt-get install $*"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; then
        if [ "$APT_UPDATED" = 0 ]; then
            apt-get update -q >/dev/null 2>&1 || true
            APT_UPDATED=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null || return 1
    fi
}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v file >/dev/null || need+=(file)
command -v python3 >/dev/null || need+=(python3)
command -v pgrep >/dev/null || need+=(procps)
command -v strip >/dev/null || need+=(binutils)
[ ${#need[@]} = 0 ] || apt_install "${need[@]}" || die "could not install ${need[*]}"
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    apt_install nginx-light || apt_install nginx || die "could not install nginx"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v cargo >/dev/null || die "cargo not found"

# ---------------------------------------------------------------- pinning
NCPU=$(nproc --all)
if [ "$NCPU" -lt 2 ]; then
    say "bench: WARNING only $NCPU core(s): gateway and load share it; figures are not comparable"
    GW_CORE=0
    LOAD_CORE=0
fi
# Foreground helper only: a backgrounded shell function would make $! the subshell, not the process.
load() { taskset -c "$LOAD_CORE" "$@"; }

# ---------------------------------------------------------------- build
cd "$ROOT"
say "bench: cargo build --release"
if ! cargo build --release -q 2>"${TMPDIR:-/tmp}/memgate-bench-build.log"; then
    [ -x target/release/memgate ] && [ -x target/release/memgate-mock ] ||
        die "build failed: see ${TMPDIR:-/tmp}/memgate-bench-build.log"
    say "bench: WARNING cargo build failed (tree being edited?); using the existing target/release binaries"
    BUILD_NOTE="build FAILED, stale binaries used"
else
    BUILD_NOTE="fresh build"
fi
MEMGATE=$ROOT/target/release/memgate
MOCK=$ROOT/target/release/memgate-mock
STATIC=$ROOT/target/$MUSL_TARGET/release/memgate
if [ ! -x "$STATIC" ] || [ "${BENCH_REBUILD_STATIC:-0}" = 1 ]; then
    command -v musl-gcc >/dev/null || apt_install musl-tools || die "could not install musl-tools"
    rustup target list --installed 2>/dev/null | grep -qx "$MUSL_TARGET" ||
        rustup target add "$MUSL_TARGET" >/dev/null 2>&1 || die "rustup target add $MUSL_TARGET failed"
    say "bench: cargo build --release --target $MUSL_TARGET (vendored OpenSSL: a few minutes the first time)"
    cargo build --release -q --target "$MUSL_TARGET" --bin memgate 2>"${TMPDIR:-/tmp}/memgate-bench-static.log" ||
        say "bench: WARNING static build failed: see ${TMPDIR:-/tmp}/memgate-bench-static.log"
fi

# ---------------------------------------------------------------- temp dir, cleanup
T=$(mktemp -d /tmp/memgate-bench.XXXXXX)
PIDS=()
cleanup() {
    local p
    [ -z "${MOCK_PID:-}" ] || PIDS+=("$MOCK_PID")
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then say "bench: kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # port seconds
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# utime+stime (clock ticks) summed over the given PIDs; the comm field may hold spaces, so cut at ')'.
cpu_ticks() {
    local p line f total=0
    for p in "$@"; do
        read -r line <"/proc/$p/stat" || continue
        read -ra f <<<"${line##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
rss_kb() {
    local p total=0 v
    for p in "$@"; do
        v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")
        total=$((total + v))
    done
    echo "$total"
}
# Busy jiffies of the whole machine (user nice system irq softirq steal), to spot foreign load.
sys_busy() {
    local _c u n s i w q sq st
    read -r _c u n s i w q sq st _ </proc/stat
    echo $((u + n + s + q + sq + st))
}
# CPU ticks used so far by this shell's reaped children (wrk, python), from the `times` builtin.
# `times` must run in this shell, not in a $(...) subshell (whose children are not ours), so
# child_ticks_save writes the figure to a file and child_ticks reads it back.
child_ticks_save() { times >"$T/times"; }
child_ticks() {
    awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]); t += (a[1] * 60 + a[2]) * hz }
        printf "%d\n", t + 0.5 }' "$T/times"
}
RESULTS=$T/results.jsonl
: >"$RESULTS"
emit() { printf '%s\n' "$*" >>"$RESULTS"; }

# ---------------------------------------------------------------- is the machine quiet?
busy_cores() { # over 1 s
    local a b
    a=$(sys_busy); sleep 1; b=$(sys_busy)
    echo $(((b - a) * 100 / $(getconf CLK_TCK)))
}
WAIT_IDLE=${BENCH_WAIT_IDLE:-0}
for ((w = 0; ; w++)); do
    busy=$(busy_cores)
    [ "$busy" -le 20 ] && break
    if [ "$w" -ge "$WAIT_IDLE" ]; then
        say "bench: WARNING machine busy before start ($busy% of one core in use by other processes)"
        break
    fi
    [ "$w" = 0 ] && say "bench: machine busy ($busy% of a core); waiting up to ${WAIT_IDLE}s for it to quiet down"
done

# ---------------------------------------------------------------- processes under test
# The mock keeps every request it answers in memory (~1.8 KB each) and never frees them; freeing
# a big log (DELETE /__mock/requests) leaves glibc's malloc slow for seconds (p99 of whatever runs
# next went from ~1 ms to 30-80 ms). So the mock is restarted, on the same port, before each
# measured run instead: every run meets the same fresh upstream.
MOCK_PORT=$(free_port)
MOCK_PID=
restart_mock() {
    if [ -n "$MOCK_PID" ]; then
        kill "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
    fi
    taskset -c "$LOAD_CORE" "$MOCK" --dir "$BENCH_DIR/fixtures" --listen "127.0.0.1:$MOCK_PORT" \
        >"$T/mock.out" 2>"$T/mock.err" &
    MOCK_PID=$!
    wait_port "$MOCK_PORT" 10 || die "memgate-mock did not start: $(cat "$T/mock.err")"
}
restart_mock

# start_memgate NAME BINARY: a memgate on core $GW_CORE with its own port, config and data dir.
declare -A ADDR=([direct]="127.0.0.1:$MOCK_PORT")
declare -A GW_PID=()
start_memgate() {
    local name=$1 bin=$2 port pid
    port=$(free_port)
    mkdir -p "$T/$name-data"
    cat >"$T/$name.toml" <<EOF
listen = "127.0.0.1:$port"
data_dir = "$T/$name-data"

[providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key = "sk-bench"
EOF
    RUST_LOG=warn taskset -c "$GW_CORE" "$bin" serve --config "$T/$name.toml" 2>"$T/$name.err" &
    pid=$!
    PIDS+=("$pid")
    wait_port "$port" 10 || die "$name did not start: $(cat "$T/$name.err")"
    ADDR[$name]="127.0.0.1:$port"
    GW_PID[$name]=$pid
}
start_memgate memgate "$MEMGATE"
MG_PID=${GW_PID[memgate]}
# The static (musl) build, measured alongside for information: it is what gets deployed.
GATEWAYS="memgate nginx"
if [ -x "$STATIC" ]; then
    start_memgate static "$STATIC"
    GATEWAYS="memgate nginx static"
fi

NG_PORT=$(free_port)
mkdir -p "$T/nginx"
cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $T/nginx/client_body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NG_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
taskset -c "$GW_CORE" "$NGINX" -p "$T/nginx" -e "$T/nginx/error.log" -c "$T/nginx/nginx.conf" 2>"$T/nginx/stderr" &
NG_PID=$!
PIDS+=("$NG_PID")
wait_port "$NG_PORT" 10 || die "nginx did not start: $(cat "$T/nginx/stderr" "$T/nginx/error.log" 2>/dev/null)"
nginx_pids() { echo "$NG_PID" $(pgrep -P "$NG_PID" || true); }
# The PIDs must be the real processes (not a wrapper) for /proc readings to mean anything.
pairs=("$MOCK_PID:$MOCK" "$MG_PID:$MEMGATE" "$NG_PID:$NGINX")
[ -z "${GW_PID[static]:-}" ] || pairs+=("${GW_PID[static]}:$STATIC")
for pair in "${pairs[@]}"; do
    exe=$(readlink "/proc/${pair%%:*}/exe" || true)
    [ "$exe" = "$(readlink -f "${pair#*:}")" ] || die "PID ${pair%%:*} is $exe, not ${pair#*:}"
done
[ "$(pgrep -P "$NG_PID" | wc -l)" = 1 ] || die "expected one nginx worker"

ADDR[nginx]="127.0.0.1:$NG_PORT"
gw_pids() {
    case $1 in
    nginx) nginx_pids ;;
    direct) echo "$MOCK_PID" ;;
    *) echo "${GW_PID[$1]}" ;;
    esac
}

say "bench: sanity checks"
for t in direct $GATEWAYS; do
    load python3 "$BENCH_DIR/streams.py" check "${ADDR[$t]}" >>"$T/checks.txt" || die "$t: plain request failed: $(tail -1 "$T/checks.txt")"
    load python3 "$BENCH_DIR/streams.py" check "${ADDR[$t]}" --stream >>"$T/checks.txt" || die "$t: stream request failed: $(tail -1 "$T/checks.txt")"
done
grep -q '"model": *"mock/gpt-4o-mini' <(load python3 "$BENCH_DIR/streams.py" check "${ADDR[memgate]}") ||
    say "bench: note: memgate's answer does not name model mock/gpt-4o-mini"

# ---------------------------------------------------------------- memory: idle, 256 open streams
sleep 1
for t in $GATEWAYS; do
    emit "{\"kind\":\"rss\",\"target\":\"$t\",\"phase\":\"idle_fresh\",\"rss_kb\":$(rss_kb $(gw_pids "$t"))}"
done
for t in $GATEWAYS; do
    say "bench: holding $STREAMS streams open through $t"
    pids=$(gw_pids "$t" | tr ' ' ',')
    if out=$(load python3 "$BENCH_DIR/streams.py" hold --n "$STREAMS" --port "${ADDR[$t]##*:}" --pids "$pids"); then :; else
        say "bench: WARNING not all $STREAMS streams through $t got their first event: $out"
    fi
    emit "{\"kind\":\"hold\",\"target\":\"$t\",\"result\":${out:-null}}"
    sleep 2
    emit "{\"kind\":\"rss\",\"target\":\"$t\",\"phase\":\"after_streams_closed\",\"rss_kb\":$(rss_kb $(gw_pids "$t"))}"
done

# ---------------------------------------------------------------- wrk runs
# wrk_once TARGET CONNS SECONDS: restarts the mock, warms the path for 1 s (the gateway's pooled
# upstream connections died with the old mock), then one measured wrk run; sets W_LINE (wrk's
# summary), W_CPU (gateway ticks) and W_FOREIGN (machine busy ticks not spent by the gateway,
# the mock or wrk: other builds, etc.).
wrk_once() {
    local t=$1 c=$2 d=$3 pids ours before after sys0 sys1 kid0 kid1
    restart_mock
    load wrk -t1 -c"$c" -d1s -s "$BENCH_DIR/post.lua" "http://${ADDR[$t]}" >/dev/null 2>&1 || true
    pids=$(gw_pids "$t")
    ours=$(echo "$pids $MOCK_PID" | tr ' ' '\n' | sort -u)
    child_ticks_save
    kid0=$(child_ticks)
    sys0=$(sys_busy)
    before=$(cpu_ticks $pids)
    local ours0
    ours0=$(cpu_ticks $ours)
    load wrk -t1 -c"$c" -d"${d}s" --latency -s "$BENCH_DIR/post.lua" "http://${ADDR[$t]}" >"$T/wrk.out" 2>&1 || true
    after=$(cpu_ticks $pids)
    local ours1
    ours1=$(cpu_ticks $ours)
    sys1=$(sys_busy)
    child_ticks_save
    kid1=$(child_ticks)
    W_LINE=$(sed -n 's/^WRKJSON //p' "$T/wrk.out")
    [ -n "$W_LINE" ] || die "wrk against $t printed no summary: $(cat "$T/wrk.out")"
    W_CPU=$((after - before))
    W_FOREIGN=$((sys1 - sys0 - (ours1 - ours0) - (kid1 - kid0)))
}
# run_wrk TARGET CONNS SECONDS REP PHASE: records latency, requests and the gateway's CPU ticks.
# A run during which other processes used more than 15 % of a core is redone (at most twice,
# within a budget of BENCH_RETRIES for the whole benchmark); the least disturbed attempt is kept.
RETRY_BUDGET=${BENCH_RETRIES:-12}
run_wrk() {
    local t=$1 c=$2 d=$3 rep=$4 phase=$5 limit best_line best_cpu best_foreign attempt
    limit=$((d * $(getconf CLK_TCK) * 15 / 100))
    for attempt in 0 1 2; do
        wrk_once "$t" "$c" "$d"
        if [ "$attempt" = 0 ] || [ "$W_FOREIGN" -lt "$best_foreign" ]; then
            best_line=$W_LINE best_cpu=$W_CPU best_foreign=$W_FOREIGN
        fi
        [ "$best_foreign" -le "$limit" ] && break
        [ "$RETRY_BUDGET" -gt 0 ] || break
        RETRY_BUDGET=$((RETRY_BUDGET - 1))
        say "bench:   $t c=$c disturbed (foreign load $((W_FOREIGN * 100 / d / $(getconf CLK_TCK)))% of a core): retrying"
        sleep 1
    done
    emit "{\"kind\":\"wrk\",\"phase\":\"$phase\",\"target\":\"$t\",\"conns\":$c,\"rep\":$rep,\"attempts\":$((attempt + 1)),\"cpu_ticks\":$best_cpu,\"foreign_ticks\":$best_foreign,\"wrk\":$best_line}"
}

for c in 1 32; do
    for ((rep = 1; rep <= REPS; rep++)); do
        say "bench: latency c=$c rep $rep/$REPS (${DUR}s per target)"
        for t in direct memgate nginx; do run_wrk "$t" "$c" "$DUR" "$rep" latency; done
    done
done
for ((rep = 1; rep <= REPS; rep++)); do
    say "bench: throughput c=64 rep $rep/$REPS (${TPUT_DUR}s per target)"
    for t in direct $GATEWAYS; do run_wrk "$t" 64 "$TPUT_DUR" "$rep" throughput; done
done

# ---------------------------------------------------------------- streaming time to first byte
say "bench: streaming TTFB ($TTFB_N requests per target)"
restart_mock
out=$(load python3 "$BENCH_DIR/streams.py" ttfb --n "$TTFB_N" direct="${ADDR[direct]}" memgate="${ADDR[memgate]}" nginx="${ADDR[nginx]}")
emit "{\"kind\":\"ttfb\",\"result\":$out}"
sleep 1
for t in $GATEWAYS; do
    emit "{\"kind\":\"rss\",\"target\":\"$t\",\"phase\":\"idle_after_load\",\"rss_kb\":$(rss_kb $(gw_pids "$t"))}"
done

# ---------------------------------------------------------------- static binary
if [ -f "$STATIC" ]; then
    desc=$(file -b "$STATIC")
    size=$(stat -c %s "$STATIC")
    if [[ $desc == *"not stripped"* ]]; then
        strip -o "$T/memgate.stripped" "$STATIC"
        stripped=$(stat -c %s "$T/memgate.stripped")
    else
        stripped=$size
    fi
    # Stale if any source file is newer than the binary (the bench does not rebuild it by default).
    stale=false
    [ -z "$(find "$ROOT/src" "$ROOT/Cargo.toml" "$ROOT/Cargo.lock" -newer "$STATIC" -print -quit 2>/dev/null)" ] || stale=true
    emit "$(python3 -c 'import json,sys; print(json.dumps({"kind":"binary","path":sys.argv[1],"size":int(sys.argv[2]),"stripped_size":int(sys.argv[3]),"file":sys.argv[4],"mtime":sys.argv[5],"stale":sys.argv[6]=="true"}))' \
        "${STATIC#"$ROOT"/}" "$size" "$stripped" "$desc" "$(date -r "$STATIC" '+%Y-%m-%d %H:%M')" "$stale")"
fi

# ---------------------------------------------------------------- report
{
    printf '{"kind":"env","cpu":"%s","ncpu":%s,"kernel":"%s","clk_tck":%s,' \
        "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" "$NCPU" "$(uname -r)" "$(getconf CLK_TCK)"
    printf '"nginx":"%s","wrk":"%s","memgate_rev":"%s","build":"%s",' \
        "$("$NGINX" -v 2>&1 | sed 's/.*version: //')" "$(wrk -v 2>&1 | head -n1 | awk '{print $2}')" \
        "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)" "$BUILD_NOTE"
    printf '"gw_core":%s,"load_core":%s,"dur":%s,"tput_dur":%s,"reps":%s,"streams":%s}\n' \
        "$GW_CORE" "$LOAD_CORE" "$DUR" "$TPUT_DUR" "$REPS" "$STREAMS"
} >>"$RESULTS"
cp "$RESULTS" "${TMPDIR:-/tmp}/memgate-bench-results.jsonl"
python3 "$BENCH_DIR/report.py" "$RESULTS"
say "bench: raw results in ${TMPDIR:-/tmp}/memgate-bench-results.jsonl"
