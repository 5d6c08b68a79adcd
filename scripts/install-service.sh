#!/usr/bin/env bash
# Installs pgstream as a service (docs/operations.md): the binary, the systemd units
# (pgstream-receive-wal@.service and the timers), an example /etc/pgstream/pgstream.toml (only
# when there is none), the cron example and the operations guide, and the system user
# `pgstream`. Idempotent; run it again after an upgrade.
#
#   sudo scripts/install-service.sh
#
# Settings (environment):
#   PGSTREAM_BIN   the binary to install (default: target/release/pgstream, built when missing)
#   PREFIX         where the binary and docs go (default /usr/local: /usr/local/bin/pgstream)
#   SYSCONFDIR     where pgstream/pgstream.toml goes (default /etc)
#   UNITDIR        where the units go (default /etc/systemd/system)
#   PGSTREAM_NO_SYSTEM=1  do not create the user nor run systemctl (packaging, tests)
set -euo pipefail
cd "$(dirname "$0")/.."

prefix="${PREFIX:-/usr/local}"
sysconfdir="${SYSCONFDIR:-/etc}"
unitdir="${UNITDIR:-/etc/systemd/system}"
bin="${PGSTREAM_BIN:-target/release/pgstream}"

if [ ! -x "$bin" ]; then
    if [ -n "${PGSTREAM_BIN:-}" ]; then
        echo "install-service: $bin is not an executable (PGSTREAM_BIN)" >&2
        exit 2
    fi
    echo "install-service: building the release binary (cargo build --release -p pgstream-cli)"
    cargo build --release -p pgstream-cli
fi

install -d -m 0755 "$prefix/bin" "$prefix/share/doc/pgstream" "$unitdir" "$sysconfdir/pgstream"
install -m 0755 "$bin" "$prefix/bin/pgstream.new"
mv -f "$prefix/bin/pgstream.new" "$prefix/bin/pgstream"
for unit in packaging/systemd/*.service packaging/systemd/*.timer; do
    sed -e "s|/usr/local/bin/pgstream|$prefix/bin/pgstream|g" \
        -e "s|/usr/local/share/doc/pgstream|$prefix/share/doc/pgstream|g" \
        "$unit" >"$unitdir/$(basename "$unit").new"
    chmod 0644 "$unitdir/$(basename "$unit").new"
    mv -f "$unitdir/$(basename "$unit").new" "$unitdir/$(basename "$unit")"
done
install -m 0644 docs/operations.md packaging/cron/pgstream.cron packaging/pgstream.toml \
    "$prefix/share/doc/pgstream/"
config="$sysconfdir/pgstream/pgstream.toml"
if [ -e "$config" ]; then
    echo "install-service: keeping the existing $config"
else
    install -m 0644 packaging/pgstream.toml "$config"
    echo "install-service: wrote the example $config: edit [cluster.main] before starting anything"
fi

if [ "${PGSTREAM_NO_SYSTEM:-}" != 1 ]; then
    if ! id pgstream >/dev/null 2>&1; then
        echo "install-service: creating the system user pgstream (home /var/lib/pgstream)"
        useradd --system --user-group --create-home --home-dir /var/lib/pgstream \
            --shell /usr/sbin/nologin --comment "pgstream backups" pgstream
    fi
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi

cat <<MSG
install-service: installed $prefix/bin/pgstream and the units in $unitdir.
Next (see $prefix/share/doc/pgstream/operations.md):
  edit $config, then as the pgstream user: pgstream --cluster main check; pgstream --cluster main init
  systemctl enable --now pgstream-receive-wal@main.service
  systemctl enable --now pgstream-base@main.timer pgstream-expire@main.timer pgstream-drill@main.timer
MSG
