#!/bin/sh
# Prints the spec files a memory check runs (see .ci/run): every spec/*_spec.lua except those
# whose kronos code runs only where the checker cannot see it.
#   memory-specs.sh asan|valgrind
set -eu
cd "$(dirname "$0")/.."
# Built and run outside the checked interpreter: installed rocks, nginx's LuaJIT, make dev, make bench.
outside="rockspec openresty rolling dev bench"
case "${1:-}" in
asan) skip=$outside ;;
# valgrind wraps the busted process only: the CLI's own processes are checked by the ASan run.
valgrind) skip="$outside cli console concurrency" ;;
*) echo "usage: memory-specs.sh asan|valgrind" >&2; exit 2 ;;
esac
for f in spec/*_spec.lua; do
    name=$(basename "$f" _spec.lua)
    case " $skip " in *" $name "*) continue ;; esac
    printf '%s ' "$f"
done
echo
