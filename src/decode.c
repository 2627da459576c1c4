/* Results with the connection's decoders: arrays and JSON, opt-in per connection (their
 * parameters: params.c).
 *
 * conn:set_decode{arrays = true, json = decoder} (or kronos.connect{..., decode = {...}})
 * makes array columns of the scalar types kronos converts come back as Lua sequences (nested for
 * several dimensions), each element converted exactly as a column of its type is (kr_pushtext),
 * NULL elements as kronos.null so that sequences keep their length; json and jsonb columns go
 * through the decoder (e.g. cjson.decode). Without set_decode they stay the server's text.
 * kr_decode_rows and kr_decode_row are the one way results become rows on a connection: the
 * conversion of result.c, then the decoded columns replaced in place. */
#include <string.h>

#include "kronos.h"
#include "option.h"
#include "pgarray.h"

/* The element type of the array types decoded (kronos.h's OIDs), 0 for any other type. */
static Oid element_of(Oid type)
{
    switch (type) {
    case BOOLARRAYOID: return BOOLOID;
    case BYTEAARRAYOID: return BYTEAOID;
    case INT2ARRAYOID: return INT2OID;
    case INT4ARRAYOID: return INT4OID;
    case INT8ARRAYOID: return INT8OID;
    case OIDARRAYOID: return OIDOID;
    case FLOAT4ARRAYOID: return FLOAT4OID;
    case FLOAT8ARRAYOID: return FLOAT8OID;
    case TEXTARRAYOID: return TEXTOID;
    case BPCHARARRAYOID: return BPCHAROID;
    case VARCHARARRAYOID: return VARCHAROID;
    case NAMEARRAYOID: return NAMEOID;
    case UUIDARRAYOID: return UUIDOID;
    case NUMERICARRAYOID: return NUMERICOID;
    case TIMESTAMPTZARRAYOID: return TIMESTAMPTZOID;
    case TIMESTAMPARRAYOID: return TIMESTAMPOID;
    case DATEARRAYOID: return DATEOID;
    case JSONARRAYOID: return JSONOID;
    case JSONBARRAYOID: return JSONBOID;
    default: return 0;
    }
}

/* 1 when a column of this type is decoded on c. */
static int decodes(kr_conn *c, Oid type)
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

/* One value of a decoded column (decodes(c, type)): its Lua value pushed; text that is not an
 * array kronos can read stays the server's text. */
static void push_decoded(lua_State *L, kr_conn *c, Oid type, const char *s, size_t len)
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

/* A result in the given shape, then the array and JSON columns decoded in place when the
 * connection asks for it. */
void kr_decode_rows(lua_State *L, kr_conn *c, const PGresult *res, int shape)
{
    kr_pushrows_as(L, res, shape);
    if (!c->decode_arrays && !c->decode_json) return;
    int ncols = PQnfields(res), nrows = PQntuples(res);
    for (int j = 0; j < ncols; j++) {
        Oid type = PQftype(res, j);
        if (!decodes(c, type)) continue;
        const char *name = PQfname(res, j);
        if (shape == KR_ROWS_COLUMNS) lua_rawgeti(L, -1, j + 1);
        for (int i = 0; i < nrows; i++) {
            if (PQgetisnull(res, i, j)) continue;
            if (shape != KR_ROWS_COLUMNS) lua_rawgeti(L, -1, i + 1);
            push_decoded(L, c, type, PQgetvalue(res, i, j), (size_t)PQgetlength(res, i, j));
            if (shape == KR_ROWS_COLUMNS) {
                lua_rawseti(L, -2, i + 1);
            } else {
                if (shape == KR_ROWS_ARRAYS)
                    lua_rawseti(L, -2, j + 1);
                else
                    lua_setfield(L, -2, name);
                lua_pop(L, 1);
            }
        }
        if (shape == KR_ROWS_COLUMNS) lua_pop(L, 1);
    }
}

/* One row of a single-row result, with the connection's decoders; names at names_idx. */
void kr_decode_row(lua_State *L, kr_conn *c, const PGresult *res, int names_idx)
{
    names_idx = lua_absindex(L, names_idx);
    kr_pushrow(L, res, 0, PQnfields(res), names_idx);
    if (!c->decode_arrays && !c->decode_json) return;
    for (int j = 0; j < PQnfields(res); j++) {
        Oid type = PQftype(res, j);
        if (PQgetisnull(res, 0, j) || !decodes(c, type)) continue;
        push_decoded(L, c, type, PQgetvalue(res, 0, j), (size_t)PQgetlength(res, 0, j));
        lua_rawgeti(L, names_idx, j + 1);
        lua_insert(L, -2);
        lua_rawset(L, -3);
    }
}

/* The decode options {arrays = bool, json = fn} at t, read through option.c's reader (arg and path
 * name the table in a bad_argument: "opts.arrays: boolean expected"), all checked before any is
 * set on c; an absent key turns its decoding off (see kronos.h). */
void kr_decode_options(lua_State *L, kr_conn *c, int t, int arg, const char *path)
{
    static const char *const keys[] = {"arrays", "json", NULL};
    t = lua_absindex(L, t);
    kr_option_checkfields(L, t, arg, path, keys);
    int arrays = kr_option_bool(L, t, arg, path, "arrays", 0);
    int json = kr_option_typed(L, t, arg, path, "json", LUA_TFUNCTION); /* pushed, or nil */
    kr_conn_env(L, c);
    lua_insert(L, -2);
    lua_setfield(L, -2, "json_decode");
    lua_pop(L, 1);
    c->decode_arrays = arrays;
    c->decode_json = json;
}

/* conn:set_decode{arrays = bool, json = fn | nil} -> conn */
int kr_decode_set(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    kr_checktable(L, 2);
    kr_decode_options(L, c, 2, 2, "opts");
    lua_settop(L, 1);
    return 1;
}
