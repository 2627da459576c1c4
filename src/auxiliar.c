/* Class and argument checking shared by every part of the module. Every check raises a
 * "bad_argument" error object naming the Lua function (kr_error_arg), never a plain string. */
#include <string.h>

#include "kronos.h"

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

const char *kr_opttext(lua_State *L, int idx, const char *def, const char *what)
{
    size_t len;
    return lua_isnoneornil(L, idx) ? def : kr_checktext(L, idx, &len, what);
}

const char *kr_checkbytes(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING) kr_error_arg(L, idx, "string expected, got %s", luaL_typename(L, idx));
    return lua_tolstring(L, idx, len);
}

void kr_checktable(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TTABLE) kr_error_arg(L, idx, "table expected, got %s", luaL_typename(L, idx));
}

void kr_checkstack(lua_State *L, int n)
{
    if (!lua_checkstack(L, n)) kr_error_raise(L, "stack_overflow", "Lua stack overflow (%d more slots)", n);
}
