#!/usr/bin/env bash
# Messaging benchmarks (docs/benchmarks.md), against herald-api (release) on loopback:
#
# 1. webhook ingest: wrk posting signed Twilio WhatsApp webhooks (bench/wrk/twilio.lua, THREADS
#    threads, CONNECTIONS connections, DURATION), each request a new message from one of
#    CONTACTS contacts, to Herald on PostgreSQL (a fresh herald_bench_inbox database), to a
#    minimal Express server (bench/express-webhook: the twilio package's validateRequest and an
#    insert into its own table of the same PostgreSQL) and to Herald on SQLite (a temp file);
#    CONNECTIONS may list several counts ("64 8"), each a run of its own on the same server.
#    The requests are signed beforehand (crates/runtime/examples/inbox_bench.rs `sign`, with the
#    signing function Herald's check uses); one extra request is posted with curl first and must
#    be accepted. After each run the stored messages are counted: every 200 must be stored once
#    (at most the requests still in flight when wrk stopped may be stored beyond them).
# 2. inbox list: a fresh database per backend in LIST_BACKENDS with CONVERSATIONS conversations
#    and MESSAGES messages seeded straight into it (inbox_bench `seed`: multi-row inserts; then
#    VACUUM ANALYZE on PostgreSQL, as autovacuum would do before long), then
#    wrk GETting /api/v1/conversations?view=V (the first page, 50 items, and every view's count)
#    as one user, for each view, with each number of connections in LIST_CONNECTIONS.
#
#   scripts/bench-inbox.sh                                    # the full run
#   DURATION=5s CONVERSATIONS=10000 MESSAGES=100000 LIST_DURATION=3s scripts/bench-inbox.sh
#
# Before any load it waits (up to WAIT_SECS, polling every 20 s) until no other benchmark of this
# repository runs: two benchmarks on two cores measure each other. Prints one JSON line per run,
# then a table. Server CPU seconds are the server process's (utime + stime over the run);
# PostgreSQL's are the live postgres processes' over the run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DURATION="${DURATION:-20s}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-64}"   # one run per count listed
REQUESTS="${REQUESTS:-400000}"      # signed requests written per target: more than a run sends
CONTACTS="${CONTACTS:-5000}"
ROUNDS="${ROUNDS:-1}"
CONVERSATIONS="${CONVERSATIONS:-100000}"
MESSAGES="${MESSAGES:-1000000}"
LIST_DURATION="${LIST_DURATION:-10s}"
LIST_CONNECTIONS="${LIST_CONNECTIONS:-1 8}"
LIST_VIEWS="${LIST_VIEWS:-all unassigned mine others closed}"
LIST_BACKENDS="${LIST_BACKENDS-postgres sqlite}"   # empty: no list benchmark
WEBHOOK_TARGETS="${WEBHOOK_TARGETS-herald-postgres express-postgres herald-sqlite}"   # empty: none
WAIT_SECS="${WAIT_SECS:-1800}"
# Herald's libpq connections use TLS on loopback when the server offers it (libpq's default,
# sslmode=prefer, and Debian's cluster has ssl = on); node-postgres connects without it. The runs
# compare the same transport: Herald gets sslmode=$PG_SSLMODE (prefer measures it with TLS).
PG_SSLMODE="${PG_SSLMODE:-disable}"
TIMEOUT="${TIMEOUT:-10s}"   # wrk's per-request time limit (its default, 2 s, would hide slow answers)
OTHERS='bench-send.sh|send_bench|smtp-source|bench-mail.sh|sync_bench|mbsync'

TWILIO_SID="AC0123456789abcdef0123456789abcdef"
TWILIO_TOKEN="bench-twilio-auth-token-0123456789"

ensure_postgres
need wrk wrk
need python3 python3
need sqlite3 sqlite3
need curl curl
command -v node >/dev/null || die "node (>= 20) is needed for the Express server"

log "building herald-api, herald and the benchmark helper (release)"
cargo build --release -q -p herald-api -p herald-cli
cargo build --release -q -p herald-runtime --example inbox_bench
api=target/release/herald-api
cli=target/release/herald
helper=target/release/examples/inbox_bench
npm ci --prefix bench/express-webhook --silent --no-audit --no-fund >/dev/null

pg_url=$(bench_pg_url herald_bench_inbox)
herald_pg_url="$pg_url?sslmode=$PG_SSLMODE"
export PGOPTIONS="-c client_min_messages=warning"   # no NOTICE for DROP ... IF EXISTS
fresh_pg() { fresh_bench_db herald_bench_inbox; }

tmp=$(mktemp -d)
server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
cleanup() {
    stop_server
    drop_bench_db herald_bench_inbox
    rm -rf "$tmp"
}
trap cleanup EXIT
results="$tmp/results.jsonl"
: >"$results"

