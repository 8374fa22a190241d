#!/usr/bin/env bash
# Sending benchmark (docs/benchmarks.md), against one Postfix smtp-sink on loopback:
#
# 1. throughput, for each concurrency in CONCURRENCY (default "1 20"): Postfix's smtp-source
#    sending MESSAGES messages over that many parallel sessions, then Herald
#    (crates/runtime/examples/send_bench.rs) composing MESSAGES emails (not timed) and sending them
#    through its job runner with at most that many SMTP sessions open (mail.smtp_sessions_per_server;
#    the runner's default batches prepare and record the other sends meanwhile), on PostgreSQL (a
#    fresh herald_bench_send database) and on SQLite (a temp file). Every message has a
#    MESSAGE_BYTES body; smtp-source opens one SMTP session per message (without -d it
#    disconnects after each message), Herald keeps its sessions for up to 30 messages
#    (crates/mailbox/src/smtp_pool.rs; the sink's session count shows it). Left different: smtp-source says HELO and waits for QUIT's
#    221, Herald says EHLO and records the send without waiting for QUIT's answer; Herald's
#    message is a full MIME message (about 480 bytes of headers, smtp-source's about 100). A
#    last smtp-source run with -d (sessions kept open) is a reference for connection reuse;
# 2. scheduled-send lateness: LATE_EMAILS emails all due at the same moment, the runner (default
#    [queue] and [mail] settings: 3 SMTP sessions) started before it; p50/p90/p99/max of sent_at − send_at, on PostgreSQL
#    and on SQLite.
#
#   scripts/bench-send.sh                               # MESSAGES=5000 LATE_EMAILS=10000
#   MESSAGES=500 LATE_EMAILS=500 scripts/bench-send.sh  # a quick run
#   SEND_BENCH=/path/to/send_bench scripts/bench-send.sh  # a binary built from another tree
#
# Prints one JSON line per run, then a table. The sink runs without a dump (-d), so it is not the
# bottleneck; its counters (-c) give the sessions and messages each contender delivered. CPU time
# is the contender's process's (Herald's over the timed window only), the sink's over the whole
# run, and PostgreSQL's over Herald's timed window (the example reads /proc: the server's live
# processes and the backends it reaped).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

MESSAGES="${MESSAGES:-5000}"
LATE_EMAILS="${LATE_EMAILS:-10000}"
MESSAGE_BYTES="${MESSAGE_BYTES:-4096}"
CONCURRENCY="${CONCURRENCY:-1 20}"

ensure_postgres
need python3 python3
need /usr/bin/time time
# Installs Postfix (smtp-sink and smtp-source come with it) when absent; the sink itself is ours.
eval "$(scripts/mail-servers.sh start)"
sink_bin="$HERALD_TEST_SMTP_SINK"
source_bin="$(dirname "$sink_bin")/smtp-source"
[ -x "$source_bin" ] || source_bin="$(command -v smtp-source)" || die "smtp-source not found"

# SEND_BENCH: a send_bench binary built elsewhere (a patched tree, to compare), used as it is.
bench="${SEND_BENCH:-}"
if [ -z "$bench" ]; then
    log "building the benchmark (release)"
    cargo build --release -q -p herald-runtime --example send_bench
    bench=target/release/examples/send_bench
fi

pg_url=$(bench_pg_url herald_bench_send)
fresh_pg() { fresh_bench_db herald_bench_send; }

