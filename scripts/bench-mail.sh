#!/usr/bin/env bash
# Mailbox first-sync benchmark (docs/benchmarks.md): a generated mailbox of MESSAGES messages of
# about 4 KiB on the loopback Dovecot, fetched by mbsync into a Maildir and synced by Herald
# (crates/mailbox/examples/sync_bench.rs) into PostgreSQL and into SQLite; then each again with
# nothing new. Reports wall time, messages per second, CPU time and peak RSS per process.
#
#   scripts/bench-mail.sh                  # MESSAGES=10000
#   MESSAGES=500 scripts/bench-mail.sh
#
# The mailbox belongs to a user of its own, bench@herald.test, added to the running Dovecot's
# password file (re-read when it changes) for the run and removed with its mail afterwards, so
# the test users' mail is never touched. Needs root, as scripts/mail-servers.sh does. Tests that
# restart Dovecot must not run at the same time: the script stops if Dovecot was restarted.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ "$(id -u)" -eq 0 ] || die "run as root: the mailbox is written as Dovecot's vmail user"
MESSAGES="${MESSAGES:-10000}"
BENCH_USER=bench@herald.test
BENCH_PASS=bench-pass

ensure_postgres
eval "$(scripts/mail-servers.sh start)"
need mbsync isync
need /usr/bin/time time
need python3 python3
need jq jq
need column bsdextrautils
# The test Dovecot's doveadm (its config), not a system-wide one.
doveadm() { command $HERALD_TEST_DOVEADM "$@"; }

log "building the benchmark (release)"
cargo build --release -q -p herald-mailbox --example sync_bench
bench=target/release/examples/sync_bench

base="${HERALD_TEST_POSTGRES_URL%/*}"
users="$HERALD_TEST_MAIL_STATE_DIR/users"
maildir="$HERALD_TEST_MAIL_DIR/${BENCH_USER#*@}/${BENCH_USER%@*}"
tmp=$(mktemp -d)
# Leaves the test servers as they were: no bench user, no 70 MB mailbox.
cleanup() {
    rm -rf "$tmp" "$maildir"
    sed -i "/^$BENCH_USER:/d" "$users"
    drop_bench_db herald_bench_mail
}
trap cleanup EXIT

# ---- the mailbox ------------------------------------------------------------------------------

# The user lives only until mail-servers.sh rewrites the file on its next start (a test that
# restarts Dovecot does that): added again before each contender.
bench_user() {
    grep -q "^$BENCH_USER:" "$users" || echo "$BENCH_USER:{PLAIN}$BENCH_PASS::::::" >>"$users"
}
bench_user
# A Dovecot restarted mid-run (by a test running beside this) would skew every figure after it.
dovecot_pid=$(cat "$HERALD_TEST_MAIL_STATE_DIR/run/dovecot/master.pid")

log "generating $MESSAGES messages into $maildir"
started=$SECONDS
# Straight into the Maildir (Dovecot indexes it on first access): far faster than LMTP or
# doveadm save for 10,000 messages. Starting from an empty directory also resets UIDVALIDITY.
rm -rf "$maildir"
mkdir -p "$maildir"/{cur,new,tmp}
python3 - "$MESSAGES" "$maildir/cur" "$BENCH_USER" <<'EOF'
# About 4 KiB of plain text each, with realistic headers; a third are replies that carry
# In-Reply-To and References, so threading has work to do. Seeded: every run has the same mail
# (dated over the year before now).
import email.header, email.utils, os, random, sys, textwrap, time

n, cur, me = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = random.Random(4096)
senders = [
    ("Ann Lee", "ann@acme.example"),
    ("Bo Chen", "bo.chen@globex.example"),
    ("Carla Díaz", "carla@initech.example"),
    ("Dev Patel", "dev@umbrella.example"),
    ("Jürgen Weiß", "juergen@hooli.example"),
    ("Finn Berg", "finn@vandelay.example"),
    ("Grace Ito", "grace.ito@stark.example"),
    ("Hana Novak", "hana@wayne.example"),
]
topics = ["Quarterly numbers", "Renewal quote", "Onboarding plan", "Invoice {}", "Demo follow-up",
          "Contract draft v{}", "Support ticket #{}", "Pricing question", "Meeting next week",
          "Integration timeline"]
