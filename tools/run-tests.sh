#!/bin/sh
# Runs busted under the given interpreter against a private PostgreSQL cluster, or against
# $DATABASE_URL when it is set. The cluster is removed afterwards, also when tests fail.
#   run-tests.sh INTERPRETER BUSTED [busted args...]
set -u
lua=$1; busted=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build/$lua}
# Specs that run make themselves must not build into this directory by inheriting BUILD.
unset BUILD
if [ -z "${DATABASE_URL:-}" ]; then
    KRONOS_PGDIR=$(mktemp -d /tmp/kronos-test.XXXXXX)
    export KRONOS_PGDIR
    trap 'sh "$root/tools/pg.sh" stop "$KRONOS_PGDIR"; rm -rf "$KRONOS_PGDIR"' EXIT INT TERM
    DATABASE_URL=$(sh "$root/tools/pg.sh" start "$KRONOS_PGDIR") || exit 1
    export DATABASE_URL
fi
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;;"
export LUA_CPATH="$root/$build/?.so;;"
export KRONOS_LUA="$lua" KRONOS_ROOT="$root" KRONOS_BUILD="$build"
cd "$root" && ${KRONOS_WRAP:-} "$lua" "$busted" "$@"
