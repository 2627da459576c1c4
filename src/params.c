/* Lua values -> libpq parameters. Values always travel as parameters, never as SQL text. */
#include <stdio.h>
#include <string.h>

#include "kronos.h"
#include "convert.h"

/* Shortest text that reads back as the same double (as PostgreSQL's float8out does). */
static const char *push_double(lua_State *L, double d)
{
    char buf[KR_DOUBLE_MAX];
    lua_pushlstring(L, buf, kr_format_double(d, buf));
    return lua_tostring(L, -1);
}

static const char *push_integer(lua_State *L, long long v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", v);
    lua_pushstring(L, buf);
    return lua_tostring(L, -1);
}

/* The raw bytes of kronos.bytea(s), or NULL when the value is not one. */
static const char *tobytea(lua_State *L, int idx, size_t *len)
{
    if (!lua_istable(L, idx) || !kr_testclass(L, idx, KR_BYTEA_CLASS)) return NULL;
    lua_rawgeti(L, idx, 1);
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* still referenced by the bytea table, which stays on the stack */
    return s;
}

int kr_param_text(lua_State *L, kr_conn *c, int idx, int pos, const char **out, size_t *outlen)
{
    size_t len = 0;
    const char *s = NULL;
    int kind = KR_VAL_TEXT;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        kind = KR_VAL_NULL;
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL) kr_error_arg(L, idx, "parameter $%d: unsupported type userdata", pos);
        kind = KR_VAL_NULL; /* kronos.null, cjson.null, ngx.null */
        break;
    case LUA_TBOOLEAN:
        s = lua_toboolean(L, idx) ? "true" : "false";
        len = strlen(s);
        kind = KR_VAL_BOOL;
        break;
    case LUA_TNUMBER:
        s = kr_isinteger(L, idx) ? push_integer(L, kr_tointeger(L, idx)) : push_double(L, (double)lua_tonumber(L, idx));
        len = strlen(s);
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len)
            kr_error_arg(L, idx, "parameter $%d contains a NUL byte (send binary data with kronos.bytea)", pos);
        break;
    case LUA_TTABLE:
        s = tobytea(L, idx, &len);
        if (s != NULL) {
            kind = KR_VAL_BYTEA;
            break;
        }
        if (kr_testclass(L, idx, KR_ARRAY_CLASS)) {
            s = kr_array_literal(L, c, idx, pos, &len);
            break;
        }
        if (kr_testclass(L, idx, KR_JSON_CLASS)) {
            s = kr_json_encode(L, c, idx, pos, &len);
            break;
        }
        /* fall through */
    default:
        kr_error_arg(L, idx, "parameter $%d: unsupported type %s", pos, luaL_typename(L, idx));
    }
    if (len > 0x7fffffff) kr_error_arg(L, idx, "parameter $%d too large", pos);
    *out = s;
    *outlen = len;
    return kind;
}

void kr_checkparams_conn(lua_State *L, kr_conn *c, int first, int n, kr_params *p)
{
    if (n > 65535) kr_error_arg(L, first + 65535, "too many parameters (%d, at most 65535)", n);
    kr_checkstack(L, n + 4);
    p->n = n;
    if (n == 0) { /* most statements: nothing to allocate */
        p->values = NULL;
        p->lengths = p->formats = NULL;
        p->types = NULL;
        return;
    }
    size_t each = sizeof(char *) + 2 * sizeof(int) + sizeof(Oid);
    char *mem = lua_newuserdata(L, (size_t)n * each);
    p->values = (const char **)mem;
    p->lengths = (int *)(mem + (size_t)n * sizeof(char *));
    p->formats = p->lengths + n;
    p->types = (Oid *)(p->formats + n);
    for (int i = 0; i < n; i++) {
        const char *s;
        size_t len;
        int kind = kr_param_text(L, c, first + i, i + 1, &s, &len);
        p->formats[i] = kind == KR_VAL_BYTEA;
        p->types[i] = kind == KR_VAL_BYTEA ? BYTEAOID : kind == KR_VAL_BOOL ? BOOLOID : 0;
        p->values[i] = s;
        p->lengths[i] = (int)len;
    }
}

void kr_checkparams(lua_State *L, int first, int n, kr_params *p)
{
    kr_checkparams_conn(L, NULL, first, n, p);
}

/* kronos.bytea(s): marks a string to be sent as raw bytes. */
static int l_bytea(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) kr_error_arg(L, 1, "string expected, got %s", luaL_typename(L, 1));
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, KR_BYTEA_CLASS);
    return 1;
}

void kr_open_params(lua_State *L)
{
    kr_newclass(L, KR_BYTEA_CLASS, NULL, NULL);
    lua_pushcfunction(L, l_bytea);
    lua_setfield(L, -2, "bytea");
}
