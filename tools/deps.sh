#!/bin/sh
# Installs the Debian packages a group needs, only when some are missing (fast no-op otherwise).
# Groups: base (build, tests, lint, integration), bench, fuzz, memory.
# base has git and PUC Lua 5.1's headers for spec/rockspec_spec.lua (fresh clones; a build for
# an unsupported lua.h must fail), lua-cjson for the kronos command (kronos --json).
set -eu
pkgs=""
for group in "$@"; do
    case "$group" in
    base) pkgs="$pkgs gcc make pkg-config lua5.4 liblua5.4-dev luajit2 libluajit2-5.1-dev libpq-dev
                 lua-busted lua-check cppcheck lua-cjson lua-readline luarocks postgresql postgresql-contrib
                 nginx libnginx-mod-http-lua pgbouncer curl procps git liblua5.1-0-dev alembic python3-psycopg2" ;;
    bench) pkgs="$pkgs alembic python3-psycopg2 lua-sql-postgres valgrind uuid-dev" ;;
    fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    memory) pkgs="$pkgs valgrind clang libclang-rt-14-dev" ;;
    *) echo "deps.sh: unknown group $group" >&2; exit 2 ;;
    esac
done
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
# Debian's nginx package starts a system nginx on port 80; kronos runs its own instances.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx pgbouncer postgresql >/dev/null 2>&1 || true; fi
exit 0