words = ("the of and to a in for is on that by this with you it not or be are from at as your "
         "all have new more an was we will can us about if page my has search free but our one "
         "other do no information time they site he up may what which their news out use any "
         "there see only so his when contact here business who web also now help get view "
         "online first been would how were me services some these click its like service than "
         "find price date back top people had list name just over state year day into email two "
         "health world re next used go work last most products music buy data make them should "
         "product system post her city add policy number such please available copyright support "
         "message after best software then jan good video well where info rights public books "
         "high school through each links she review years order very privacy book items company "
         "read group sex need many user said de does set under general research university "
         "january mail full map reviews program life know games way days management part could "
         "great united hotel real item international center ebay must store travel comments made "
         "development report off member details line terms before hotels did send right type "
         "because local those using results office education national car design take posted "
         "internet address community within states area want phone dvd shipping reserved subject "
         "between forum family long based code show even black check special prices website index "
         "being women much sign file link open today technology south case project same pages uk "
         "version section own found sports house related security both county american photo game "
         "members power while care network down computer systems three total place end following "
         "download him without per access think north resources current posts big media law "
         "control water history pictures size art personal since including guide shop directory "
         "board location change white text small rating rate government children during usa "
         "return students shopping account times sites level digital profile previous form events "
         "love old john main call hours image department title description non insurance another "
         "why shall property class still money quality every listing content country private "
         "little visit save tools low reply customer december compare movies include college "
         "value article york man card jobs provide food source author different press").split()

def header_name(name):
    # Non-ASCII names as RFC 2047 encoded words, as mail clients send them.
    return name if name.isascii() else email.header.Header(name, "utf-8").encode()

start = time.time() - 365 * 86400
step = 365 * 86400 / max(n, 1)
threads = []  # [subject, contact, [message-ids]]
for i in range(n):
    ts = int(start + i * step + rng.random() * step)
    if threads and rng.random() < 0.35:
        thread = rng.choice(threads[-60:])
        subject = "Re: " + thread[0]
        name, addr = thread[1] if rng.random() < 0.8 else rng.choice(senders)
    else:
        name, addr = rng.choice(senders)
        subject = rng.choice(topics).format(rng.randint(100, 9999))
        thread = [subject, (name, addr), []]
        threads.append(thread)
    domain = addr.split("@")[1]
    mid = "%d.%06d.%08x@%s" % (ts, i, rng.getrandbits(32), domain)
    headers = [
        "Return-Path: <%s>" % addr,
        "Received: from mail.%s (mail.%s [192.0.2.%d])\n\tby mail.herald.test with ESMTPS id %08X\n\tfor <%s>; %s"
        % (domain, domain, i % 250 + 1, rng.getrandbits(32), me, email.utils.formatdate(ts + 2, usegmt=True)),
        "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(ts)),
        "From: %s <%s>" % (header_name(name), addr),
        "To: Bench <%s>" % me,
    ]
    if rng.random() < 0.2:
        cc_name, cc_addr = rng.choice([s for s in senders if s[1] != addr])
        headers.append("Cc: %s <%s>" % (header_name(cc_name), cc_addr))
    headers.append("Subject: " + subject)
    headers.append("Message-ID: <%s>" % mid)
    if thread[2]:
        headers.append("In-Reply-To: <%s>" % thread[2][-1])
        headers.append("References: " + "\n ".join("<%s>" % r for r in thread[2][-10:]))
    headers += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                "Content-Transfer-Encoding: 8bit", "X-Mailer: herald-bench"]
    head = "\n".join(headers) + "\n\n"
    body = []
    size = len(head.encode())
    signature = "\n-- \n%s\n%s\n" % (name, domain)
    while size < 4096 - len(signature.encode()) - 80:
        para = textwrap.fill(" ".join(rng.choice(words) for _ in range(rng.randint(30, 80))).capitalize() + ".", 72)
        body.append(para)
        size += len(para.encode()) + 2
    raw = (head + "Hello,\n\n" + "\n\n".join(body) + "\n" + signature).encode()
    thread[2].append(mid)
    # Maildir names: the time first, so Dovecot gives the UIDs in date order (parents first).
    with open(os.path.join(cur, "%d.M%06dP%d.herald-bench,S=%d:2," % (ts, i, os.getpid(), len(raw))), "wb") as f:
        f.write(raw)
EOF
chown -R vmail:vmail "$maildir"
# Dovecot indexes the Maildir here; the count says the whole mailbox is visible over IMAP.
count=$(doveadm mailbox status -u "$BENCH_USER" messages INBOX | sed 's/.*messages=//')
[ "$count" = "$MESSAGES" ] || die "Dovecot sees $count messages in $BENCH_USER's INBOX, expected $MESSAGES"
# Read every message once, so no contender pays for a cold page cache.
doveadm fetch -u "$BENCH_USER" text mailbox INBOX all >/dev/null
log "delivered $count messages ($(du -sh "$maildir/cur" | cut -f1)) in $((SECONDS - started)) s"

# ---- contenders -------------------------------------------------------------------------------

results="$tmp/results.jsonl"
: >"$results"

# Runs a command under /usr/bin/time -v (its stdout passes through); appends
# {name, seconds, cpu, max_rss_kib} for the whole process to the results.
timed() {
    local name=$1; shift
    bench_user
    /usr/bin/time -v -o "$tmp/time" "$@"
    awk -v name="$name" -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
        /User time/ { cpu += $2 } /System time/ { cpu += $2 }
        /Maximum resident set size/ { rss = $2 }
        END { printf "{\"name\":\"%s\",\"seconds\":%.3f,\"cpu\":%.2f,\"max_rss_kib\":%d}\n", name, s, cpu, rss }
    ' "$tmp/time" | tee -a "$results" >&2
}