json() { python3 -c 'import json, sys; v = json.load(sys.stdin)
for k in sys.argv[1:]: v = v[k]
print(v)' "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ticks() { # utime + stime of the given processes, in clock ticks
    local total=0 pid t
    for pid in "$@"; do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
pg_ticks() { ticks $(pgrep -u postgres -d ' ' postgres || true); }
hz=$(getconf CLK_TCK)

wait_for_quiet() {
    local waited=0
    while pgrep -f "$OTHERS" >/dev/null; do
        [ "$waited" -ge "$WAIT_SECS" ] && die "other benchmarks still running after ${WAIT_SECS}s: $(pgrep -af "$OTHERS" | head -3)"
        log "another benchmark is running ($(pgrep -af "$OTHERS" | head -1 | cut -c1-80)); waiting"
        sleep 20
        waited=$((waited + 20))
    done
}

# ---- Herald ---------------------------------------------------------------------------------

export HERALD_SECRET_KEY; HERALD_SECRET_KEY=$("$cli" keygen)
export HERALD_BOOTSTRAP=false HERALD_EMBEDDED_WORKER=false HERALD_DATA_DIR="$tmp/data"

# Migrates DATABASE_URL and makes an account, USERS users (the first an admin) and a token for
# the first; sets $account, $users (comma-separated ids) and $token.
setup_account() {
    local db=$1 n=${2:-1} i id
    HERALD_DATABASE_URL="$db" "$cli" --json migrate >/dev/null
    account=$(HERALD_DATABASE_URL="$db" "$cli" --json account create --name "Bench" --plan automation | json id)
    users=
    for i in $(seq 1 "$n"); do
        id=$(HERALD_DATABASE_URL="$db" "$cli" --json user create --account "$account" \
            --email "agent$i@bench.example" --name "Agent $i" $([ "$i" = 1 ] && echo --admin) | json id)
        users="${users:+$users,}$id"
    done
    token=$(HERALD_DATABASE_URL="$db" "$cli" --json token create --user "${users%%,*}" | json token)
}

# Starts herald-api on DATABASE_URL; sets $server_pid and $url.
start_herald() {
    local db=$1 port
    port=$(free_port)
    url="http://127.0.0.1:$port"
    HERALD_DATABASE_URL="$db" HERALD_LISTEN="127.0.0.1:$port" HERALD_PUBLIC_URL="$url" \
        "$api" >"$tmp/api.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fs "$url/readyz" >/dev/null 2>&1 && return
        kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/api.log" >&2; die "herald-api exited"; }
        sleep 0.1
    done
    die "herald-api did not become ready"
}

# A Twilio WhatsApp channel made through the API; sets $channel and $webhook_url.
create_channel() {
    local answer
    answer=$(curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d "{\"kind\": \"twilio_whatsapp\", \"account_sid\": \"$TWILIO_SID\", \"auth_token\": \"$TWILIO_TOKEN\", \"sender\": \"+14155238886\"}" \
        "$url/api/v1/channels")
    channel=$(echo "$answer" | json id)
    webhook_url=$(echo "$answer" | json webhook_url)
}

# ---- webhook ingest ---------------------------------------------------------------------------

# Posts the signed check request: the signature must be accepted before any load.
check_signature() {
    local line=$1 status
    status=$(curl -s -o "$tmp/check.out" -w '%{http_code}' -H "X-Twilio-Signature: ${line%%$'\t'*}" \
        -H 'Content-Type: application/x-www-form-urlencoded' --data-binary "${line#*$'\t'}" "$webhook_url")
    [ "$status" = 200 ] || die "the signed check request was answered $status: $(cat "$tmp/check.out")"
}

# webhook_run NAME BACKEND COUNT_SQL ROUND TAG CONNECTIONS COUNT_COMMAND: signs requests for
# $webhook_url, checks one, loads, counts what was stored; appends a result line.
webhook_run() {
    local name=$1 backend=$2 count_sql=$3 round=$4 tag=$5 connections=$6
    shift 6
    "$helper" sign --url "$webhook_url" --auth-token "$TWILIO_TOKEN" --account-sid "$TWILIO_SID" \
        --requests "$REQUESTS" --contacts "$CONTACTS" --threads "$THREADS" --tag "$tag" \
        --out "$tmp/bodies" >/dev/null
    check_signature "$(cat "$tmp/bodies.check")"
    local before after server_before server_after pg_before pg_after out result
    before=$("$@" "$count_sql")
    wait_for_quiet
    server_before=$(ticks "$server_pid"); pg_before=$(pg_ticks)
    log "$name on $backend: wrk -t$THREADS -c$connections -d$DURATION"
    load=$(cut -d' ' -f1 /proc/loadavg)
    out=$(wrk -t"$THREADS" -c"$connections" -d"$DURATION" --timeout "$TIMEOUT" --latency -s bench/wrk/twilio.lua \
        "${webhook_url%%/webhooks/*}" -- "$tmp/bodies" "/${webhook_url#*://*/}")
    server_after=$(ticks "$server_pid"); pg_after=$(pg_ticks)
    sleep 2   # the requests in flight when wrk stopped
    after=$("$@" "$count_sql")
    echo "$out" | grep -v '^RESULT' >&2
    result=$(echo "$out" | sed -n 's/^RESULT //p')
    python3 - "$result" "$name" "$backend" "$round" "$((after - before))" \
        "$((server_after - server_before))" "$((pg_after - pg_before))" "$hz" "$connections" \
        "$load $(cut -d' ' -f1 /proc/loadavg)" >>"$results" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
name, backend, rnd, stored, server, pg, hz = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
r["connections"] = int(sys.argv[9])
r["loadavg_before_after"] = sys.argv[10]
ok = r["statuses"].get("200", 0)
in_flight = r["sent"] - r["requests"]
r.update(bench="webhook", system=name, backend=backend, round=rnd, ok_200=ok, stored=stored,
         in_flight_at_end=in_flight, server_cpu_s=round(server / hz, 2),
         postgres_cpu_s=round(pg / hz, 2) if backend == "postgres" else None,
         no_loss=ok <= stored <= ok + in_flight + r["socket_errors"]["timeout"])
print(json.dumps(r))
EOF
    tail -1 "$results"
    [ "$(tail -1 "$results" | json exhausted)" = 0 ] || log "WARNING: $name ran out of signed requests: raise REQUESTS"
    [ "$(tail -1 "$results" | json no_loss)" = True ] || log "WARNING: $name stored $((after - before)) messages for the 200s above"
}

pg_count() { psql "$pg_url" -Atqc "$1"; }
sqlite_count() { sqlite3 "$tmp/inbox.db" "$1"; }

tag=0   # each run's MessageSids carry a tag of their own
for round in $(seq 1 "$ROUNDS"); do
    for target in $WEBHOOK_TARGETS; do
        case "$target" in
        herald-postgres)
            fresh_pg
            setup_account "$herald_pg_url"
            start_herald "$herald_pg_url"
            create_channel
            for c in $CONNECTIONS; do
                tag=$((tag + 1))
                webhook_run "Herald" postgres "SELECT count(*) FROM messages" "$round" "$tag" "$c" pg_count
            done
            log "Herald on PostgreSQL: $(pg_count "SELECT count(*) FROM conversations") conversations"
            stop_server
            ;;
        express-postgres)
            psql "$HERALD_TEST_POSTGRES_URL" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'herald_bench_inbox'" | grep -q 1 || fresh_pg
            psql "$pg_url" -qc "DROP TABLE IF EXISTS express_messages"
            port=$(free_port)
            url="http://127.0.0.1:$port"
            webhook_url="$url/webhooks/twilio/1"
            NODE_ENV=production DATABASE_URL="$pg_url" TWILIO_AUTH_TOKEN="$TWILIO_TOKEN" \
                TWILIO_ACCOUNT_SID="$TWILIO_SID" PORT="$port" PUBLIC_URL="$url" \
                node bench/express-webhook/server.mjs >"$tmp/express.log" 2>&1 &
            server_pid=$!
            for _ in $(seq 1 100); do grep -q listening "$tmp/express.log" && break; sleep 0.1; done
            grep -q listening "$tmp/express.log" || { cat "$tmp/express.log" >&2; die "the Express server did not start"; }
            express="Express $(node -p 'require("./bench/express-webhook/node_modules/express/package.json").version') + twilio $(node -p 'require("./bench/express-webhook/node_modules/twilio/package.json").version')"
            for c in $CONNECTIONS; do
                tag=$((tag + 1))
                webhook_run "$express" postgres "SELECT count(*) FROM express_messages" "$round" "$tag" "$c" pg_count
            done
            stop_server
            ;;
        herald-sqlite)
            rm -f "$tmp"/inbox.db*
            setup_account "sqlite://$tmp/inbox.db"
            start_herald "sqlite://$tmp/inbox.db"
            create_channel
            for c in $CONNECTIONS; do
                tag=$((tag + 1))
                webhook_run "Herald" sqlite "SELECT count(*) FROM messages" "$round" "$tag" "$c" sqlite_count
            done
            log "Herald on SQLite: $(sqlite_count "SELECT count(*) FROM conversations") conversations"
            stop_server
            ;;
        *) die "unknown webhook target $target" ;;
        esac
        grep -iE 'busy|error' "$tmp/api.log" "$tmp/express.log" 2>/dev/null | sort | uniq -c | sort -rn | head -5 >&2 || true
    done
