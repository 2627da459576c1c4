// fuzz-link: src/*.c -llua5.4 -lpq
/* libFuzzer target: server text -> Lua values through kr_pushvalue/kr_pushrows_as (src/result.c),
 * for each type kronos converts. The first input byte picks the column type; the rest is the
 * server's text, put into a real PGresult with libpq's own constructors. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz.h"
#include "kronos.h"
#include "convert.h"

/* each type kronos converts (kronos.h), and ones it keeps as text */
static const Oid types[] = {BOOLOID, BYTEAOID, INT8OID, INT2OID, INT4OID, OIDOID, FLOAT4OID, FLOAT8OID,
                            TIMESTAMPTZOID, NUMERICOID, TEXTOID, UUIDOID, DATEOID};
#define NTYPES (sizeof types / sizeof types[0])

static PGresult *one_value(Oid type, const char *s, int len)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    if (res == NULL) abort();
    PGresAttDesc att;
    memset(&att, 0, sizeof att);
    att.name = (char *)"v";
    att.typid = type;
    att.typlen = -1;
    att.atttypmod = -1;
    if (!PQsetResultAttrs(res, 1, &att) || !PQsetvalue(res, 0, 0, (char *)s, len)) abort();
    return res;
}

static void check_value(lua_State *L, Oid type, const char *s, size_t len)
{
    long long v;
    size_t n;
    switch (type) {
    case BOOLOID:
        CHECK(lua_type(L, -1) == LUA_TBOOLEAN);
        break;
    case INT8OID: case INT2OID: case INT4OID: case OIDOID:
        if (lua_type(L, -1) == LUA_TSTRING) { /* not an integer (or beyond 2^53 on LuaJIT): the text */
            const char *t = lua_tolstring(L, -1, &n);
            CHECK(n == len && memcmp(t, s, len) == 0);
        } else {
            CHECK(lua_type(L, -1) == LUA_TNUMBER);
            CHECK(kr_parse_int8(s, len, &v));
#if LUA_VERSION_NUM >= 503
            CHECK(lua_isinteger(L, -1) && lua_tointeger(L, -1) == v);
#endif
        }
        break;
    case FLOAT4OID: case FLOAT8OID:
        CHECK(lua_type(L, -1) == LUA_TNUMBER);
        break;
    case BYTEAOID:
        CHECK(lua_type(L, -1) == LUA_TSTRING);
        lua_tolstring(L, -1, &n);
        if (len >= 2 && s[0] == '\\' && s[1] == 'x' && len % 2 == 0) {
            char *raw = malloc(len);
            if (raw == NULL) abort();
            if (kr_unhex_bytea(s, len, raw) != (size_t)-1) CHECK(n == (len - 2) / 2);
            free(raw);
        }
        break;
    case TIMESTAMPTZOID: {
        char iso[KR_ISO_MAX];
        const char *t = lua_tolstring(L, -1, &n);
        size_t m = len < KR_ISO_MAX ? kr_iso_timestamptz(s, len, iso) : 0;
        if (m > 0)
            CHECK(n == m && memcmp(t, iso, m) == 0);
        else
            CHECK(n == len && memcmp(t, s, len) == 0);
        break;
    }
    default: { /* numeric and the other text types: exactly the server's bytes, NULs included */
        const char *t = lua_tolstring(L, -1, &n);
        CHECK(t != NULL && n == len && memcmp(t, s, len) == 0);
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20)) return 0;
    Oid type = types[data[0] % NTYPES];
    int isnull = data[0] >= 0xF0;
    size_t len = size - 1;
    /* libpq stores a value with a terminating NUL, as it does for results from the server */
    PGresult *res = one_value(type, (const char *)data + 1, isnull ? -1 : (int)len);
    const char *s = PQgetvalue(res, 0, 0);
    lua_State *L = luaL_newstate();
    if (L == NULL) abort();
    kr_pushvalue(L, res, 0, 0);
    if (isnull)
        CHECK(lua_isnil(L, -1));
    else
        check_value(L, type, s, len);
    lua_settop(L, 0);
    kr_pushrows_as(L, res, KR_ROWS_NAMED); /* the whole-result path: names, rows, affected */
    CHECK(lua_istable(L, -1) && lua_rawlen(L, -1) == 1);
    PQclear(res);
    lua_close(L);
    return 0;
}
