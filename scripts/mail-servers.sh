#!/usr/bin/env bash
# Real mail servers for Herald's integration tests, on loopback only: Dovecot (IMAP, LMTP) and
# Postfix (SMTP, submission), installed from Debian's packages when absent. Everything they write
# (config, Maildirs, queue, logs, pids, sockets) lives under one state directory, so they never
# touch a system-wide Dovecot or Postfix.
#
#   scripts/mail-servers.sh start [STATE_DIR]   # install if needed, start, print the env
#   scripts/mail-servers.sh stop  [STATE_DIR]   # stop both (mail is kept; rm -rf STATE_DIR to reset)
#   scripts/mail-servers.sh stop-dovecot [STATE_DIR]  # stop Dovecot only, dropping its clients
#   scripts/mail-servers.sh env   [STATE_DIR]   # print `export HERALD_TEST_...=...` lines
#
#   eval "$(scripts/mail-servers.sh start)"     # typical use from a test script
#
# STATE_DIR defaults to /tmp/herald-mail. Needs root (Postfix's master and Dovecot's master run as
# root; mail is stored as the `vmail` user). Ports are fixed, so one STATE_DIR runs at a time.
# Mail to domains other than herald.test is refused at RCPT with a 550 (no mail leaves the host).
# The sending tests use Postfix's smtp-sink to play failing servers; as root it needs a user, e.g.
# `smtp-sink -u nobody -r rcpt 127.0.0.1:10026 10` answers RCPT with 450 (-f rcpt: 500).
set -euo pipefail

IMAP_PORT=10143
IMAPS_PORT=10993
LMTP_PORT=10024
SMTP_PORT=10025
SUBMISSION_PORT=10587
DOMAIN=herald.test
USERS="alice:alice-pass bob:bob-pass carol:carol-pass"
MAIL_USER=vmail
PACKAGES="dovecot-imapd dovecot-lmtpd postfix"

log() { printf '\033[1m[mail]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[mail] %s\033[0m\n' "$*" >&2; exit 1; }

