# Shared by scripts/test.sh and the benchmark scripts: bring up the services Herald's tests and
# benchmarks talk to. Source it; it defines functions only.

log() { printf '\033[1m[test]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[test] %s\033[0m\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@";
    elif command -v sudo >/dev/null; then sudo "$@";
    else die "need root to run: $*"; fi
}

export HERALD_TEST_POSTGRES_URL="${HERALD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

pg_up() {
    command -v psql >/dev/null && psql "$HERALD_TEST_POSTGRES_URL" -Atqc 'SELECT 1' >/dev/null 2>&1
}

start_debian_clusters() {
    command -v pg_lsclusters >/dev/null || return 0
    pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
        if [ "$status" != "online" ]; then
            log "starting PostgreSQL cluster $version/$cluster"
            as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
        fi
    done
}

# Installs a Debian package when its command is missing, as ensure_postgres installs PostgreSQL.
need() {
    local cmd=$1 package=$2
    command -v "$cmd" >/dev/null && return
    log "$cmd is not installed: installing $package from Debian's packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    command -v "$cmd" >/dev/null || die "$cmd is not on PATH after installing $package"
}

ensure_postgres() {
    if pg_up; then log "PostgreSQL is up"; return; fi
    start_debian_clusters
    for _ in $(seq 1 20); do pg_up && { log "PostgreSQL is up"; return; }; sleep 0.5; done
    if ! command -v pg_ctlcluster >/dev/null; then
        log "PostgreSQL is not installed: installing it from Debian's packages"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-client >/dev/null
        start_debian_clusters
    fi
    for _ in $(seq 1 40); do pg_up && break; sleep 0.5; done
    if ! pg_up && [ "$HERALD_TEST_POSTGRES_URL" = "postgres://postgres@127.0.0.1:5432/postgres" ]; then
        # A fresh Debian cluster asks for a password on TCP: give the postgres role one.
        log "setting a password for the local postgres role"
        as_root runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
        export HERALD_TEST_POSTGRES_URL="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    fi
    pg_up || die "PostgreSQL is not reachable at $HERALD_TEST_POSTGRES_URL and could not be started"
    log "PostgreSQL is up"
}

# A benchmark's own database beside the tests': `bench_pg_url NAME` prints its URL,
# `fresh_bench_db NAME` drops it if a run left it and creates it empty, `drop_bench_db NAME` drops
# it (quietly: for cleanup traps).
bench_pg_url() { printf '%s/%s' "${HERALD_TEST_POSTGRES_URL%/*}" "$1"; }
fresh_bench_db() {
    PGOPTIONS="-c client_min_messages=warning" psql "$HERALD_TEST_POSTGRES_URL" \
        -qc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" -qc "CREATE DATABASE \"$1\""
}
drop_bench_db() {
    PGOPTIONS="-c client_min_messages=warning" psql "$HERALD_TEST_POSTGRES_URL" \
        -qc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null 2>&1 || true
}

# Test databases left by a run that was killed (each test drops its own when it ends). A test
# database is named herald_test_<pid>_<random>: only those whose process is gone are dropped, so a
# suite running beside this one keeps its databases.
drop_stale_test_databases() {
    psql "$HERALD_TEST_POSTGRES_URL" -Atqc \
        "SELECT datname FROM pg_database WHERE datname LIKE 'herald\_test\_%'" 2>/dev/null |
    while read -r db; do
        pid=$(printf '%s' "$db" | cut -d_ -f3)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            psql "$HERALD_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
        fi
    done
}
