/* Decoding arrays and JSON of results, opt-in per connection (their parameters: params.c).
 *
 * conn:set_decode{arrays = true, json = decoder} (or kronos.connect{..., decode = {...}})
 * makes array columns of the scalar types kronos converts come back as Lua sequences (nested for
 * several dimensions), each element converted exactly as a column of its type is (kr_pushtext),
 * NULL elements as kronos.null so that sequences keep their length; json and jsonb columns go
 * through the decoder (e.g. cjson.decode). Without set_decode they stay the server's text.
 * conn:set_encode{json = fn} sets the encoder kronos.json(v) parameters use. */
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

void kr_open_array(lua_State *L)
{
    static const luaL_Reg fns[] = {{"set_decode", l_set_decode}, {"set_encode", l_set_encode}, {NULL, NULL}};
    kr_addmethods(L, fns);
}
