#!/usr/bin/env bash
# Ensures a local PostgreSQL answers on 127.0.0.1:5432 with a database `test` that user
# `postgres` reaches without a password (trust), as the store's tests expect:
#   UPDRAFT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
# Idempotent and non-interactive (usable in CI). Installs PostgreSQL with apt-get when missing.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
DB=test

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
    as_postgres() { runuser -u postgres -- "$@"; }
else
    SUDO="sudo"
    as_postgres() { sudo -u postgres -- "$@"; }
fi

log() { echo "postgres.sh: $*" >&2; }

ready() { pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    if ! ready; then
        log "installing postgresql"
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >/dev/null
    fi
fi

if ! ready; then
    VERSION=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting cluster $VERSION/main"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$VERSION" main start || true
    for _ in $(seq 1 60); do
        ready && break
        sleep 0.5
    done
    ready || { log "postgresql did not start on $HOST:$PORT"; exit 1; }
fi

# Password-less TCP login for postgres from loopback (a fresh install asks for scram).
if ! psql -w -h "$HOST" -p "$PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    HBA=$(as_postgres psql -p "$PORT" -tAc 'SHOW hba_file')
    log "allowing trust login from loopback in $HBA"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$HBA"
    as_postgres psql -p "$PORT" -qtAc 'SELECT pg_reload_conf()' >/dev/null
    sleep 0.5
    psql -w -h "$HOST" -p "$PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null
fi

if [ "$(psql -w -h "$HOST" -p "$PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
    log "creating database $DB"
    psql -w -h "$HOST" -p "$PORT" -U postgres -d postgres -qc "CREATE DATABASE $DB"
fi

echo "UPDRAFT_TEST_POSTGRES_URL=postgres://postgres@$HOST:$PORT/$DB"
