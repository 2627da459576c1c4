/* kronos: the `kronos` command as a program (make builds it into build/<lua>/bin/kronos; make
 * install and the rock install it as `kronos`). It runs the same Lua as `lua5.4 bin/kronos` (the
 * script, which runs the command from a checkout): bin/kronos and the modules of lua/kronos/, compiled in
 * as bytecode, with kronos.core linked in.
 *
 * Why a program: a service runs `kronos upgrade` at every start, and a new Lua process that
 * loads kronos.core pays twice over for it (bench/analysis.md, "Startup"). Lua's loader
 * dlopen()s core.so with RTLD_NOW, which binds every symbol of libpq's whole library tree
 * (libssl, libcrypto, GSSAPI, LDAP, ...), those of libraries built for lazy binding included,
 * from a lookup scope that starts with the interpreter's; linked here, the tree is bound at exec
 * like psql's, lazily where the libraries allow it. And the Lua source of the CLI and the
 * migration engine costs about 150 instructions a byte to parse, bytecode a tenth of that. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "chunks.h"

int luaopen_kronos_core(lua_State *L);

/* package.preload's loader of an embedded module (the kr_chunk is upvalue 1): runs its
 * bytecode with the module name, as require runs a file, and returns what it returns. */
static int load_embedded(lua_State *L)
{
    const kr_chunk *c = (const kr_chunk *)lua_touserdata(L, lua_upvalueindex(1));
    if (luaL_loadbuffer(L, (const char *)c->code, c->size, c->name) != 0) return lua_error(L);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 1;
}

/* Registers kronos.core (linked in) and every embedded module in package.preload, which require
 * searches first: this program's modules are the ones it was built with, whatever package.path
 * says. package.path still serves what is not embedded (migration modules such as
 * kronos.migrations, whose files are read for their checksums; lua-cjson; lua-readline). */
static void preload(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_kronos_core);
    lua_setfield(L, -2, "kronos.core");
    for (const kr_chunk *c = kr_chunks + 1; c->name; c++) {
        lua_pushlightuserdata(L, (void *)c);
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, c->name);
    }
    lua_pop(L, 2);
}

/* The global arg, as the lua program sets it for a script: arg[0] the script, arg[1..] the
 * arguments. arg[0] is this program's own path (/proc/self/exe), not argv[0], which is a bare
 * "kronos" when found on the PATH: bin/kronos finds the checkout or the installed modules next
 * to it. */
static void push_args(lua_State *L, int argc, char **argv)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    lua_createtable(L, argc, 1);
    if (n > 0) {
        lua_pushlstring(L, self, (size_t)n);
    } else {
        lua_pushstring(L, argc > 0 ? argv[0] : "kronos");
    }
    lua_rawseti(L, -2, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
}

/* The message handler of the main chunk: an error that escapes the CLI (which reports its own
 * as `kronos: ...`) comes with a traceback, as the lua program gives it; an error object reads
 * as its one-line __tostring (a kronos error: "message [code]"), not as "table". */
static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && luaL_callmeta(L, 1, "__tostring")) msg = lua_tostring(L, -1);
    luaL_traceback(L, L, msg ? msg : luaL_typename(L, 1), 1);
    return 1;
}

/* Sets up the state as the lua program does (its libraries; Lua 5.4's generational collector,
 * which lua5.4 selects too) and runs the main chunk, bin/kronos, which ends with os.exit. */
int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fputs("kronos: not enough memory\n", stderr);
        return 1;
    }
    lua_gc(L, LUA_GCSTOP, 0); /* as lua.c: no collection while the libraries open */
    luaL_openlibs(L);
    lua_gc(L, LUA_GCRESTART, 0);
#if LUA_VERSION_NUM >= 504
    lua_gc(L, LUA_GCGEN, 0, 0);
#endif
    preload(L);
    push_args(L, argc, argv);
    lua_pushcfunction(L, traceback);
    int status = luaL_loadbuffer(L, (const char *)kr_chunks[0].code, kr_chunks[0].size, "bin/kronos");
    if (status == 0) status = lua_pcall(L, 0, 0, -2);
    if (status != 0) fprintf(stderr, "kronos: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return status == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
