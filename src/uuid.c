/* UUIDs from libuuid: kronos.uuid(), kronos.is_uuid(). */
#include <ctype.h>
#include <uuid/uuid.h>

#include "kronos.h"

void kr_uuid_format(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

void kr_pushuuid(lua_State *L)
{
    char text[37];
    kr_uuid_format(text);
    lua_pushlstring(L, text, 36);
}

/* Canonical 8-4-4-4-12 hex form, either case: what kronos stores and PostgreSQL prints. */
int kr_uuid_valid(const char *s, size_t len)
{
    if (len != 36) return 0;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return 0;
        } else if (!isxdigit((unsigned char)s[i])) {
            return 0;
        }
    }
    return 1;
}

static int l_uuid(lua_State *L)
{
    kr_pushuuid(L);
    return 1;
}

static int l_is_uuid(lua_State *L)
{
    size_t len;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
    lua_pushboolean(L, s != NULL && kr_uuid_valid(s, len));
    return 1;
}

void kr_open_uuid(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"uuid", l_uuid}, {"is_uuid", l_is_uuid}, {NULL, NULL}};
    luaL_setfuncs(L, funcs, 0);
}
