# pgstream's everyday commands. `just --list` shows them.

# PostgreSQL majors the tests run against (override: PGSTREAM_TEST_MAJORS=16 just test).
majors := env_var_or_default("PGSTREAM_TEST_MAJORS", "13,14,15,16,17,18")

default:
    @just --list

# Build everything.
build:
    cargo build --workspace --all-targets

# Install the PostgreSQL server binaries the tests use (idempotent, cached).
install-postgres:
    bash scripts/install-postgres.sh {{replace(majors, ",", " ")}}

# Install s3s-fs, the S3-compatible server the s3:// tests start (idempotent, cached).
install-s3-server:
    bash scripts/install-s3-server.sh

# Test-only dependencies: the Python reference decryptor (docs/format.md) uses `cryptography`;
# the metrics tests parse with `prometheus_client`'s OpenMetrics parser; the unit files are
# checked with `systemd-analyze` (Debian's systemd package).
test-deps:
    python3 -c "import cryptography" 2>/dev/null || python3 -m pip install --quiet cryptography
    python3 -c "import prometheus_client" 2>/dev/null || python3 -m pip install --quiet prometheus_client
    command -v systemd-analyze >/dev/null || (apt-get update -qq && apt-get install -y -qq systemd)

# The whole test suite: installs PostgreSQL 13-18 if needed, then unit and end-to-end tests on every major.
test: install-postgres install-s3-server test-deps
    PGSTREAM_TEST_MAJORS={{majors}} cargo nextest run --workspace --no-fail-fast --profile ci

# The test suite against one major only, e.g. `just test-major 16`.
test-major major: install-s3-server test-deps
    bash scripts/install-postgres.sh {{major}}
    PGSTREAM_TEST_MAJORS={{major}} cargo nextest run --workspace --no-fail-fast --profile ci

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks against pg_basebackup / pg_receivewal on throwaway clusters (base backup, restore, restore
# drill, WAL streaming); results go to docs/BENCHMARKS.md. `target/release/bench --drill-only`: the drill alone.
bench *ARGS:
    command -v /usr/bin/time >/dev/null || apt-get install -y time
    command -v /usr/bin/lz4 >/dev/null || apt-get install -y lz4
    bash scripts/install-postgres.sh 16
    cargo build --release -p pgstream-cli -p integration
    target/release/bench {{ARGS}}
    target/release/bench_wal

# As root, the cluster runs as the unprivileged user pgstream-demo (created when missing). Extra
# arguments go to pgstream demo, e.g. `just demo --scale 50 --keep`.
# The main job on a throwaway cluster (pgstream demo): receive-wal, base under load, PITR drill.
demo *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    bash scripts/install-postgres.sh 16
    cargo build --release -p pgstream-cli
    args=(--pg-bin "${PGSTREAM_PG_ROOT:-/var/cache/pgstream/postgresql}/16/bin")
    if [ "$(id -u)" = 0 ]; then
        user="${PGSTREAM_DEMO_USER:-pgstream-demo}"
        if ! id "$user" >/dev/null 2>&1; then
            echo "just demo: creating the unprivileged user $user to run PostgreSQL (useradd --system)"
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin --comment "pgstream demo clusters" "$user"
        fi
        echo "just demo: running as root, so the cluster runs as $user (PostgreSQL refuses root)"
        args+=(--os-user "$user")
    fi
    echo "+ target/release/pgstream demo ${args[*]} {{ARGS}}"
    exec target/release/pgstream demo "${args[@]}" {{ARGS}}