tmp=$(mktemp -d)
sink_pid=
cleanup() {
    [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
    drop_bench_db herald_bench_send
    rm -rf "$tmp"
}
trap cleanup EXIT
results="$tmp/results.jsonl"
: >"$results"

# ---- the sink ---------------------------------------------------------------------------------

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sink_user=()
[ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)   # as root smtp-sink wants a user to run as
# -a: no AUTH offered, so Herald sends without it, as smtp-source does.
"$sink_bin" "${sink_user[@]}" -a -c "127.0.0.1:$port" 256 >"$tmp/sink.out" 2>&1 &
sink_pid=$!
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
log "smtp-sink on 127.0.0.1:$port (pid $sink_pid)"

# "sessions messages" the sink has seen so far (its -c counters, one update per event).
sink_counts() {
    tr '\r' '\n' <"$tmp/sink.out" | grep '^sess=' | tail -1 |
        sed -E 's/sess=([0-9]+) quit=[0-9]+ mesg=([0-9]+)/\1 \2/' || true
}

# User + system CPU seconds of a process (and, with "children", of its reaped children).
cpu_of() {
    awk -v kids="${2:-}" '{ sub(/^.*\) /, ""); t = $12 + $13; if (kids != "") t += $14 + $15; print t / 100 }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}
# Runs "$@" and appends its JSON line to the results with the sink's share.
measure() {
    local contender=$1 backend=$2 concurrency=$3
    shift 3
    local before_sink before_counts after_counts line
    before_sink=$(cpu_of "$sink_pid")
    before_counts=$(sink_counts)
    if [ "${contender%% *}" = smtp-source ]; then
        local t0 t1 cpu
        t0=$(date +%s.%N)
        cpu=$( { /usr/bin/time -f '%U %S' "$@" >/dev/null; } 2>&1 | tail -1)
        t1=$(date +%s.%N)
        line=$(python3 -c "
import json, sys
t0, t1, m = $t0, $t1, $MESSAGES
u, s = map(float, '$cpu'.split())
print(json.dumps({'seconds': round(t1 - t0, 3), 'msgs_per_sec': round(m / (t1 - t0)),
                  'cpu_seconds': round(u + s, 2), 'emails': m, 'mode': 'throughput',
                  'message_bytes': $MESSAGE_BYTES}))")
    else
        line=$("$@")
    fi
    sleep 0.3   # the sink counts a session when it ends; Herald does not wait for QUIT's reply
    after_counts=$(sink_counts)
    python3 - "$line" "$contender" "$backend" "$concurrency" "${before_counts:-0 0}" "${after_counts:-0 0}" \
        "$before_sink" "$(cpu_of "$sink_pid")" <<'EOF' | tee -a "$results"
import json, sys
line, contender, backend, concurrency, before, after, s0, s1 = sys.argv[1:]
r = json.loads(line)
b, a = [list(map(int, x.split())) for x in (before, after)]
r.update(contender=contender, backend=backend, concurrency=int(concurrency),
         sink_sessions=a[0] - b[0], sink_messages=a[1] - b[1],
         sink_cpu_seconds=round(float(s1) - float(s0), 2))
print(json.dumps(r))
EOF
}

# ---- 1. throughput ----------------------------------------------------------------------------

for c in $CONCURRENCY; do
    log "smtp-source: $MESSAGES messages, $c parallel sessions, one message per session"
    measure smtp-source - "$c" "$source_bin" -s "$c" -m "$MESSAGES" -l "$MESSAGE_BYTES" \
        -f owner@bench.example -t bob@bench.example "127.0.0.1:$port"

    log "herald on PostgreSQL: $MESSAGES emails, at most $c SMTP sessions"
    fresh_pg
    measure herald postgres "$c" "$bench" --database-url "$pg_url" --sink-port "$port" \
        --emails "$MESSAGES" --concurrency "$c" --message-bytes "$MESSAGE_BYTES"

    log "herald on SQLite: $MESSAGES emails, at most $c SMTP sessions"
    rm -f "$tmp"/send.db*
    measure herald sqlite "$c" "$bench" --database-url "sqlite://$tmp/send.db" --sink-port "$port" \
        --emails "$MESSAGES" --concurrency "$c" --message-bytes "$MESSAGE_BYTES"
done

# For reference, not a contender: smtp-source keeping its sessions open (-d), every message of a
# session over one connection, without Herald's 30-message cap.
last=${CONCURRENCY##* }
log "smtp-source -d (reference): $MESSAGES messages over $last sessions kept open"
measure "smtp-source -d" - "$last" "$source_bin" -d -s "$last" -m "$MESSAGES" -l "$MESSAGE_BYTES" \
    -f owner@bench.example -t bob@bench.example "127.0.0.1:$port"

# ---- 2. scheduled lateness --------------------------------------------------------------------

log "herald on PostgreSQL: $LATE_EMAILS emails due at the same moment, default [queue] settings"
fresh_pg
measure herald postgres 0 "$bench" --database-url "$pg_url" --sink-port "$port" \
    --emails "$LATE_EMAILS" --scheduled --message-bytes "$MESSAGE_BYTES"

log "herald on SQLite: $LATE_EMAILS emails due at the same moment, default [queue] settings"
rm -f "$tmp"/send.db*
measure herald sqlite 0 "$bench" --database-url "sqlite://$tmp/send.db" --sink-port "$port" \
    --emails "$LATE_EMAILS" --scheduled --message-bytes "$MESSAGE_BYTES"

# ---- summary ----------------------------------------------------------------------------------

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("Throughput (sessions: SMTP sessions the sink counted):")
print(f"{'contender':<15} {'backend':<9} {'conc':>4} {'msgs':>6} {'seconds':>8} {'msgs/s':>7} "
      f"{'vs source':>9} {'sessions':>8} {'cpu ms/msg':>10} {'sink cpu s':>10} {'pg ms/msg':>9}")
source = {}
for r in rows:
    if r["mode"] != "throughput":
        continue
    c = r["concurrency"]
    if r["contender"] == "smtp-source":  # not the -d reference
        source[c] = r["msgs_per_sec"]
    ratio = "%.3f" % (r["msgs_per_sec"] / source[c]) if source.get(c) else ""
    cpu = "%.2f" % (1000 * r["cpu_seconds"] / r["emails"])
    pg = "" if r.get("pg_cpu_ms_per_msg") is None else "%.2f" % r["pg_cpu_ms_per_msg"]
    print(f"{r['contender']:<15} {r['backend']:<9} {c:>4} {r['emails']:>6} {r['seconds']:>8.2f} "
          f"{r['msgs_per_sec']:>7.0f} {ratio:>9} {r['sink_sessions']:>8} {cpu:>10} "
          f"{r['sink_cpu_seconds']:>10} {pg:>9}")
print()
print("Scheduled lateness (sent_at - send_at), all due at the same moment:")
print(f"{'backend':<9} {'emails':>6} {'layout':<16} {'first ms':>8} {'p50 ms':>8} {'p90 ms':>8} "
      f"{'p99 ms':>8} {'max ms':>8} {'msgs/s sending':>14}")
for r in rows:
    if r["mode"] != "scheduled":
        continue
    layout = f"{r['workers']} loops x {r['batch']}"
    print(f"{r['backend']:<9} {r['emails']:>6} {layout:<16} {r['first_ms']:>8} {r['p50_ms']:>8} "
          f"{r['p90_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} {r['msgs_per_sec_while_sending']:>14}")
EOF
