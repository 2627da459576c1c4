/* PGresult -> Lua: the exact value of each type, and a result's lifetime on the Lua stack. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"
#include "convert.h"

#define BOOLOID 16
#define BYTEAOID 17
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define OIDOID 26
#define FLOAT4OID 700
#define FLOAT8OID 701
#define TIMESTAMPTZOID 1184

#define KR_RESULT_BOX "kronos.result"

/* A PGresult held while Lua may raise (out of memory, a bad argument) is freed by __gc. */
static int box_gc(lua_State *L)
{
    PGresult **box = (PGresult **)luaL_checkudata(L, 1, KR_RESULT_BOX);
    kr_clearbox(box);
    return 0;
}

PGresult **kr_boxresult(lua_State *L, PGresult *res)
{
    PGresult **box = (PGresult **)lua_newuserdata(L, sizeof(PGresult *));
    *box = res;
    if (luaL_newmetatable(L, KR_RESULT_BOX)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

void kr_clearbox(PGresult **box)
{
    if (*box) PQclear(*box);
    *box = NULL;
}

#if LUA_VERSION_NUM < 503
/* LuaJIT numbers are doubles: integers beyond 2^53 stay exact as their decimal string. */
static void push_int8(lua_State *L, const char *s, size_t len)
{
    long long v;
    if (kr_parse_int8(s, len, &v) && v >= -9007199254740992LL && v <= 9007199254740992LL)
        lua_pushnumber(L, (lua_Number)v);
    else
        lua_pushlstring(L, s, len);
}
#else
static void push_int8(lua_State *L, const char *s, size_t len)
{
    long long v;
    if (kr_parse_int8(s, len, &v))
        lua_pushinteger(L, (lua_Integer)v);
    else
        lua_pushlstring(L, s, len);
}
#endif

static void push_bytea(lua_State *L, const char *s, size_t len)
{
    if (len >= 2 && s[0] == '\\' && s[1] == 'x' && len % 2 == 0) {
        /* Chunks of LUAL_BUFFERSIZE: luaL_buffinitsize is not in the 5.1 API. */
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        size_t pos = 2, ok = 1;
        while (ok && pos < len) {
            size_t hex = len - pos;
            if (hex > 2 * (size_t)LUAL_BUFFERSIZE) hex = 2 * (size_t)LUAL_BUFFERSIZE;
            char *out = luaL_prepbuffer(&b);
            size_t n = hex / 2;
            ok = kr_unhex_digits(s + pos, n, out);
            luaL_addsize(&b, n);
            pos += hex;
        }
        luaL_pushresult(&b);
        if (ok) return;
        lua_pop(L, 1);
    }
    /* bytea_output = escape: let libpq undo it */
    size_t n;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)s, &n);
    if (raw == NULL) luaL_error(L, "out of memory decoding bytea");
    lua_pushlstring(L, (const char *)raw, n);
    PQfreemem(raw);
}

void kr_pushvalue(lua_State *L, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        lua_pushnil(L);
        return;
    }
    const char *s = PQgetvalue(res, row, col);
    size_t len = (size_t)PQgetlength(res, row, col);
    switch (PQftype(res, col)) {
    case BOOLOID:
        lua_pushboolean(L, s[0] == 't');
        break;
    case INT2OID:
    case INT4OID:
    case INT8OID:
    case OIDOID:
        push_int8(L, s, len);
        break;
    case FLOAT4OID:
    case FLOAT8OID:
        lua_pushnumber(L, (lua_Number)kr_parse_double(s)); /* NaN, Infinity, -Infinity too */
        break;
    case BYTEAOID:
        push_bytea(L, s, len);
        break;
    case TIMESTAMPTZOID: {
        char iso[KR_ISO_MAX];
        size_t n = len < KR_ISO_MAX ? kr_iso_timestamptz(s, len, iso) : 0;
        if (n > 0)
            lua_pushlstring(L, iso, n);
        else
            lua_pushlstring(L, s, len);
        break;
    }
    default: /* text, varchar, numeric (exact as a string), uuid, date, json, arrays, ... */
        lua_pushlstring(L, s, len);
    }
}

void kr_pushcolnames(lua_State *L, const PGresult *res)
{
    int ncols = PQnfields(res);
    lua_createtable(L, ncols, 0);
    for (int j = 0; j < ncols; j++) {
        lua_pushstring(L, PQfname(res, j));
        lua_rawseti(L, -2, j + 1);
    }
}

/* names_idx: an array of column names (kr_pushcolnames), so each key is reused, not re-interned. */
void kr_pushrow(lua_State *L, const PGresult *res, int row, int ncols, int names_idx)
{
    lua_createtable(L, 0, ncols);
    for (int j = 0; j < ncols; j++) {
        lua_rawgeti(L, names_idx, j + 1);
        kr_pushvalue(L, res, row, j);
        lua_rawset(L, -3);
    }
}

void kr_pushrows(lua_State *L, const PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    luaL_checkstack(L, 8, "pushing rows");
    kr_pushcolnames(L, res);
    int names = lua_gettop(L);
    lua_createtable(L, nrows, 2);
    for (int i = 0; i < nrows; i++) {
        kr_pushrow(L, res, i, ncols, names);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushvalue(L, names);
    lua_setfield(L, -2, "columns");
    const char *affected = PQcmdTuples((PGresult *)res);
    long long n;
    if (affected && *affected && kr_parse_int8(affected, strlen(affected), &n)) {
        lua_pushinteger(L, (lua_Integer)n);
        lua_setfield(L, -2, "affected");
    }
    lua_remove(L, names);
}