# mbsync pulls the INBOX into a fresh Maildir, twice: with its defaults, which fsync every
# message (FSync yes), and with FSync no, the raw speed (Dovecot here runs with mail_fsync =
# never, PostgreSQL syncs once per commit, Herald's SQLite in WAL mode at checkpoints).
# mbsync_pair LABEL [GLOBAL-OPTION]
mbsync_pair() {
    local label=$1 option=${2:-} dir="$tmp/$1"
    mkdir -p "$dir/maildir"
    cat >"$dir/mbsyncrc" <<EOF
$option

IMAPAccount bench
Host $HERALD_TEST_IMAP_HOST
Port $HERALD_TEST_IMAP_PORT
User $BENCH_USER
Pass $BENCH_PASS
SSLType None
AuthMechs LOGIN

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path $dir/maildir/
Inbox $dir/maildir/INBOX

Channel bench
Far :bench-far:
Near :bench-near:
Patterns INBOX
Create Near
Sync Pull
Expunge None
SyncState *
EOF
    # Plain LOGIN on loopback: mbsync warns about the clear-text password on every run.
    log "$label: first sync"
    timed "$label first" mbsync -q -c "$dir/mbsyncrc" bench 2> >(grep -v 'sent in the clear' >&2)
    local got
    got=$(find "$dir/maildir/INBOX/cur" "$dir/maildir/INBOX/new" -type f | wc -l)
    [ "$got" = "$MESSAGES" ] || die "$label fetched $got messages, expected $MESSAGES"
    # mbsync waits for the clock's next second when the Maildir changed within the current one
    # (mtimes have one-second steps): a resync right after the first sync would measure that
    # wait, not the resync.
    sleep 2
    log "$label: no-change resync"
    timed "$label resync" mbsync -q -c "$dir/mbsyncrc" bench 2> >(grep -v 'sent in the clear' >&2)
    rm -rf "$dir/maildir"
}
log "mbsync $(mbsync --version | awk '{print $2}')"
mbsync_pair mbsync
mbsync_pair mbsync-nofsync "FSync no"

args=(--imap-host "$HERALD_TEST_IMAP_HOST" --imap-port "$HERALD_TEST_IMAP_PORT"
      --user "$BENCH_USER" --password "$BENCH_PASS" --expect "$MESSAGES")

log "herald on PostgreSQL (first sync and resync in one process)"
fresh_bench_db herald_bench_mail
timed "herald postgres" "$bench" --database-url "$base/herald_bench_mail" "${args[@]}" | tee -a "$results"
drop_bench_db herald_bench_mail

log "herald on SQLite (first sync and resync in one process)"
timed "herald sqlite" "$bench" --database-url "sqlite://$tmp/bench.db" "${args[@]}" | tee -a "$results"

# ---- summary ----------------------------------------------------------------------------------

[ "$(cat "$HERALD_TEST_MAIL_STATE_DIR/run/dovecot/master.pid" 2>/dev/null)" = "$dovecot_pid" ] ||
    die "Dovecot was restarted during the run (a test beside it?): run again"

# mbsync's phases are its processes (mbsync-nofsync: with FSync no). Herald's are timed inside
# its one process (connect and login included, migrations and setup not): its CPU time and peak
# RSS are the whole process's.
log "summary ($MESSAGES messages, $(nproc) cores)"
jq -rs --argjson n "$MESSAGES" '
    . as $r
    | def proc($name): $r | map(select(.name == $name))[0];
      def phase($b; $p): $r | map(select(.backend == $b and .phase == $p))[0];
      def rate($m; $s): if $m > 0 then ($m / $s | round | tostring) else "-" end;
      def mib($kib): ($kib / 1024 | round | tostring);
    ["system", "phase", "messages", "seconds", "msgs/s", "cpu s", "peak RSS MiB", "notes"],
    (["mbsync", "mbsync-nofsync"][] as $s | ["first", "resync"][] as $ph
        | proc("\($s) \($ph)") as $p | (if $ph == "first" then $n else 0 end) as $m
        | [$s, $ph, $m, $p.seconds, rate($m; $p.seconds), $p.cpu, mib($p.max_rss_kib)]),
    (["postgres", "sqlite"][] as $b | proc("herald \($b)") as $p
        | (["first", "resync"][] as $ph | phase($b; $ph) as $x
            | ["herald \($b)", $ph, $x.messages, $x.seconds, rate($x.messages; $x.seconds),
               (if $ph == "first" then "\($p.cpu) (both)" else "" end),
               (if $ph == "first" then mib($p.max_rss_kib) else "" end)]),
          ["herald \($b)", "process", "", $p.seconds, "", "", "",
           "\(phase($b; "first").emails) emails, \(phase($b; "first").threads) threads"])
    | map(tostring) | join("\t")' "$results" | column -t -s $'\t'
