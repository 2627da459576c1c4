/* Arrays and JSON, opt-in per connection.
 *
 * Results: conn:set_decode{arrays = true, json = decoder} (or kronos.connect{..., decode = {...}})
 * makes array columns of the scalar types kronos converts come back as Lua sequences (nested for
 * several dimensions), each element converted exactly as a column of its type is (kr_pushtext),
 * NULL elements as kronos.null so that sequences keep their length; json and jsonb columns go
 * through the decoder (e.g. cjson.decode). Without set_decode they stay the server's text.
 *
 * Parameters: kronos.array{...} sends an array literal with every element double-quoted and
 * escaped (so no element can be read as NULL, a delimiter or a nested array by accident); nested
 * plain tables are sub-arrays; nil (with t.n) and kronos.null are NULL. kronos.json(v) sends
 * v encoded by the connection's encoder (conn:set_encode{json = cjson.encode}). */
#include <string.h>

#include "kronos.h"
#include "pgarray.h"

#define JSONOID 114
#define JSONBOID 3802

/* The element type of the array types decoded, 0 for any other type. */
static Oid element_of(Oid type)
{
    switch (type) {
    case 1000: return 16;     /* bool */
    case 1001: return 17;     /* bytea */
    case 1005: return 21;     /* int2 */
    case 1007: return 23;     /* int4 */
    case 1016: return 20;     /* int8 */
    case 1028: return 26;     /* oid */
    case 1021: return 700;    /* float4 */
    case 1022: return 701;    /* float8 */
    case 1009: return 25;     /* text */
    case 1014: return 1042;   /* bpchar */
    case 1015: return 1043;   /* varchar */
    case 1003: return 19;     /* name */
    case 2951: return 2950;   /* uuid */
    case 1231: return 1700;   /* numeric */
    case 1185: return 1184;   /* timestamptz */
    case 1115: return 1114;   /* timestamp */
    case 1182: return 1082;   /* date */
    case 199: return JSONOID;
    case 3807: return JSONBOID;
    default: return 0;
    }
}

int kr_array_decodes(kr_conn *c, Oid type)
{
    if (c->decode_json && (type == JSONOID || type == JSONBOID)) return 1;
    return c->decode_arrays && element_of(type) != 0;
}

typedef struct {
    lua_State *L;
    Oid elem;
    int decoder;   /* stack index of the json decoder, 0 = none */
    int depth;
    int count[KR_PGARRAY_MAXDEPTH + 2];
} builder;

static int b_open(void *ud)
{
    builder *b = (builder *)ud;
    kr_checkstack(b->L, 4);
    lua_newtable(b->L);
    b->count[++b->depth] = 0;
    return 1;
}

static int b_close(void *ud)
{
    builder *b = (builder *)ud;
    if (--b->depth > 0) lua_rawseti(b->L, -2, ++b->count[b->depth]);
    return 1;
}

static int b_elem(void *ud, const char *s, size_t len)
{
    builder *b = (builder *)ud;
    lua_State *L = b->L;
    if (s == NULL) {
        lua_pushlightuserdata(L, NULL); /* kronos.null */
    } else if (b->decoder && (b->elem == JSONOID || b->elem == JSONBOID)) {
        lua_pushvalue(L, b->decoder);
        lua_pushlstring(L, s, len);
        lua_call(L, 1, 1);
    } else {
        kr_pushtext(L, b->elem, s, len);
    }
    lua_rawseti(L, -2, ++b->count[b->depth]);
    return 1;
}

/* Pushes the connection's json decoder (or nil). */
static void push_handler(lua_State *L, kr_conn *c, const char *key)
{
    kr_conn_env(L, c);
    lua_getfield(L, -1, key);
    lua_remove(L, -2);
}

void kr_array_push(lua_State *L, kr_conn *c, Oid type, const char *s, size_t len)
{
    int top = lua_gettop(L);
    push_handler(L, c, "json_decode");
    int decoder = lua_isfunction(L, -1) ? top + 1 : 0;
    if (type == JSONOID || type == JSONBOID) {
        lua_pushlstring(L, s, len);
        lua_call(L, 1, 1);
        return;
    }
    static const kr_pgarray_cb cb = {b_open, b_close, b_elem};
    builder b;
    memset(&b, 0, sizeof b);
    b.L = L;
    b.elem = element_of(type);
    b.decoder = decoder;
    char *scratch = (char *)lua_newuserdata(L, len + 1);
    int base = lua_gettop(L);
    if (kr_pgarray_parse(s, len, scratch, &cb, &b) && lua_gettop(L) == base + 1) {
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return;
    }
    lua_settop(L, top); /* not an array kronos can read: the server's text */
    lua_pushlstring(L, s, len);
}

/* ---- parameters ------------------------------------------------------------------------ */

static void add_part(lua_State *L, int parts, int *np, const char *s, size_t len)
{
    lua_pushlstring(L, s, len);
    lua_rawseti(L, parts, ++*np);
}

/* s as a double-quoted array element: backslash and double quote escaped. */
static void add_quoted(lua_State *L, int parts, int *np, const char *s, size_t len)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') luaL_addchar(&b, '\\');
        luaL_addchar(&b, s[i]);
    }
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
    lua_rawseti(L, parts, ++*np);
}

