/* PGresult -> Lua: the exact value of each type, and a result's lifetime on the Lua stack. */
#include <string.h>

#include "kronos.h"
#include "convert.h"

/* A PGresult held while Lua may raise (out of memory, a bad argument) is freed by __gc. */
static int box_gc(lua_State *L)
{
    kr_clearbox((PGresult **)lua_touserdata(L, 1));
    return 0;
}

/* Boxes res before anything can raise. Its class is registered here on first use rather than by
 * kr_newclass at open: boxes are made by code that runs without the module opened (fuzz/values.c)
 * and must never lack their __gc; luaL_setmetatable would cost the same registry lookup. */
PGresult **kr_boxresult(lua_State *L, PGresult *res)
{
    PGresult **box = (PGresult **)lua_newuserdata(L, sizeof(PGresult *));
    *box = res;
    if (luaL_newmetatable(L, KR_RESULT_CLASS)) {
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

void kr_dropbox(lua_State *L, int idx)
{
    kr_clearbox((PGresult **)lua_touserdata(L, idx));
}

/* The result moves out of the box (a stream's read-ahead handed to its iterator): the caller
 * owns it, and the box's __gc then frees nothing. */
PGresult *kr_takebox(lua_State *L, int idx)
{
    PGresult **box = (PGresult **)lua_touserdata(L, idx);
    PGresult *res = *box;
    *box = NULL;
    return res;
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

/* A bytea's text as its bytes: the hex form ("\x0a1b", bytea_output = hex, the default) through
 * convert.c's one decoder (kr_unhex_bytea), into a stack buffer for small values, else a scratch
 * userdata; any other text through libpq. */
static void push_bytea(lua_State *L, const char *s, size_t len)
{
    if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
        char small[256];
        char *out = small;
        if ((len - 2) / 2 > sizeof small) out = (char *)lua_newuserdata(L, (len - 2) / 2);
        size_t n = kr_unhex_bytea(s, len, out);
        int scratch = out != small;
        if (n != (size_t)-1) {
            lua_pushlstring(L, out, n);
            if (scratch) lua_remove(L, -2);
            return;
        }
        if (scratch) lua_pop(L, 1);
    }
    /* bytea_output = escape: let libpq undo it */
    size_t n;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)s, &n);
    if (raw == NULL) kr_error_raise(L, "out_of_memory", "out of memory decoding bytea");
    lua_pushlstring(L, (const char *)raw, n);
    PQfreemem(raw);
}

/* What a column's text becomes, decided once per column from its type. */
enum { KIND_TEXT, KIND_BOOL, KIND_INT, KIND_FLOAT, KIND_BYTEA, KIND_TIMESTAMPTZ };

static unsigned char kind_of(Oid type)
{
    switch (type) {
    case BOOLOID: return KIND_BOOL;
    case INT2OID: case INT4OID: case INT8OID: case OIDOID: return KIND_INT;
    case FLOAT4OID: case FLOAT8OID: return KIND_FLOAT;
    case BYTEAOID: return KIND_BYTEA;
    case TIMESTAMPTZOID: return KIND_TIMESTAMPTZ;
    /* text, varchar, numeric (exact as a string), uuid, date, json, arrays, ... */
    default: return KIND_TEXT;
    }
}

/* s is a non-NULL value's text as libpq holds it (NUL-terminated, len bytes). */
static void push_text_as(lua_State *L, unsigned char kind, const char *s, size_t len)
{
    switch (kind) {
    case KIND_BOOL:
        lua_pushboolean(L, s[0] == 't');
        break;
    case KIND_INT:
        push_int8(L, s, len);
        break;
    case KIND_FLOAT:
        lua_pushnumber(L, (lua_Number)kr_parse_double(s)); /* NaN, Infinity, -Infinity too */
        break;
    case KIND_BYTEA:
        push_bytea(L, s, len);
        break;
    case KIND_TIMESTAMPTZ: {
        char iso[KR_ISO_MAX];
        size_t n = len < KR_ISO_MAX ? kr_iso_timestamptz(s, len, iso) : 0;
        if (n > 0)
            lua_pushlstring(L, iso, n);
        else
            lua_pushlstring(L, s, len);
        break;
    }
    default:
        lua_pushlstring(L, s, len);
    }
}

void kr_pushtext(lua_State *L, Oid type, const char *s, size_t len)
{
    push_text_as(L, kind_of(type), s, len);
}