usage() { die "usage: $0 start|stop|stop-dovecot|env [STATE_DIR]   (default STATE_DIR: /tmp/herald-mail)"; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
cmd=$1
STATE=${2:-/tmp/herald-mail}
# Absolute, because the path is written into config files and postfix -c insists on it;
# no whitespace, because Dovecot's and Postfix's config syntaxes would split on it.
case "$STATE" in /*) ;; *) STATE="$PWD/$STATE" ;; esac
STATE=${STATE%/}
case "$STATE" in *[[:space:]]*) die "STATE_DIR must not contain whitespace: '$STATE'" ;; esac

DOVECOT_CONF="$STATE/dovecot.conf"
DOVECOT_RUN="$STATE/run/dovecot"      # Dovecot's base_dir: sockets and master.pid
POSTFIX_CONF="$STATE/postfix"         # main.cf, master.cf
POSTFIX_QUEUE="$STATE/postfix-queue"  # queue_directory; master.pid is in pid/ below it

# ---- env --------------------------------------------------------------------------------------

# Single-quote a value for `eval` (the paths have no quotes in them, but be safe anyway).
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

print_env() {
    local users="" u
    for u in $USERS; do users="${users:+$users,}${u%%:*}@$DOMAIN:${u#*:}"; done
    cat <<EOF
export HERALD_TEST_MAIL_STATE_DIR=$(q "$STATE")
export HERALD_TEST_IMAP_HOST=127.0.0.1
export HERALD_TEST_IMAP_PORT=$IMAP_PORT
export HERALD_TEST_IMAPS_PORT=$IMAPS_PORT
export HERALD_TEST_LMTP_PORT=$LMTP_PORT
export HERALD_TEST_SMTP_HOST=127.0.0.1
export HERALD_TEST_SMTP_PORT=$SMTP_PORT
export HERALD_TEST_SUBMISSION_PORT=$SUBMISSION_PORT
export HERALD_TEST_TLS_CERT=$(q "$STATE/ssl/cert.pem")
export HERALD_TEST_MAIL_DOMAIN=$DOMAIN
export HERALD_TEST_MAIL_DIR=$(q "$STATE/mail")
export HERALD_TEST_MAIL_USERS=$(q "$users")
export HERALD_TEST_DOVEADM=$(q "doveadm -c $DOVECOT_CONF")
export HERALD_TEST_SMTP_SINK=$(q "$(command -v smtp-sink || echo /usr/sbin/smtp-sink)")
EOF
}

# ---- state checks -----------------------------------------------------------------------------

dovecot_running() {
    local pid
    pid=$(cat "$DOVECOT_RUN/master.pid" 2>/dev/null) || return 1
    # A stale pid file (after a reboot, say) may name some other process by now.
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dovecot ]
}

postfix_running() {
    [ -f "$POSTFIX_CONF/main.cf" ] && postfix -c "$POSTFIX_CONF" status >/dev/null 2>&1
}

port_open() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_ports() {
    local port
    for port in "$@"; do
        for _ in $(seq 1 50); do port_open "$port" && continue 2; sleep 0.1; done
        return 1
    done
}

# ---- install ----------------------------------------------------------------------------------

need_root() {
    [ "$(id -u)" -eq 0 ] && return
    command -v sudo >/dev/null || die "needs root (Postfix and Dovecot masters run as root)"
    exec sudo "$0" "$@"
}

install_packages() {
    local missing="" p
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
            missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        log "installing from Debian's packages:$missing"
        # "No configuration": the package must not set up a system-wide Postfix of its own.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        # Without systemd, the maintainer scripts would start a system-wide Dovecot on ports
        # 143/993 through invoke-rc.d. A policy-rc.d that says "no" (101) prevents that; it is
        # removed again unless one was there before.
        local policy=/usr/sbin/policy-rc.d own_policy=""
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
        fi
        local rc=0
        # $missing is a list of words on purpose. All output to a log: stdout is for the env.
        # shellcheck disable=SC2086
        {
            apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
        } >"$STATE/log/apt.log" 2>&1 || rc=$?
        [ -z "$own_policy" ] || rm -f "$policy"
        [ "$rc" -eq 0 ] || { tail -n 20 "$STATE/log/apt.log" >&2 || true
                             die "could not install:$missing (see $STATE/log/apt.log)"; }
    fi
    for p in dovecot doveadm postfix postconf; do
        command -v "$p" >/dev/null || die "$p is not on PATH after installing $PACKAGES"
    done
    command -v smtp-sink >/dev/null || log "warning: smtp-sink not found (expected in /usr/sbin)"
    # Mail is owned by a dedicated user: Dovecot refuses to store mail as root or as its own
    # internal users.
    if ! getent passwd "$MAIL_USER" >/dev/null; then
        log "creating system user $MAIL_USER"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$MAIL_USER" || die "could not create user $MAIL_USER"
    fi
}

# ---- configuration ----------------------------------------------------------------------------

# A self-signed certificate for IMAPS and STARTTLS, made once per STATE_DIR.
make_cert() {
    [ -s "$STATE/ssl/cert.pem" ] && [ -s "$STATE/ssl/key.pem" ] && return
    mkdir -p "$STATE/ssl"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:mail.$DOMAIN" \
        -keyout "$STATE/ssl/key.pem" -out "$STATE/ssl/cert.pem" >/dev/null 2>&1 ||
        die "openssl could not make a self-signed certificate in $STATE/ssl"
    chmod 600 "$STATE/ssl/key.pem"
}

write_dovecot_conf() {
    local uid u
    uid=$(id -u "$MAIL_USER")
    # Plain-text passwords: these are throwaway test accounts. Read by Dovecot's auth process,
    # which runs as the dovecot user.
    : >"$STATE/users"
    for u in $USERS; do
        echo "${u%%:*}@$DOMAIN:{PLAIN}${u#*:}::::::" >>"$STATE/users"
    done
    chown root:dovecot "$STATE/users" && chmod 640 "$STATE/users"

    local dh=""
    [ -f /usr/share/dovecot/dh.pem ] && dh="ssl_dh = </usr/share/dovecot/dh.pem"

    cat >"$DOVECOT_CONF" <<EOF
# Written by scripts/mail-servers.sh; rewritten on every start. Self-contained: it includes
# nothing from /etc/dovecot, and base_dir/state_dir keep it apart from a system-wide Dovecot.
base_dir = $DOVECOT_RUN
state_dir = $STATE/run/dovecot-state
instance_name = herald-mail
protocols = imap lmtp
listen = 127.0.0.1
log_path = $STATE/log/dovecot.log

ssl = yes
ssl_cert = <$STATE/ssl/cert.pem
ssl_key = <$STATE/ssl/key.pem
$dh
# Tests log in with plain passwords on loopback, with or without TLS.
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests of wrong passwords should not be slowed down: no 2 s delay per failure, and no
# per-IP penalty, which would delay every later login from 127.0.0.1 by up to 15 s.
auth_failure_delay = 0

passdb {
  driver = passwd-file
  args = scheme=PLAIN $STATE/users
}
userdb {
  driver = passwd-file
  args = $STATE/users
  default_fields = uid=$MAIL_USER gid=$MAIL_USER home=$STATE/home/%d/%n
}
first_valid_uid = $uid
last_valid_uid = $uid

mail_location = maildir:$STATE/mail/%d/%n
# Test data: durability across a power cut does not matter, speed does.
mail_fsync = never
recipient_delimiter = +

namespace inbox {
  inbox = yes
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
}

# IDLE, CONDSTORE and QRESYNC are in Dovecot's default capability list; nothing to enable.

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}

# Postfix delivers here; tests may also deliver directly.
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}

# Without this socket (mode 0: not created) the auth penalty above is off.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}

# Postfix's submission port checks passwords through this socket.
service auth {
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
}

write_postfix_conf() {
    local u
    # The same addresses as Dovecot's, so unknown recipients are refused at RCPT (550 5.1.1).
    for u in $USERS; do echo "${u%%:*}@$DOMAIN OK"; done >"$POSTFIX_CONF/vmailbox"
    cat >"$POSTFIX_CONF/main.cf" <<EOF
# Written by scripts/mail-servers.sh; rewritten on every start. Run with postfix -c $POSTFIX_CONF.
compatibility_level = 3.6
queue_directory = $POSTFIX_QUEUE
data_directory = $STATE/postfix-data
maillog_file = $STATE/log/postfix.log
# maillog_file must start with one of these (the default allows only /var and /dev/stdout).
maillog_file_prefixes = $STATE
myhostname = mail.$DOMAIN
mydomain = $DOMAIN
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
append_dot_mydomain = no
readme_directory = no
alias_maps =
alias_database =
recipient_delimiter = +

# herald.test mailboxes live in Dovecot, reached over LMTP; unknown users are refused at RCPT.
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$POSTFIX_CONF/vmailbox
virtual_transport = lmtp:inet:127.0.0.1:$LMTP_PORT
lmtp_host_lookup = native
# Nothing leaves this host: smtpd refuses other domains at RCPT, since they resolve to error.
local_transport = error:local delivery is disabled
default_transport = error:the Herald test MTA delivers only to $DOMAIN
relay_transport = error:the Herald test MTA delivers only to $DOMAIN

# Loopback clients may send to anyone without authenticating (port $SMTP_PORT).
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination

# STARTTLS with the self-signed certificate; optional, and AUTH works without it.
smtpd_tls_cert_file = $STATE/ssl/cert.pem
smtpd_tls_key_file = $STATE/ssl/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = no
smtp_tls_security_level = none

# Submission (port $SUBMISSION_PORT) checks passwords against Dovecot.
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DOVECOT_RUN/auth-postfix
EOF

    # No chroot anywhere (column 5 = n): the chroot would need copies of libraries and sockets.
    cat >"$POSTFIX_CONF/master.cf" <<EOF
# Written by scripts/mail-servers.sh; rewritten on every start.
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
127.0.0.1:$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# ---- start / stop -----------------------------------------------------------------------------

start() {
    if dovecot_running && postfix_running; then
        log "already running in $STATE"
        print_env
        return
    fi
    # Postfix chdirs into its queue directory before creating what is below it.
    mkdir -p "$STATE/log" "$STATE/run" "$POSTFIX_CONF" "$POSTFIX_QUEUE"
    chmod 755 "$STATE"   # Postfix (as user postfix) must reach the Dovecot auth socket below it
    install_packages

    # A port held by someone else (another STATE_DIR, say) would make a server fail with a
    # less obvious message.
    local port
    if ! dovecot_running; then
        for port in $IMAP_PORT $IMAPS_PORT $LMTP_PORT; do
            port_open "$port" && die "port $port is already in use (another STATE_DIR running?)"
        done
    fi
    if ! postfix_running; then
        for port in $SMTP_PORT $SUBMISSION_PORT; do
            port_open "$port" && die "port $port is already in use (another STATE_DIR running?)"
        done
    fi

    make_cert
    mkdir -p "$STATE/mail" "$STATE/home"
    chown "$MAIL_USER:$MAIL_USER" "$STATE/mail" "$STATE/home"
    write_dovecot_conf
    write_postfix_conf

    if ! dovecot_running; then
        log "starting Dovecot (IMAP $IMAP_PORT, IMAPS $IMAPS_PORT, LMTP $LMTP_PORT)"
        # Sockets left by an earlier run (or an earlier config) would be connected to in vain.
        rm -rf "$DOVECOT_RUN"
        dovecot -c "$DOVECOT_CONF" ||
            { tail -n 20 "$STATE/log/dovecot.log" >&2 2>/dev/null || true
              die "Dovecot did not start (log: $STATE/log/dovecot.log)"; }
    fi
    if ! postfix_running; then
        log "starting Postfix (SMTP $SMTP_PORT, submission $SUBMISSION_PORT)"
        postfix -c "$POSTFIX_CONF" start >>"$STATE/log/postfix-start.log" 2>&1 ||
            { tail -n 20 "$STATE/log/postfix-start.log" "$STATE/log/postfix.log" >&2 2>/dev/null || true
              die "Postfix did not start (logs: $STATE/log/postfix-start.log, postfix.log)"; }
    fi
    wait_ports $IMAP_PORT $IMAPS_PORT $LMTP_PORT ||
        die "Dovecot is not listening on its ports (log: $STATE/log/dovecot.log)"
    wait_ports $SMTP_PORT $SUBMISSION_PORT ||
        die "Postfix is not listening on its ports (log: $STATE/log/postfix.log)"
    log "running in $STATE"
    print_env
}

# Wait for a pid to exit, so that a `start` right after `stop` finds the ports free.
wait_gone() {
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    return 1
}

# Dovecot's master exits leaving connected IMAP processes serving their clients; a stopped server
# drops its clients, so those are ended too (the sync tests restart Dovecot mid-sync).
dovecot_signal() {
    dpid=$(cat "$DOVECOT_RUN/master.pid")
    dovecot_children=$(pgrep -P "$dpid" | tr '\n' ' ' || true)
    log "stopping Dovecot"
    kill "$dpid"
}

dovecot_wait() {
    wait_gone "$dpid" || die "Dovecot (pid $dpid) did not exit"
    # shellcheck disable=SC2086 # a list of pids
    [ -z "$dovecot_children" ] || kill $dovecot_children 2>/dev/null || true
}

stop_dovecot() {
    local dpid="" dovecot_children=""
    if dovecot_running; then dovecot_signal; dovecot_wait; fi
    log "Dovecot stopped (state kept in $STATE)"
}

stop() {
    # Signal both first, then wait: each takes a few seconds to wind down.
    local ppid="" dpid="" dovecot_children=""
    if postfix_running; then
        ppid=$(tr -d ' ' <"$POSTFIX_QUEUE/pid/master.pid")
        log "stopping Postfix"
        postfix -c "$POSTFIX_CONF" stop >>"$STATE/log/postfix-start.log" 2>&1 ||
            die "postfix -c $POSTFIX_CONF stop failed"
    fi
    if dovecot_running; then dovecot_signal; fi
    if [ -n "$ppid" ]; then wait_gone "$ppid" || die "Postfix (pid $ppid) did not exit"; fi
    if [ -n "$dpid" ]; then dovecot_wait; fi
    log "stopped (state kept in $STATE)"
}

case "$cmd" in
    start) need_root "$@"; start ;;
    stop) need_root "$@"; stop ;;
    stop-dovecot) need_root "$@"; stop_dovecot ;;
    env) print_env ;;
    *) usage ;;
esac
