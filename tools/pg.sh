#!/bin/sh
# A private PostgreSQL cluster for tests, benchmarks and development.
#   pg.sh start DIR   initdb (once) into DIR, start postgres on a socket in DIR and a free
#                     loopback port, print the conninfo URL on stdout
#   pg.sh stop DIR    stop it (the directory stays; remove it yourself if temporary)
# As root the server runs as the unprivileged `postgres` user, which Debian's package creates.
set -eu
cmd=$1; dir=$2
bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "pg.sh: no PostgreSQL server binaries (pg_config --bindir)" >&2; exit 1; }

PGOPTS="-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c password_encryption=scram-sha-256"

# shellcheck source=tools/lib.sh
. "$(dirname "$0")/lib.sh"

# The server's own files (data, socket, logs) live in DIR, unless the server's user cannot reach
# it (as root, a checkout under /root): then in a directory under /var/tmp named after DIR.
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
srv=$dir
if [ "$(id -u)" = 0 ]; then
    chown postgres: "$dir"
    if ! runuser -u postgres -- test -w "$dir" 2>/dev/null; then
        srv=/var/tmp/kronos-pg-$(printf %s "$dir" | md5sum | cut -c1-16)
        mkdir -p "$srv"
        chown postgres: "$srv"
        chmod 700 "$srv"
    fi
fi

case "$cmd" in
start)
    if [ ! -f "$srv/data/PG_VERSION" ]; then
        as_owner "$bindir/initdb" -D "$srv/data" -U postgres --auth=trust -E UTF8 --locale=C >"$srv/initdb.log" 2>&1 ||
            { cat "$srv/initdb.log" >&2; exit 1; }
        # One password-protected role, reachable over TCP only with its password (for secret specs).
        cat > "$srv/hba" <<HBA
local all all trust
host all kronos_pw 127.0.0.1/32 scram-sha-256
host all kronos_pw ::1/128 scram-sha-256
host all all 127.0.0.1/32 trust
host all all ::1/128 trust
HBA
        as_owner sh -c "cat '$srv/hba' > '$srv/data/pg_hba.conf'"
    fi
    if as_owner "$bindir/pg_ctl" -D "$srv/data" status >/dev/null 2>&1; then
        cat "$dir/url"; exit 0
    fi
    tries=0
    while :; do
        port=$(random_port)
        if as_owner "$bindir/pg_ctl" -D "$srv/data" -l "$srv/server.log" -w -t 60 start \
             -o "-p $port -k $srv $PGOPTS" >/dev/null 2>&1; then
            break
        fi
        tries=$((tries + 1))
        [ $tries -lt 5 ] || { tail -n 20 "$srv/server.log" >&2; exit 1; }
    done
    echo "postgresql://postgres@127.0.0.1:$port/postgres" > "$dir/url"
    echo "$port" > "$dir/port"
    cat "$dir/url"
    ;;
stop)
    [ -f "$srv/data/PG_VERSION" ] || exit 0
    as_owner "$bindir/pg_ctl" -D "$srv/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
restart-immediate)
    port=$(cat "$dir/port")
    as_owner "$bindir/pg_ctl" -D "$srv/data" -l "$srv/server.log" -m immediate -w -t 60 restart \
        -o "-p $port -k $srv $PGOPTS" >/dev/null 2>&1
    ;;
*) echo "usage: pg.sh start|stop|restart-immediate DIR" >&2; exit 2 ;;
esac
