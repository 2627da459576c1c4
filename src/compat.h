/* One C source for Lua 5.4 and LuaJIT 2.1 (5.1 C API).
 * LuaJIT 2.1 already exports luaL_setfuncs, luaL_setmetatable and luaL_testudata,
 * so only what neither provides is bridged here. */
#ifndef KRONOS_COMPAT_H
#define KRONOS_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

/* The runtimes kronos supports: Lua 5.4 and LuaJIT 2.1. Any other lua.h stops the build here,
 * with this message, rather than producing a module that fails when it is loaded (PUC Lua 5.1
 * lacks luaL_setfuncs, 5.2 and 5.3 are untested). LuaJIT's luaconf.h defines LUA_LJDIR. */
#if LUA_VERSION_NUM == 501 && defined(LUA_LJDIR)
#include <luajit.h>
#if LUAJIT_VERSION_NUM < 20100
#error "kronos needs LuaJIT 2.1 or later: these LuaJIT headers are older (see README, Installing)"
#endif
#elif LUA_VERSION_NUM != 504
#error "kronos builds for Lua 5.4 or LuaJIT 2.1 only: this lua.h is another Lua (PUC 5.1, 5.2 or 5.3). Use luarocks --lua-version 5.4, or the LuaJIT command of the README (Installing)"
#endif

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#define luaL_len(L, i) ((lua_Integer)lua_objlen((L), (i)))
#define lua_absindex(L, i) (((i) > 0 || (i) <= LUA_REGISTRYINDEX) ? (i) : lua_gettop(L) + (i) + 1)
/* Exact integers: 5.1 has only doubles, exact up to 2^53. */
static inline int kr_isinteger(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER) return 0;
    lua_Number n = lua_tonumber(L, idx);
    /* range first: converting NaN or a huge double to long long is undefined */
    return n >= -9007199254740992.0 && n <= 9007199254740992.0 && n == (lua_Number)(long long)n;
}
#define kr_tointeger(L, i) ((long long)lua_tonumber((L), (i)))
#else
#define kr_isinteger(L, i) lua_isinteger((L), (i))
#define kr_tointeger(L, i) ((long long)lua_tointeger((L), (i)))
#endif

/* A userdata's one user value (a table): Lua 5.4's uservalue 1, LuaJIT's environment. */
#if LUA_VERSION_NUM >= 504
#define kr_getuservalue(L, i) ((void)lua_getiuservalue((L), (i), 1))
#define kr_setuservalue(L, i) ((void)lua_setiuservalue((L), (i), 1))
#else
#define kr_getuservalue(L, i) lua_getfenv((L), (i))
#define kr_setuservalue(L, i) ((void)lua_setfenv((L), (i)))
#endif

#endif
