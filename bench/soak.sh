#!/usr/bin/env bash
# memgate soak: mixed load with faults for a bounded time, then checks that memory kept every
# acknowledged exchange and that memgate's RSS and open files stayed flat. See bench/README.md.
#
#   bash bench/soak.sh                  # 3 minutes of load (plus the release build)
#   SOAK_SECONDS=600 bash bench/soak.sh # longer
#
# Knobs: SOAK_SECONDS (180), SOAK_WORKERS (12 client threads), SOAK_THREADS (50 memory threads),
# SOAK_RSS_GROWTH_MIB (24: allowed RSS growth after warm-up), SOAK_KEEP=1 (keep the temp dir),
# SOAK_MEMGATE (a memgate binary to soak instead, e.g. the static musl build).
# Loopback only; every process started here is stopped on exit, by PID.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
say() { printf '%s\n' "$*" >&2; }

command -v python3 >/dev/null || { say "soak: python3 is required"; exit 1; }
say "soak: cargo build --release --bins"
(cd "$ROOT" && cargo build --release --bins --quiet)
BIN="$ROOT/target/release"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/soak-memgate.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${SOAK_KEEP:-0}" = 1 ]; then say "soak: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# A mock prints its URL as its first line; wait for it. Sets URL (not a subshell: PIDS must grow).
start_mock() {
    local name=$1 dir=$2
    "$BIN/memgate-mock" --dir "$ROOT/$dir" >"$TMP/$name.url" 2>"$TMP/$name.log" &
    PIDS+=($!)
    for _ in $(seq 100); do
        URL=$(head -1 "$TMP/$name.url")
        [ -n "$URL" ] && return
        sleep 0.05
    done
    say "soak: $name did not start"; exit 1
}
start_mock openai fixtures/openai; OPENAI_URL=$URL
start_mock memory fixtures/memory; MEMORY_URL=$URL

cat >"$TMP/memgate.toml" <<EOF
listen = "127.0.0.1:0"
data_dir = "$TMP/data"
default_provider = "openai"

# Low thresholds: the observer and reflector run all along (against fixtures/memory), so
# threads' contexts stay bounded as they would in service.
[memory]
observer_model = "mem/gpt-4o-mini"
message_tokens = 400
observation_tokens = 300

[providers.openai]
kind = "openai"
base_url = "$OPENAI_URL/v1"
api_key = "sk-soak"

[providers.mem]
kind = "openai"
base_url = "$MEMORY_URL/v1"
api_key = "sk-soak"
EOF
# warn: no access line per request (the log would grow with the load); the start line stays.
RUST_LOG=warn,memgate::serve=info "${SOAK_MEMGATE:-$BIN/memgate}" serve --config "$TMP/memgate.toml" 2>"$TMP/memgate.log" &
GW_PID=$!
PIDS+=("$GW_PID")
GW_ADDR=
for _ in $(seq 100); do
    GW_ADDR=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$TMP/memgate.log" | head -1)
    [ -n "$GW_ADDR" ] && break
    sleep 0.05
done
[ -n "$GW_ADDR" ] || { say "soak: memgate did not start"; cat "$TMP/memgate.log" >&2; exit 1; }
say "soak: memgate pid $GW_PID on $GW_ADDR; mocks $OPENAI_URL $MEMORY_URL; ${SOAK_SECONDS:-180} s of load"

status=0
python3 "$BENCH_DIR/soak.py" --gateway "$GW_ADDR" --pid "$GW_PID" --log "$TMP/memgate.log" --data "$TMP/data" || status=$?
exit "$status"
