# Herald's everyday commands; the README's two commands are `just run` and `just test`.

# Run the API with the worker in-process, on SQLite under ./data (no setup).
run:
    cargo run --release -p herald-api

# Run the whole test suite on SQLite and PostgreSQL (starts or installs PostgreSQL as needed).
test *ARGS:
    scripts/test.sh {{ARGS}}

# Formatting and lints as CI expects them.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks recorded in docs/benchmarks.md.
bench-queue:
    scripts/bench-queue.sh
