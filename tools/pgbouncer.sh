#!/bin/sh
# A private PgBouncer in transaction pooling mode, for tests.
#   pgbouncer.sh start DIR URL  write DIR/pgbouncer.ini (every database of the server at URL,
#                               a postgresql://user[:password]@host:port/db URL; trust auth
#                               for URL's user; a free loopback port), start pgbouncer and print
#                               the URL that reaches URL's database through it
#   pgbouncer.sh stop DIR       stop it (TERM, then KILL after a bounded wait); always safe
# As root, pgbouncer (which refuses to run as root) runs as the `postgres` user.
set -eu
cmd=${1:-}; dir=${2:-}
usage() { echo "usage: pgbouncer.sh start DIR URL | stop DIR" >&2; exit 2; }
if [ -z "$cmd" ] || [ -z "$dir" ]; then usage; fi
pgbouncer=${PGBOUNCER:-$(command -v pgbouncer || echo /usr/sbin/pgbouncer)}

# shellcheck source=tools/lib.sh
. "$(dirname "$0")/lib.sh"

running() {
    [ -f "$dir/pgbouncer.pid" ] && alive "$(cat "$dir/pgbouncer.pid")"
}

case "$cmd" in
start)
    url=${3:-}
    [ -n "$url" ] || usage
    [ -x "$pgbouncer" ] || { echo "pgbouncer.sh: pgbouncer not found (tools/deps.sh base installs it)" >&2; exit 1; }
    # postgresql://[user[:password]@]host[:port][/db][?query]
    rest=${url#*://}
    case "$rest" in *@*) cred=${rest%%@*}; rest=${rest#*@} ;; *) cred=${USER:-postgres} ;; esac
    user=${cred%%:*}
    password=""
    case "$cred" in *:*) password=${cred#*:} ;; esac
    hostport=${rest%%[/?]*}
    host=${hostport%:*}
    port=5432
    case "$hostport" in *:*) port=${hostport##*:} ;; esac
    db=${rest#"$hostport"}; db=${db#/}; db=${db%%\?*}
    query=""
    case "$rest" in *\?*) query="?${rest#*\?}" ;; esac
    mkdir -p "$dir"
    umask 077
    # Passwords stay in this 0600 file, never on a command line.
    printf '"%s" ""\n' "$user" > "$dir/userlist.txt"
    serverpw=""
    [ -n "$password" ] && serverpw=" password=$password"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
    unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
    tries=0
    while :; do
        lport=$(random_port)
        cat > "$dir/pgbouncer.ini" <<INI
[databases]
* = host=$host port=$port user=$user$serverpw

[pgbouncer]
pool_mode = transaction
listen_addr = 127.0.0.1
listen_port = $lport
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
max_client_conn = 200
default_pool_size = 8
; what some drivers send at startup; kronos itself sends only what PgBouncer tracks
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
INI
        [ "$(id -u)" = 0 ] && chown postgres: "$dir/pgbouncer.ini"
        rm -f "$dir/pgbouncer.log"; touch "$dir/pgbouncer.log"; [ "$(id -u)" = 0 ] && chown postgres: "$dir/pgbouncer.log"
        if as_owner "$pgbouncer" -d -q "$dir/pgbouncer.ini" >"$dir/start.log" 2>&1; then
            # It daemonises before it listens: wait for the log to say it listens, or dies.
            n=0
            while [ $n -lt 100 ]; do
                grep -q "listening on 127.0.0.1:$lport" "$dir/pgbouncer.log" && break
                grep -q "FATAL\|ERROR" "$dir/pgbouncer.log" && break
                sleep 0.05; n=$((n + 1))
            done
            if grep -q "listening on 127.0.0.1:$lport" "$dir/pgbouncer.log"; then break; fi
        fi
        sh "$0" stop "$dir"
        tries=$((tries + 1))
        if ! grep -q "Address already in use" "$dir/pgbouncer.log" "$dir/start.log" || [ $tries -ge 5 ]; then
            echo "pgbouncer.sh: pgbouncer did not start:" >&2
            tail -n 20 "$dir/start.log" "$dir/pgbouncer.log" >&2
            exit 1
        fi
    done
    echo "$lport" > "$dir/port"
    echo "postgresql://$cred@127.0.0.1:$lport/$db$query"
    ;;
stop)
    running || exit 0
    stop_pid "$(cat "$dir/pgbouncer.pid")"
    ;;
*) usage ;;
esac