static void literal(lua_State *L, kr_conn *c, int t, int parts, int *np, int pos, int depth)
{
    if (depth > KR_PGARRAY_MAXDEPTH) kr_error_arg(L, pos, "parameter $%d: kronos.array nested too deep", pos);
    kr_checkstack(L, 8);
    lua_getfield(L, t, "n");
    lua_Integer n = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, t);
    lua_pop(L, 1);
    add_part(L, parts, np, "{", 1);
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) add_part(L, parts, np, ",", 1);
        lua_rawgeti(L, t, i);
        int v = lua_gettop(L);
        if (lua_istable(L, v) && !lua_getmetatable(L, v)) { /* a plain table: a sub-array */
            literal(L, c, v, parts, np, pos, depth + 1);
        } else if (lua_istable(L, v) && kr_testclass(L, v, KR_ARRAY_CLASS)) {
            lua_rawgeti(L, v, 1);
            literal(L, c, lua_gettop(L), parts, np, pos, depth + 1);
        } else {
            lua_settop(L, v);
            const char *s;
            size_t len;
            int kind = kr_param_text(L, c, v, pos, &s, &len);
            if (kind == KR_VAL_NULL) {
                add_part(L, parts, np, "NULL", 4);
            } else if (kind == KR_VAL_BYTEA) { /* bytea's hex input form */
                static const char hex[] = "0123456789abcdef";
                luaL_Buffer b;
                luaL_buffinit(L, &b);
                luaL_addstring(&b, "\\x");
                for (size_t k = 0; k < len; k++) {
                    luaL_addchar(&b, hex[(unsigned char)s[k] >> 4]);
                    luaL_addchar(&b, hex[(unsigned char)s[k] & 15]);
                }
                luaL_pushresult(&b);
                size_t hl;
                const char *h = lua_tolstring(L, -1, &hl);
                add_quoted(L, parts, np, h, hl);
            } else {
                add_quoted(L, parts, np, s, len);
            }
        }
        lua_settop(L, v - 1);
    }
    add_part(L, parts, np, "}", 1);
}

const char *kr_array_literal(lua_State *L, kr_conn *c, int idx, int pos, size_t *len)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    int parts = lua_gettop(L), np = 0;
    lua_rawgeti(L, idx, 1);
    if (!lua_istable(L, -1)) kr_error_arg(L, idx, "parameter $%d: kronos.array holds no table", pos);
    literal(L, c, lua_gettop(L), parts, &np, pos, 1);
    lua_settop(L, parts);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= np; i++) {
        lua_rawgeti(L, parts, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_remove(L, parts); /* the literal stays, where the parts were */
    return lua_tolstring(L, -1, len);
}

const char *kr_json_encode(lua_State *L, kr_conn *c, int idx, int pos, size_t *len)
{
    idx = lua_absindex(L, idx);
    if (c == NULL) kr_error_arg(L, idx, "parameter $%d: kronos.json needs a connection's encoder", pos);
    push_handler(L, c, "json_encode");
    if (!lua_isfunction(L, -1))
        kr_error_arg(L, idx, "parameter $%d: kronos.json needs an encoder: conn:set_encode{json = cjson.encode}", pos);
    lua_rawgeti(L, idx, 1);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        kr_error_arg(L, idx, "parameter $%d: the json encoder returned a %s, not a string", pos, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, len);
    if (strlen(s) != *len) kr_error_arg(L, idx, "parameter $%d: encoded JSON contains a NUL byte", pos);
    return s;
}

/* conn:set_decode{arrays = bool, json = fn | nil} -> conn */
static int l_set_decode(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (!lua_istable(L, 2)) kr_error_arg(L, 2, "table expected, got %s", luaL_typename(L, 2));
    lua_getfield(L, 2, "json");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) kr_error_arg(L, 2, "json must be a decoder function");
    lua_getfield(L, 2, "arrays");
    c->decode_arrays = lua_toboolean(L, -1);
    lua_pop(L, 1);
    c->decode_json = lua_isfunction(L, -1);
    kr_conn_env(L, c);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "json_decode");
    lua_settop(L, 1);
    return 1;
}

/* conn:set_encode{json = fn | nil} -> conn */
static int l_set_encode(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (!lua_istable(L, 2)) kr_error_arg(L, 2, "table expected, got %s", luaL_typename(L, 2));
    lua_getfield(L, 2, "json");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) kr_error_arg(L, 2, "json must be an encoder function");
    kr_conn_env(L, c);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "json_encode");
    lua_settop(L, 1);
    return 1;
}

/* kronos.array(t): t as an array parameter. */
static int l_array(lua_State *L)
{
    if (!lua_istable(L, 1)) kr_error_arg(L, 1, "table expected, got %s", luaL_typename(L, 1));
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, KR_ARRAY_CLASS);
    return 1;
}

/* kronos.json(v): v as a json parameter, encoded by the connection's encoder. */
static int l_json(lua_State *L)
{
    lua_settop(L, 1);
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, KR_JSON_CLASS);
    return 1;
}

void kr_open_array(lua_State *L)
{
    static const luaL_Reg fns[] = {{"set_decode", l_set_decode}, {"set_encode", l_set_encode}, {NULL, NULL}};
    kr_newclass(L, KR_ARRAY_CLASS, NULL, NULL);
    kr_newclass(L, KR_JSON_CLASS, NULL, NULL);
    kr_addmethods(L, fns);
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_pushcfunction(L, l_json);
    lua_setfield(L, -2, "json");
}
