#!/usr/bin/env bash
# Runs PgBouncer in transaction pooling mode on 127.0.0.1:6432 in front of the local
# PostgreSQL (127.0.0.1:5432), the way production deployments put it in front of Updraft:
#   scripts/pgbouncer.sh start   # prints UPDRAFT_TEST_PGBOUNCER_URL=...
#   scripts/pgbouncer.sh stop
#   scripts/pgbouncer.sh status
# Database `test` maps to the server's `test`; any other database name is passed through
# (`* =`), so tests can create a database each. Config, log and pid live in
# /tmp/updraft-pgbouncer. Idempotent and non-interactive (usable in CI).
set -euo pipefail

DIR=/tmp/updraft-pgbouncer
HOST=127.0.0.1
PORT=6432
PIDFILE=$DIR/pgbouncer.pid
URL="postgres://postgres@$HOST:$PORT/test"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
    as_postgres() { runuser -u postgres -- "$@"; }
else
    SUDO="sudo"
    as_postgres() { sudo -u postgres -- "$@"; }
fi

log() { echo "pgbouncer.sh: $*" >&2; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

answers() { psql -w -h "$HOST" -p "$PORT" -U postgres -d test -tAc 'SELECT 1' >/dev/null 2>&1; }

start() {
    "$(dirname "$0")/postgres.sh" >/dev/null
    if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
        log "installing pgbouncer"
        $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
        # the package must not start its own instance on our port
        $SUDO env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get -o DPkg::Lock::Timeout=600 install -y -qq pgbouncer >/dev/null
        $SUDO service pgbouncer stop >/dev/null 2>&1 || true
    fi
    PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    if running && answers; then
        echo "UPDRAFT_TEST_PGBOUNCER_URL=$URL"
        return
    fi
    $SUDO mkdir -p "$DIR"
    $SUDO tee "$DIR/userlist.txt" >/dev/null <<USERS
"postgres" ""
USERS
    $SUDO tee "$DIR/pgbouncer.ini" >/dev/null <<INI
[databases]
test = host=127.0.0.1 port=5432 dbname=test
* = host=127.0.0.1 port=5432

[pgbouncer]
listen_addr = $HOST
listen_port = $PORT
unix_socket_dir =
auth_type = trust
auth_file = $DIR/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
admin_users = postgres
; sqlx sends extra_float_digits; \`options\` (search_path) cannot be honoured per transaction
ignore_startup_parameters = extra_float_digits,options
logfile = $DIR/pgbouncer.log
pidfile = $PIDFILE
INI
    $SUDO chown -R postgres "$DIR"
    $SUDO rm -f "$PIDFILE"
    # PgBouncer refuses to run as root
    as_postgres "$PGBOUNCER" -d -q "$DIR/pgbouncer.ini"
    for _ in $(seq 1 40); do
        answers && break
        sleep 0.25
    done
    if ! answers; then
        log "pgbouncer did not answer on $HOST:$PORT; see $DIR/pgbouncer.log"
        tail -n 20 "$DIR/pgbouncer.log" >&2 || true
        exit 1
    fi
    echo "UPDRAFT_TEST_PGBOUNCER_URL=$URL"
}

stop() {
    if running; then
        PID=$(cat "$PIDFILE")
        $SUDO kill "$PID"
        for _ in $(seq 1 40); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.25
        done
        log "stopped"
    else
        log "not running"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status)
        if running && answers; then
            echo "running: UPDRAFT_TEST_PGBOUNCER_URL=$URL"
        else
            echo "not running"
            exit 1
        fi
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
