#!/bin/sh
# A private nginx (with the Lua module) for tests and for trying the OpenResty example.
#   nginx.sh start DIR [CONF]  make DIR the nginx prefix (conf/, logs/, tmp/, copies of the
#                              kronos tree), copy CONF (default examples/openresty/nginx.conf)
#                              with its `listen 127.0.0.1:8080` moved to a free loopback port,
#                              start nginx (daemon, pid in DIR/logs/nginx.pid) and print its
#                              base URL. When nginx refuses to start, the exit status is 1 and
#                              the tail of DIR/logs/error.log goes to stderr.
#   nginx.sh stop DIR          stop it (TERM, then KILL after a bounded wait); always safe
# nginx gets the caller's DATABASE_URL and KRONOS_MIGRATIONS through its `env` directives.
# As root, the workers run as nobody: DIR and the copies of the kronos tree in it are world-readable.
set -eu
cmd=${1:-}; dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then echo "usage: nginx.sh start DIR [CONF] | stop DIR" >&2; exit 2; fi
root=$(cd "$(dirname "$0")/.." && pwd)
nginx=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}

# shellcheck source=tools/lib.sh
. "$root/tools/lib.sh"

running() {
    [ -f "$dir/logs/nginx.pid" ] && alive "$(cat "$dir/logs/nginx.pid")"
}

case "$cmd" in
start)
    conf=${3:-$root/examples/openresty/nginx.conf}
    [ -x "$nginx" ] || { echo "nginx.sh: nginx not found (tools/deps.sh base installs it)" >&2; exit 1; }
    [ -f "$root/build/luajit/kronos/core.so" ] ||
        { echo "nginx.sh: build/luajit/kronos/core.so is missing: run make LUA=luajit" >&2; exit 1; }
    mkdir -p "$dir/conf" "$dir/logs" "$dir/tmp"
    chmod 755 "$dir"
    # The prefix mirrors an installed layout: lua/ (kronos), lib/ (kronos.core for LuaJIT),
    # app/ (the example's handlers), migrations/.
    # Copies, not links: the checkout may sit under a directory the workers (nobody) cannot
    # enter, such as /root.
    rm -rf "${dir:?}/lua" "${dir:?}/lib" "${dir:?}/app" "${dir:?}/migrations"
    mkdir -p "$dir/lib/kronos"
    cp -R "$root/lua" "$dir/lua"
    cp "$root/build/luajit/kronos/core.so" "$dir/lib/kronos/core.so"
    cp -R "$root/examples/openresty/lua" "$dir/app"
    cp -R "$root/migrations" "$dir/migrations"
    chmod -R a+rX "$dir/lua" "$dir/lib" "$dir/app" "$dir/migrations"
    # nginx and curl are not built with the sanitizers some suite runs preload.
    unset LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
    tries=0
    while :; do
        port=$(random_port)
        sed "s/127\.0\.0\.1:8080/127.0.0.1:$port/" "$conf" > "$dir/conf/nginx.conf"
        : > "$dir/logs/error.log"
        if "$nginx" -p "$dir/" -c conf/nginx.conf -e logs/error.log >"$dir/logs/start.log" 2>&1; then
            break
        fi
        cat "$dir/logs/start.log" >> "$dir/logs/error.log"
        tries=$((tries + 1))
        if ! grep -q "Address already in use" "$dir/logs/error.log" || [ $tries -ge 5 ]; then
            echo "nginx.sh: nginx refused to start ($dir/logs/error.log):" >&2
            tail -n 20 "$dir/logs/error.log" >&2
            exit 1
        fi
    done
    # The daemonised master writes its pid file a moment after the command returns.
    n=0
    while ! running && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
    running || { echo "nginx.sh: nginx started but wrote no pid file" >&2; exit 1; }
    echo "$port" > "$dir/port"
    echo "http://127.0.0.1:$port"
    ;;
stop)
    running || exit 0
    stop_pid "$(cat "$dir/logs/nginx.pid")"
    ;;
*) echo "usage: nginx.sh start DIR [CONF] | stop DIR" >&2; exit 2 ;;
esac
