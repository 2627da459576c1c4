#!/bin/sh
# make dev / make dev-env / make dev-stop: the main job on a fresh machine.
#   dev.sh start   with DATABASE_URL set: use that server. Otherwise start (or reuse) a development
#                  cluster in ./.pgdata (tools/pg.sh). Then `kronos createdb` (create the database,
#                  upgrade to head), show `kronos current` and `kronos history`, and print the
#                  `export DATABASE_URL=...` line that points a shell at that database.
#   dev.sh env     only that line (starting the cluster if it is not running), for
#                  eval "$(make -s dev-env)"
#   dev.sh stop    stop the ./.pgdata cluster (its data stays for the next `make dev`).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
pgdir="$root/.pgdata"
kronos="${KRONOS_LUA:-lua5.4} $root/bin/kronos"
# The URL of the development database: $DATABASE_URL, else the ./.pgdata cluster (started if it
# is not running), database kronos.
dev_url() {
    if [ -n "${DATABASE_URL:-}" ]; then echo "$DATABASE_URL"; return; fi
    base=$(sh "$root/tools/pg.sh" start "$pgdir")
    echo "${base%/postgres}/kronos"
}

# The line a shell evaluates to use that database (the URL single-quoted for the shell).
export_line() {
    printf "export DATABASE_URL='%s'\n" "$(printf %s "$1" | sed "s/'/'\\\\''/g")"
}

case "${1:-start}" in
start)
    if [ -z "${DATABASE_URL:-}" ]; then
        DATABASE_URL=$(dev_url)
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
    echo "== to use this database from your shell (or run: eval \"\$(make -s dev-env)\"):"
    export_line "$DATABASE_URL"
    ;;
env)
    export_line "$(dev_url)"
    ;;
stop)
    sh "$root/tools/pg.sh" stop "$pgdir"
    echo "development server stopped (data kept in .pgdata)"
    ;;
*) echo "usage: dev.sh start|env|stop" >&2; exit 2 ;;
esac
