#!/usr/bin/env bash
# Page benchmark: server time and size of every page on a store of 10 000 devices,
# 100 000 orders and a year of data, against the API's `GET /api/v1/orders?limit=100`
# and `/health` measured on the same server in the same run (docs/benchmarks.md,
# "Pages on 10 000 devices and 100 000 orders").
#
#   bench/pages.sh [--no-build] [DIR]
#
# DIR (default /var/tmp/fleetpulse-pages) holds the store; an existing DIR/fleetpulse.db
# is reused as it is (delete it to rebuild). The store is built by
# `store/examples/overview_load.rs` (devices, orders, alarm episodes, dead letters), then
# `bench/pages-data.sql` adds rollups, readings, exposure, latest states, predictions,
# failure events and order outcomes (what it adds, and what it leaves out, is said there).
# The release binary is started on it with the analytics worker off (its prediction runs
# would replace the predictions and take a core), a session is opened through the sign-in
# form with an admin token, and every page is requested WARMUP times, then RUNS times,
# one request at a time with a new connection each (curl). The time is curl's
# `time_starttransfer`: connect on loopback, the request, the server's work and its first
# byte (the pages are written in one piece). The size is the body's, uncompressed (the
# server does not compress).
#
# Environment: RUNS (20), WARMUP (3), SAMPLE (50 devices with a year of rollups), PORT
# (18480), CARGO_TARGET_DIR (target), FLEETPULSE_BIN (the release binary there).
set -euo pipefail
cd "$(dirname "$0")/.."
build=1
if [[ "${1:-}" == "--no-build" ]]; then
    build=0
    shift
fi
dir="${1:-/var/tmp/fleetpulse-pages}"
runs="${RUNS:-20}"
warmup="${WARMUP:-3}"
sample="${SAMPLE:-50}"
port="${PORT:-18480}"
target="${CARGO_TARGET_DIR:-target}"
bin="${FLEETPULSE_BIN:-$target/release/fleetpulse}"
base="http://127.0.0.1:$port"

if ((build)); then
    cargo build --release -p fleetpulse
    cargo build --release -p fleetpulse-store --example overview_load
fi
command -v sqlite3 >/dev/null || { echo "pages.sh: needs the sqlite3 command-line shell" >&2; exit 1; }

mkdir -p "$dir"
db="$dir/fleetpulse.db"
if [[ ! -f "$db" ]]; then
    echo "building the store in $dir"
    "$target/release/examples/overview_load" 10000 100000 10 "$db" | grep -v '^{'
    now_ms=$(( $(date +%s) / 3600 * 3600 * 1000 ))
    t0=$(date +%s)
    sqlite3 "$db" ".parameter set @now $now_ms" ".parameter set @sample $sample" ".read bench/pages-data.sql" >/dev/null
    echo "pages-data.sql: $(( $(date +%s) - t0 )) s"
fi
echo "store: $(du -m "$db" | cut -f1) MB; $(sqlite3 "$db" "SELECT (SELECT count(*) FROM devices) || ' devices, ' ||
    (SELECT count(*) FROM orders) || ' orders, ' || (SELECT count(*) FROM rollups) || ' rollups, ' ||
    (SELECT count(*) FROM readings) || ' readings, ' || (SELECT count(*) FROM exposure_months) || ' exposure months, ' ||
    (SELECT count(*) FROM predictions) || ' predictions, ' || (SELECT count(*) FROM failure_events) || ' failure events, ' ||
    (SELECT count(*) FROM alarm_episodes) || ' alarm episodes, ' || (SELECT count(*) FROM dead_letters) || ' dead letters'")"

# the device with a year of rollups, and an active order with a bundled task
serial=$(sqlite3 "$db" "SELECT serial FROM rollups WHERE field = 'filter_life_pct' ORDER BY serial LIMIT 1")
order=$(sqlite3 "$db" "SELECT o.id FROM orders o JOIN order_tasks t ON t.order_id = o.id ORDER BY o.id LIMIT 1")

token=$("$bin" token create --role admin --name pages-bench --data "$dir")
log="$dir/serve.log"
FLEETPULSE_ANALYTICS__ENABLED=false "$bin" serve --data "$dir" --http "127.0.0.1:$port" \
    --mqtt-listen 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    curl -sf "$base/health" >/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "serve stopped:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 0.2
