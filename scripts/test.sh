#!/usr/bin/env bash
# Runs Herald's whole test suite on both backends, bringing up what it needs first:
# PostgreSQL (started, or installed from Debian's packages when absent), and Dovecot and Postfix
# on loopback (scripts/mail-servers.sh).
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -p herald-http  # extra arguments go to the test runner
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh

ensure_postgres
drop_stale_test_databases
# Dovecot and Postfix on loopback for the mailbox tests (installed on first use).
eval "$(scripts/mail-servers.sh start)"

if cargo nextest --version >/dev/null 2>&1; then
    log "running the suite with cargo nextest"
    cargo nextest run --workspace --no-fail-fast "$@"
else
    log "running the suite with cargo test"
    # The Dovecot restart test stops the shared server: it runs alone, after the rest.
    cargo test --workspace --no-fail-fast "$@" -- --skip dovecot_restart
    cargo test --workspace --no-fail-fast "$@" dovecot_restart -- --test-threads=1
fi
