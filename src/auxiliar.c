/* Class checking shared by every part of the module. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"

kr_conn *kr_checkconn(lua_State *L, int idx)
{
    kr_conn *c = (kr_conn *)luaL_testudata(L, idx, KR_CONN_CLASS);
    if (c == NULL) {
        const char *got = luaL_typename(L, idx);
        luaL_argerror(L, idx, lua_pushfstring(L, "kronos connection expected, got %s", got));
    }
    if (c->pg == NULL) luaL_argerror(L, idx, "connection is closed");
    return c;
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