done

# a session, as a browser gets one: the form's nonce with its cookie, then the token
jar="$dir/cookies.txt"
rm -f "$jar"
nonce=$(curl -sf -c "$jar" "$base/sign-in" | grep -o 'name="nonce" value="[0-9a-f]*"' | cut -d'"' -f4)
curl -sf -o /dev/null -b "$jar" -c "$jar" --data-urlencode "token=$token" --data-urlencode "nonce=$nonce" \
    --data-urlencode "next=/" "$base/sign-in"
grep -q fp_session "$jar" || { echo "pages.sh: sign-in gave no session" >&2; exit 1; }

# measure NAME PATH (page: the session cookie) or NAME PATH bearer (API: the token)
declare -a rows
ref_p50=""
measure() {
    local name=$1 path=$2 auth=(-b "$jar")
    [[ "${3:-}" == bearer ]] && auth=(-H "Authorization: Bearer $token")
    local out
    for _ in $(seq 1 "$warmup"); do curl -s -o /dev/null "${auth[@]}" "$base$path"; done
    out=$(for _ in $(seq 1 "$runs"); do
        curl -s -o /dev/null "${auth[@]}" -w '%{http_code} %{time_starttransfer} %{size_download}\n' "$base$path"
    done)
    summarise "$name" "$path" "$out"
}

# summarise NAME PATH OUT: a table row from curl's "code time size" lines
summarise() {
    local name=$1 path=$2 out=$3 code
    out=$(grep . <<<"$out")
    code=$(awk '$1 != 200 { print $1; exit }' <<<"$out")
    [[ -z "$code" ]] || { echo "pages.sh: $path answered $code" >&2; exit 1; }
    local p50 max size
    p50=$(awk '{ print $2 * 1000 }' <<<"$out" | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    max=$(awk '{ print $2 * 1000 }' <<<"$out" | sort -g | tail -1 | awk '{ printf "%.1f", $1 }')
    size=$(awk '{ s = $3 } END { printf "%.1f", s / 1024 }' <<<"$out")
    [[ -n "$ref_p50" ]] || ref_p50=$p50
    rows+=("$(printf '| %s | `%s` | %s | %s | %s | %s |' "$name" "$path" "$p50" "$max" "$size" \
        "$(awk -v a="$p50" -v b="$ref_p50" 'BEGIN { printf "%.1f", a / b }')")")
}

# the quality page right after ingest marked every device's current month dirty (as a
# live fleet reporting every few minutes leaves it between two 15-minute passes): the
# read folds the 10 000 months first. DIRTY_RUNS requests, each after marking them again.
measure_dirty() {
    local name=$1 path=$2 out=""
    for _ in $(seq 1 "${DIRTY_RUNS:-5}"); do
        sqlite3 "$db" ".timeout 10000" "INSERT OR IGNORE INTO exposure_dirty (month, serial)
            SELECT CAST(strftime('%s', 'now', 'start of month') AS INTEGER) * 1000, serial FROM devices" >/dev/null
        out+=$(curl -s -o /dev/null -b "$jar" -w '%{http_code} %{time_starttransfer} %{size_download}' "$base$path")$'\n'
    done
    summarise "$name" "$path" "$out"
}

measure "reference: API orders" "/api/v1/orders?limit=100" bearer
measure "reference: health" "/health"
measure "fleet" "/"
measure "device, 365 d (rollups)" "/devices/$serial?range=365d"
measure "device, 7 d (readings)" "/devices/$serial?range=7d"
measure "planner" "/planner"
measure "quality" "/quality"
measure "quality by model" "/quality?group_by=model"
measure "quality to this hour" "/quality?to=$(date -u +%Y-%m-%dT%H:00:00Z)"
measure_dirty "quality after ingest" "/quality"
measure "dispatch" "/dispatch"
measure "order" "/dispatch/orders/$order"
measure "operations" "/operations"

echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $("$bin" --version), $(nproc) cores; $runs requests after $warmup, one at a time"
echo
echo "| page | path | p50 ms | max ms | size KB | p50 / API orders p50 |"
echo "|---|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