void kr_pushvalue(lua_State *L, const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) {
        lua_pushnil(L);
        return;
    }
    push_text_as(L, kind_of(PQftype(res, col)), PQgetvalue(res, row, col),
                 (size_t)PQgetlength(res, row, col));
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

/* Rows of up to this many columns have their values looked up before their table is made, so
 * that the table is sized for its non-NULL values: Lua rounds up to a power of two, and 7 values
 * take 8 slots, not the 16 that 9 columns would. */
#define KR_ROW_AHEAD 64

/* Returns how many of the row's values are not NULL; vals[j] is NULL for a NULL. Only an empty
 * text can be NULL, so PQgetisnull is asked only then. */
static int row_values(const PGresult *res, int row, int ncols, const char **vals, int *lens)
{
    int present = 0;
    for (int j = 0; j < ncols; j++) {
        vals[j] = PQgetvalue(res, row, j);
        lens[j] = PQgetlength(res, row, j);
        if (lens[j] == 0 && PQgetisnull(res, row, j))
            vals[j] = NULL;
        else
            present++;
    }
    return present;
}

/* names_idx: an array of column names (kr_pushcolnames), so each key is reused, not re-interned.
 * A NULL leaves its key out, as storing nil would. */
void kr_pushrow(lua_State *L, const PGresult *res, int row, int ncols, int names_idx)
{
    names_idx = lua_absindex(L, names_idx);
    if (ncols > KR_ROW_AHEAD) {
        lua_createtable(L, 0, ncols);
        for (int j = 0; j < ncols; j++) {
            if (PQgetisnull(res, row, j)) continue;
            lua_rawgeti(L, names_idx, j + 1);
            kr_pushvalue(L, res, row, j);
            lua_rawset(L, -3);
        }
        return;
    }
    const char *vals[KR_ROW_AHEAD];
    int lens[KR_ROW_AHEAD];
    lua_createtable(L, 0, row_values(res, row, ncols, vals, lens));
    for (int j = 0; j < ncols; j++) {
        if (vals[j] == NULL) continue;
        lua_rawgeti(L, names_idx, j + 1);
        push_text_as(L, kind_of(PQftype(res, j)), vals[j], (size_t)lens[j]);
        lua_rawset(L, -3);
    }
}

/* The rows of a whole result. The column names stay on the stack at names+0 .. names+ncols-1
 * (lua_pushvalue is cheaper than a table lookup per value) and each column's conversion is
 * chosen once. */
static void push_rows_body(lua_State *L, const PGresult *res, const unsigned char *kinds, int names)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    const char *vals[KR_ROW_AHEAD];
    int lens[KR_ROW_AHEAD];
    lua_createtable(L, nrows, 2);
    for (int i = 0; i < nrows; i++) {
        if (ncols <= KR_ROW_AHEAD) {
            lua_createtable(L, 0, row_values(res, i, ncols, vals, lens));
            for (int j = 0; j < ncols; j++) {
                if (vals[j] == NULL) continue;
                lua_pushvalue(L, names + j);
                push_text_as(L, kinds[j], vals[j], (size_t)lens[j]);
                lua_rawset(L, -3);
            }
        } else {
            lua_createtable(L, 0, ncols);
            for (int j = 0; j < ncols; j++) {
                const char *s = PQgetvalue(res, i, j);
                int len = PQgetlength(res, i, j);
                if (len == 0 && PQgetisnull(res, i, j)) continue;
                lua_pushvalue(L, names + j);
                push_text_as(L, kinds[j], s, (size_t)len);
                lua_rawset(L, -3);
            }
        }
        lua_rawseti(L, -2, i + 1);
    }
}

/* Rows as arrays: row[j] is column j's value, a hole for NULL. No key per value and no hash
 * part: the cheapest table Lua has for a row. */
static void push_arrays_body(lua_State *L, const PGresult *res, const unsigned char *kinds)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    lua_createtable(L, nrows, 2);
    for (int i = 0; i < nrows; i++) {
        lua_createtable(L, ncols, 0);
        for (int j = 0; j < ncols; j++) {
            const char *s = PQgetvalue(res, i, j);
            int len = PQgetlength(res, i, j);
            if (len == 0 && PQgetisnull(res, i, j)) continue;
            push_text_as(L, kinds[j], s, (size_t)len);
            lua_rawseti(L, -2, j + 1);
        }
        lua_rawseti(L, -2, i + 1);
    }
}

