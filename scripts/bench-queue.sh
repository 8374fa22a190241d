#!/usr/bin/env bash
# Queue benchmark (docs/benchmarks.md): Herald draining no-op jobs on PostgreSQL and SQLite, and
# enqueue-to-start latency; then graphile-worker draining the same number of jobs on the same
# PostgreSQL. Prints one JSON line per measurement.
#
#   scripts/bench-queue.sh            # JOBS=100000
#   JOBS=20000 scripts/bench-queue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

JOBS="${JOBS:-100000}"
LAT_JOBS="${LAT_JOBS:-2000}"
LAT_RATE="${LAT_RATE:-500}"
ensure_postgres
base="${HERALD_TEST_POSTGRES_URL%/*}"

log "building the benchmark (release)"
cargo build --release -q -p herald-scheduler --example queue_bench
bench=target/release/examples/queue_bench

fresh_pg() { fresh_bench_db herald_bench; }

log "herald on PostgreSQL, default settings (2 worker loops, batch 16)"
fresh_pg
"$bench" --database-url "$base/herald_bench" --jobs "$JOBS" --latency-jobs "$LAT_JOBS" --rate "$LAT_RATE"
log "herald on PostgreSQL, latency with the in-process wake-up (embedded worker)"
fresh_pg
"$bench" --database-url "$base/herald_bench" --jobs 1000 --latency-jobs "$LAT_JOBS" --rate "$LAT_RATE" --wake
log "herald on PostgreSQL, 4 worker loops, batch 64"
fresh_pg
"$bench" --database-url "$base/herald_bench" --jobs "$JOBS" --workers 4 --batch 64 --latency-jobs 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log "herald on SQLite, default settings"
"$bench" --database-url "sqlite://$tmp/bench.db" --jobs "$JOBS" --latency-jobs "$LAT_JOBS" --rate "$LAT_RATE"
log "herald on SQLite, latency with the in-process wake-up (embedded worker)"
rm -f "$tmp"/bench.db*
"$bench" --database-url "sqlite://$tmp/bench.db" --jobs 1000 --latency-jobs "$LAT_JOBS" --rate "$LAT_RATE" --wake
drop_bench_db herald_bench

log "graphile-worker on the same PostgreSQL (unbatched, concurrency 10)"
npm ci --prefix bench/graphile --silent --no-audit --no-fund >/dev/null
DATABASE_URL="$base/herald_bench_graphile" JOBS="$JOBS" LAT_JOBS="$LAT_JOBS" LAT_RATE="$LAT_RATE" \
    node bench/graphile/drain.mjs
