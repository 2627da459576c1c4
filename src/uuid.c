/* UUIDs from libuuid: kronos.uuid(), kronos.is_uuid() (the text check is validate.c's). */
#include <uuid/uuid.h>

#include "kronos.h"
#include "validate.h"

void kr_uuid_format(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

static int l_uuid(lua_State *L)
{
    char text[37];
    kr_uuid_format(text);
    lua_pushlstring(L, text, 36);
    return 1;
}

static int l_is_uuid(lua_State *L)
{
    size_t len;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
    lua_pushboolean(L, s != NULL && kr_check_uuid(s, len));
    return 1;
}

void kr_open_uuid(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"uuid", l_uuid}, {"is_uuid", l_is_uuid}, {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
