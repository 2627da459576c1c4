/* Classes: the metatables kronos registers by name (kronos.h lists the names) and the one test of
 * "is this value of class X". The bottom of the module: it uses no other file. */
#include "kronos.h"

int kr_testclass(lua_State *L, int idx, const char *name)
{
    if (!lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, name);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
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
