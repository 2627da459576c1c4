#!/bin/sh
# make dev / make dev-stop: the main job on a fresh machine.
#   dev.sh start   with DATABASE_URL set: use that server. Otherwise start (or reuse) a development
#                  cluster in ./.pgdata (tools/pg.sh). Then `kronos createdb` (create the database,
#                  upgrade to head) and show `kronos current` and `kronos history`.
#   dev.sh stop    stop the ./.pgdata cluster (its data stays for the next `make dev`).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pgdir="$root/.pgdata"
kronos="${KRONOS_LUA:-lua5.4} $root/bin/kronos"
case "${1:-start}" in
start)
    if [ -z "${DATABASE_URL:-}" ]; then
        base=$(sh "$root/tools/pg.sh" start "$pgdir")
        DATABASE_URL="${base%/postgres}/kronos"
        export DATABASE_URL
        echo "development server: $DATABASE_URL (data in .pgdata; make dev-stop stops it)"
    else
        echo "using DATABASE_URL"
    fi
    $kronos createdb
    echo "== kronos current"
    $kronos current
    echo "== kronos history"
    $kronos history
    ;;
stop)
    sh "$root/tools/pg.sh" stop "$pgdir"
    echo "development server stopped (data kept in .pgdata)"
    ;;
*) echo "usage: dev.sh start|stop" >&2; exit 2 ;;
esac
