#!/bin/sh
# make bench: kronos against Alembic, LuaSQL and libpq from C, on a private PostgreSQL server
# (started here in a temporary directory, stopped and removed on exit). Prints the table and
# writes bench/results.md. BENCH_RUNS (default 7, at least 5) sets the runs per median;
# BENCH_CASES=startup,migrate500,... runs a subset (results.md is then left alone); BENCH_BUILD=DIR
# measures kronos as built in DIR/lua5.4 and DIR/luajit (e.g. build, a test run's) instead of its own copy.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
sh tools/deps.sh base bench
# A private build: the shared build/ may be rebuilt by a concurrent `make` mid-run.
# BENCH_BUILD names another (spec/bench_spec.lua gives the suite's own, already built).
work=bench/work
bdir=${BENCH_BUILD:-$work/build}
make -s BUILD="$bdir/lua5.4"
make -s LUA=luajit BUILD="$bdir/luajit"
mkdir -p "$work/luajit"
pqinc=$(pg_config --includedir)
pqlib=$(pg_config --libdir)
# benchlib (clock, process runner) and the Lua floor of a read (bench/floor.c), for both Luas
for lua in lua5.4 luajit; do
    if [ "$lua" = luajit ]; then inc=/usr/include/luajit-2.1; out=$work/luajit; else inc=/usr/include/lua5.4; out=$work; fi
    cc -O2 -std=c11 -Wall -Wextra -Werror -fPIC -shared -I"$inc" bench/benchlib.c -o "$out/benchlib.so"
    cc -O2 -std=c11 -Wall -Wextra -Werror -fPIC -shared -I"$inc" -Isrc -I"$pqinc" bench/floor.c src/convert.c \
        -o "$out/floor.so" -L"$pqlib" -lpq
done
cc -O2 -std=c11 -Wall -Wextra -Werror -I"$pqinc" bench/pqbench.c -o "$work/pqbench" -L"$pqlib" -lpq -luuid
cc -O2 -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -I"$pqinc" bench/pipebench.c -o "$work/pipebench" -L"$pqlib" -lpq

pgdir=$(mktemp -d /tmp/kronos-bench.XXXXXX)
trap 'sh "$root/tools/pg.sh" stop "$pgdir"; rm -rf "$pgdir"' EXIT
trap 'exit 130' INT TERM
DATABASE_URL=$(sh tools/pg.sh start "$pgdir")
export DATABASE_URL
export KRONOS_ROOT="$root"
export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;$root/?.lua;;"
export LUA_CPATH="$root/$bdir/lua5.4/?.so;$root/$work/?.so;;"
export BENCH_BUILD_DIR="$bdir"
lua5.4 bench/bench.lua
