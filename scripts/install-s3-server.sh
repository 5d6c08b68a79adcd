#!/usr/bin/env bash
# Installs s3s-fs, the S3-compatible server the integration tests start for `s3://` repositories
# (integration/src/s3.rs): a single binary that keeps buckets as directories, checks SigV4
# signatures and honours If-None-Match / If-Match on PutObject and CompleteMultipartUpload.
#
#   scripts/install-s3-server.sh
#
# Goes to ${PGSTREAM_S3S_ROOT:-/var/cache/pgstream/s3s-fs}/bin/s3s-fs, built from crates.io with
# cargo (no other network needed). An existing binary that reports the pinned version is left
# alone, so a warm run costs a few milliseconds. 0.14.1 is pinned: newer releases need a newer
# rustc than the workspace's.
set -euo pipefail

ROOT="${PGSTREAM_S3S_ROOT:-/var/cache/pgstream/s3s-fs}"
VERSION=0.14.1
BIN="$ROOT/bin/s3s-fs"

if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -qx "s3s-fs $VERSION"; then
    echo "install-s3-server: $BIN ($VERSION) already installed"
    exit 0
fi
command -v cargo >/dev/null || {
    echo "install-s3-server: ERROR: cargo is needed to build s3s-fs (install Rust: https://rustup.rs)" >&2
    exit 1
}
echo "install-s3-server: building s3s-fs $VERSION into $ROOT (a few minutes, once)"
cargo install --locked --root "$ROOT" s3s-fs --version "$VERSION" --features binary
"$BIN" --version
