# shellcheck shell=sh
# Sourced by tools/pg.sh, nginx.sh and pgbouncer.sh: ports and processes.

# Runs a command as the servers' user: `postgres` when we are root (servers refuse root).
as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A port in 20000-49999 for a private server; the caller retries when it is taken.
random_port() {
    echo $(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 ))
}

# A live process: a zombie (a daemon whose exit nobody reaped yet) counts as gone.
alive() {
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    case "$st" in Z*|"") return 1 ;; esac
}

# stop_pid PID: TERM, up to 5 s for it to go, then KILL (its children first: nginx workers).
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    n=0
    while alive "$1" && [ $n -lt 100 ]; do sleep 0.05; n=$((n + 1)); done
    if alive "$1"; then
        pkill -KILL -P "$1" 2>/dev/null || true
        kill -KILL "$1" 2>/dev/null || true
    fi
}
