#!/bin/sh
# make fuzz [FUZZ_SECONDS=60]: builds every libFuzzer target fuzz/<name>.c with Debian's clang
# (-fsanitize=fuzzer,address,undefined), linking only the src/*.c files and libraries its
# "fuzz-link:" comment names; replays the committed crash inputs fuzz/crashes/<name>/* (the
# regressions); then fuzzes each target for FUZZ_SECONDS seconds from its committed seeds
# fuzz/corpus/<name>/. New corpus entries go to a scratch directory, never into the checkout.
# A finding leaves its input in build/fuzz/<name>-crash-*: fix the code, then commit the input
# under fuzz/crashes/<name>/ so every later run replays it.
#   tools/fuzz.sh [SECONDS] [TARGET...]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-}
[ -n "$secs" ] || secs=${FUZZ_SECONDS:-60}
[ $# -gt 0 ] && shift
sh tools/deps.sh fuzz
CC=${FUZZ_CC:-clang}
out=build/fuzz
mkdir -p "$out"
pqinc=$(pg_config --includedir)
flags="-std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -Wall -Wextra -Werror -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Isrc -I/usr/include/lua5.4 -I$pqinc"
targets=$*
[ -n "$targets" ] || targets=$(for f in fuzz/*.c; do basename "$f" .c; done)
scratch=$(mktemp -d /tmp/kronos-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for name in $targets; do
    src=fuzz/$name.c
    # "/* fuzz-link: a.c b.c */", or "// fuzz-link: src/*.c ..." where a glob must not end a comment
    link=$(sed -n -e 's|.*fuzz-link:\(.*\)\*/.*|\1|p' -e 's|^// fuzz-link:\(.*\)|\1|p' "$src" | head -n 1)
    # shellcheck disable=SC2086
    $CC $flags "$src" $link -o "$out/$name"
    if [ -d "fuzz/crashes/$name" ] && [ -n "$(ls -A "fuzz/crashes/$name")" ]; then
        if ! "$out/$name" -runs=1 "fuzz/crashes/$name"/* >"$out/$name.replay.log" 2>&1; then
            echo "fuzz: $name FAILED replaying fuzz/crashes/$name (see $out/$name.replay.log)"
            tail -n 30 "$out/$name.replay.log"
            status=1
            continue
        fi
    fi
    mkdir -p "$scratch/$name"
    dict=""
    [ -f "fuzz/$name.dict" ] && dict="-dict=fuzz/$name.dict"
    # shellcheck disable=SC2086
    if "$out/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 $dict \
         -artifact_prefix="$out/$name-" "$scratch/$name" "fuzz/corpus/$name" >"$out/$name.log" 2>&1; then
        runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out/$name.log")
        echo "fuzz: $name ok (${runs:-?} runs in ${secs}s)"
    else
        echo "fuzz: $name FAILED (log: $out/$name.log; input: $(ls "$out/$name"-* 2>/dev/null | grep -v '\.log$' | head -n 1))"
        grep -E 'property failed|ERROR|SUMMARY|runtime error' "$out/$name.log" | head -n 10
        status=1
    fi
done
exit $status
