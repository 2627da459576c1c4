# make check-memory [LUA=lua5.4|luajit] [MEMCHECK=asan|valgrind|both] [VALGRIND_SPECS="spec/a_spec.lua ..."] [ASAN_SPECS=...]
# make check-memory [LUA=lua5.4|luajit] [MEMCHECK=asan|valgrind|both] [VALGRIND_SPECS="spec/a_spec.lua ..."]
#
# 1. AddressSanitizer + UBSan: kronos.core is built with -fsanitize=address,undefined into
#    build/$LUA-asan and the whole busted suite runs under an interpreter with gcc's ASan runtime
#    preloaded, leak detection on, UBSan halting on the first error.
# 2. valgrind memcheck: the normal build, the busted process under valgrind, over the whole suite
#    (about 40 s today; VALGRIND_SPECS narrows it, e.g. to the foundation and users specs, should
#    the suite outgrow CI's budget).
# Any sanitizer report or valgrind error from a Lua process fails the run, as does a failing spec.
set -u
lua=${1:-lua5.4}
mode=${MEMCHECK:-both}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
busted=${BUSTED:-/usr/bin/busted}
valgrind_specs=${VALGRIND_SPECS:-spec}
case "$lua" in
luajit) interp=$(command -v luajit) ;;
*) interp=$(command -v "$lua") ;;
esac
[ -n "$interp" ] || { echo "check-memory: no $lua interpreter" >&2; exit 1; }
sh tools/deps.sh base memory || exit 1
# nginx in the OpenResty spec loads the plain LuaJIT build whatever LUA is
make -s LUA=luajit >/dev/null || exit 1
status=0

run_asan() {
    build=build/$lua-asan
    san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    make -s LUA="$lua" VARIANT=-asan CFLAGS="-O1 -g" XCFLAGS="$san" XLDFLAGS="$san" || return 1
    libasan=$(${CC:-cc} -print-file-name=libasan.so)
    [ -f "$libasan" ] || { echo "check-memory: no libasan.so for ${CC:-cc}" >&2; return 1; }
    # The preload must reach Lua processes only: the shim takes LD_PRELOAD out of the
    # interpreter's environment, so nginx, pgbouncer, postgres and shells start clean, while a
    # spec that starts Lua again goes through $KRONOS_LUA, the wrapper, and is checked as well.
    # The shim also keeps dlopen'ed modules mapped (lua_close would unload kronos/core.so and
    # libpq before LeakSanitizer runs, leaving its stacks without names), and libstdbuf makes
    # stdout line-buffered: LeakSanitizer _exit()s before stdio would flush busted's summary.
    mkdir -p "$build/bin"
    printf '%s\n' '#include <stdlib.h>' \
        'static void __attribute__((constructor)) kr_unpreload(void) { unsetenv("LD_PRELOAD"); }' \
        'int dlclose(void *handle);' \
        'int dlclose(void *handle) { (void)handle; return 0; }' > "$build/shim.c"
    ${CC:-cc} -shared -fPIC -o "$build/shim.so" "$build/shim.c" || return 1
    stdbuf=/usr/libexec/coreutils/libstdbuf.so
    [ -f "$stdbuf" ] || stdbuf=""
    wrapper=$root/$build/bin/$lua
    cat > "$wrapper" <<EOF
#!/bin/sh
_STDBUF_O=L LD_PRELOAD="$libasan $root/$build/shim.so $stdbuf" exec "$interp" "\$@"
EOF
    chmod 755 "$wrapper"
    logs=$(mktemp -d /tmp/kronos-asan.XXXXXX)
    chmod 1777 "$logs"
    ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:log_path=$logs/asan:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
    LSAN_OPTIONS="suppressions=$root/tools/lsan.supp:print_suppressions=0"
    UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
    sym=$(ls /usr/lib/llvm-*/bin/llvm-symbolizer 2>/dev/null | tail -n 1)
    [ -n "$sym" ] && export ASAN_SYMBOLIZER_PATH="$sym"
    export ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
    echo "check-memory: ASan+UBSan, $lua, ${ASAN_SPECS:-spec}"
    BUILD=$build sh tools/run-tests.sh "$wrapper" "$busted" -o utfTerminal ${ASAN_SPECS:-spec}
    rc=$?
    unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
    if ls "$logs"/* >/dev/null 2>&1; then
        echo "check-memory: sanitizer reports:" >&2
        cat "$logs"/* >&2
        rc=1
    fi
    rm -rf "$logs"
    [ $rc -eq 0 ] && echo "check-memory: ASan+UBSan clean" || echo "check-memory: ASan+UBSan FAILED" >&2
    return $rc
}

run_valgrind() {
    make -s LUA="$lua" || return 1
    build=build/$lua
    supp="--suppressions=$root/tools/valgrind.supp"
    logs=$(mktemp -d /tmp/kronos-valgrind.XXXXXX)
    echo "check-memory: valgrind memcheck, $lua, $valgrind_specs"
    # shellcheck disable=SC2086
    KRONOS_WRAP="valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
--show-leak-kinds=definite,indirect --num-callers=30 --keep-debuginfo=yes $supp --log-file=$logs/vg.%p" \
        BUILD=$build sh tools/run-tests.sh "$lua" "$busted" -o utfTerminal $valgrind_specs
    rc=$?
    if grep -l "ERROR SUMMARY: [1-9]" "$logs"/vg.* >/dev/null 2>&1; then
        grep -L "ERROR SUMMARY: 0 " "$logs"/vg.* | xargs cat >&2
        rc=1
    fi
    rm -rf "$logs"
    [ $rc -eq 0 ] && echo "check-memory: valgrind clean" || echo "check-memory: valgrind FAILED" >&2
    return $rc
}

case "$mode" in
asan) run_asan || status=1 ;;
valgrind) run_valgrind || status=1 ;;
both) run_asan || status=1; run_valgrind || status=1 ;;
*) echo "check-memory: MEMCHECK is asan, valgrind or both" >&2; exit 2 ;;
esac
exit $status
