/* Class and argument checking shared by every part of the module. Every check raises a
 * "bad_argument" error object naming the Lua function (kr_error_arg), never a plain string. */
#include <string.h>

#include "kronos.h"

int kr_testclass(lua_State *L, int idx, const char *name)
{
    if (!lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, name);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

kr_conn *kr_checkconn_any(lua_State *L, int idx)
{
    kr_conn *c = lua_type(L, idx) == LUA_TUSERDATA && kr_testclass(L, idx, KR_CONN_CLASS)
                 ? (kr_conn *)lua_touserdata(L, idx) : NULL;
    if (c == NULL) kr_error_arg(L, idx, "kronos connection expected, got %s", luaL_typename(L, idx));
    return c;
}

kr_conn *kr_checkconn(lua_State *L, int idx)
{
    kr_conn *c = kr_checkconn_any(L, idx);
    if (c->pg == NULL) kr_error_arg(L, idx, "connection is closed");
    return c;
}

const char *kr_checktext(lua_State *L, int idx, size_t *len, const char *what)
{
    if (lua_type(L, idx) != LUA_TSTRING && lua_type(L, idx) != LUA_TNUMBER)
        kr_error_arg(L, idx, "string expected, got %s", luaL_typename(L, idx));
    const char *s = lua_tolstring(L, idx, len);
    if (memchr(s, '\0', *len) != NULL) kr_error_arg(L, idx, "%s contains a NUL byte", what);
    return s;
}

void kr_checkstack(lua_State *L, int n)
{
    if (!lua_checkstack(L, n)) kr_error_raise(L, "stack_overflow", "Lua stack overflow (%d more slots)", n);
}

void kr_newclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta)
{
    luaL_newmetatable(L, name);
    if (meta) luaL_setfuncs(L, meta, 0);
    if (methods) {
        lua_newtable(L);
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
}