/* One array per column, filled row by row (the order libpq keeps the values in): no table per
 * row at all. The column arrays stay on the stack at cols+0 .. cols+ncols-1 meanwhile. */
static void push_columns_body(lua_State *L, const PGresult *res, const unsigned char *kinds)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    int cols = lua_gettop(L) + 1;
    for (int j = 0; j < ncols; j++) lua_createtable(L, nrows, 0);
    for (int i = 0; i < nrows; i++) {
        for (int j = 0; j < ncols; j++) {
            const char *s = PQgetvalue(res, i, j);
            int len = PQgetlength(res, i, j);
            if (len == 0 && PQgetisnull(res, i, j)) continue;
            push_text_as(L, kinds[j], s, (size_t)len);
            lua_rawseti(L, cols + j, i + 1);
        }
    }
    lua_createtable(L, ncols, 3);
    for (int j = ncols - 1; j >= 0; j--) {
        lua_pushvalue(L, cols + j);
        lua_rawseti(L, -2, j + 1);
    }
    if (ncols > 0) { /* the result where column 1 was; the other arrays are dropped */
        lua_replace(L, cols);
        lua_settop(L, cols);
    }
    lua_pushinteger(L, nrows);
    lua_setfield(L, -2, "n");
}

static void push_rows(lua_State *L, const PGresult *res, int shape)
{
    int ncols = PQnfields(res), top = lua_gettop(L);
    kr_checkstack(L, 2 * ncols + 8); /* names, and the column arrays of exec_columns */
    unsigned char few[32] = {0}, *kinds = few;
    if (ncols > (int)sizeof few) kinds = (unsigned char *)lua_newuserdata(L, (size_t)ncols);
    int names = lua_gettop(L) + 1;
    for (int j = 0; j < ncols; j++) {
        kinds[j] = kind_of(PQftype(res, j));
        lua_pushstring(L, PQfname(res, j));
    }
    if (shape == KR_ROWS_ARRAYS)
        push_arrays_body(L, res, kinds);
    else if (shape == KR_ROWS_COLUMNS)
        push_columns_body(L, res, kinds);
    else
        push_rows_body(L, res, kinds, names);
    lua_createtable(L, ncols, 0);
    for (int j = 0; j < ncols; j++) {
        lua_pushvalue(L, names + j);
        lua_rawseti(L, -2, j + 1);
    }
    lua_setfield(L, -2, "columns");
    const char *affected = PQcmdTuples((PGresult *)res);
    long long n;
    if (affected && *affected && kr_parse_int8(affected, strlen(affected), &n)) {
        lua_pushinteger(L, (lua_Integer)n);
        lua_setfield(L, -2, "affected");
    }
    if (lua_gettop(L) > top + 1) { /* drop the names (and kinds) below the rows */
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
    }
}

#if LUA_VERSION_NUM >= 504
/* Results this big are built with Lua 5.4's collector paused: every object made stays reachable
 * from the rows, so a collection meanwhile would only traverse them (again and again as the
 * heap grows) without freeing anything. */
#define KR_PAUSE_GC_VALUES 4096

static int push_rows_protected(lua_State *L)
{
    push_rows(L, (const PGresult *)lua_touserdata(L, 1), (int)lua_tointeger(L, 2));
    return 1;
}

void kr_pushrows_as(lua_State *L, const PGresult *res, int shape)
{
    if ((long long)PQntuples(res) * PQnfields(res) < KR_PAUSE_GC_VALUES || !lua_gc(L, LUA_GCISRUNNING)) {
        push_rows(L, res, shape);
        return;
    }
    /* Under lua_pcall, so that the collector restarts even when the build raises (memory). */
    lua_pushcfunction(L, push_rows_protected);
    lua_pushlightuserdata(L, (void *)res);
    lua_pushinteger(L, shape);
    lua_gc(L, LUA_GCSTOP);
    int status = lua_pcall(L, 2, 1, 0);
    lua_gc(L, LUA_GCRESTART);
    if (status != LUA_OK) lua_error(L);
}
#else
/* LuaJIT: its collector is left alone. */
void kr_pushrows_as(lua_State *L, const PGresult *res, int shape)
{
    push_rows(L, res, shape);
}
#endif