done
rm -f "$tmp"/bodies.*

# ---- inbox list -------------------------------------------------------------------------------

for backend in $LIST_BACKENDS; do
    case "$backend" in
    postgres) fresh_pg; db="$herald_pg_url" ;;
    sqlite) rm -f "$tmp"/inbox.db*; db="sqlite://$tmp/inbox.db" ;;
    *) die "unknown list backend $backend" ;;
    esac
    setup_account "$db" 5
    start_herald "$db"
    create_channel
    log "seeding $CONVERSATIONS conversations and $MESSAGES messages on $backend"
    "$helper" seed --database-url "$db" --account "$account" --channel "$channel" --users "$users" \
        --conversations "$CONVERSATIONS" --messages "$MESSAGES" | tee "$tmp/seed.json"
    # What autovacuum does to a settled database, done now rather than during the runs: the bulk
    # seed leaves the new rows unvacuumed and without statistics.
    if [ "$backend" = postgres ]; then
        log "VACUUM ANALYZE after the seed"
        psql "$pg_url" -qc "VACUUM ANALYZE"
    fi
    page=$(curl -fsS -H "Authorization: Bearer $token" "$url/api/v1/conversations?view=all")
    echo "$page" | python3 -c 'import json, sys; p = json.load(sys.stdin); print("counts:", p["counts"], "items:", len(p["items"]))' >&2
    counts=$(echo "$page" | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["counts"]))')
    for connections in $LIST_CONNECTIONS; do
        for view in $LIST_VIEWS; do
            wait_for_quiet
            threads=$((connections < THREADS ? connections : THREADS))
            server_before=$(ticks "$server_pid")
            load=$(cut -d' ' -f1 /proc/loadavg)
            out=$(wrk -t"$threads" -c"$connections" -d"$LIST_DURATION" --timeout "$TIMEOUT" --latency -s bench/wrk/list.lua \
                -H "Authorization: Bearer $token" "$url/api/v1/conversations?view=$view")
            server_after=$(ticks "$server_pid")
            result=$(echo "$out" | sed -n 's/^RESULT //p')
            python3 - "$result" "$backend" "$view" "$connections" "$counts" "$((server_after - server_before))" "$hz" \
                "$load $(cut -d' ' -f1 /proc/loadavg)" >>"$results" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
r.update(bench="list", system="Herald", backend=sys.argv[2], view=sys.argv[3],
         connections=int(sys.argv[4]), view_size=json.loads(sys.argv[5])[sys.argv[3]],
         server_cpu_s=round(int(sys.argv[6]) / int(sys.argv[7]), 2), loadavg_before_after=sys.argv[8])
print(json.dumps(r))
EOF
            tail -1 "$results"
        done
    done
    stop_server
done

# ---- summary ----------------------------------------------------------------------------------

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
hooks = [r for r in rows if r["bench"] == "webhook"]
if hooks:
    print("\nwebhook ingest (wrk, signed Twilio webhooks)")
    print("| system | backend | round | connections | requests | req/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | stored / 200s | server CPU s | PostgreSQL CPU s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in hooks:
        se = sum(r["socket_errors"].values())
        pg = "" if r["postgres_cpu_s"] is None else r["postgres_cpu_s"]
        print(f"| {r['system']} | {r['backend']} | {r['round']} | {r['connections']} | {r['requests']:,} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['non_2xx']} | {se} | {r['stored']:,} / {r['ok_200']:,} | {r['server_cpu_s']} | {pg} | {r['loadavg_before_after']} |")
    for rnd, c in sorted({(r["round"], r["connections"]) for r in hooks}):
        same = [r for r in hooks if r["round"] == rnd and r["connections"] == c]
        express = [r for r in same if r["system"].startswith("Express")]
        for r in same:
            if express and r["system"] == "Herald":
                print(f"round {rnd}, {c} connections: Herald on {r['backend']} / Express: {r['rps'] / express[0]['rps']:.2f}x")
lists = [r for r in rows if r["bench"] == "list"]
if lists:
    print("\ninbox list (GET /api/v1/conversations?view=V: first page of 50 and the five counts)")
    print("| backend | view | view size | connections | requests | req/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | socket errors | server CPU s | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in lists:
        se = sum(r["socket_errors"].values())
        print(f"| {r['backend']} | {r['view']} | {r['view_size']:,} | {r['connections']} | {r['requests']:,} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['non_2xx']} | {se} | {r['server_cpu_s']} | {r['loadavg_before_after']} |")
EOF
