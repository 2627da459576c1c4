/* floor: the Lua floor of reading a result into Lua tables, for the benchmark (not part of kronos).
 *   floor.read(url, sql, shape) -> rows, seconds
 * Runs sql with PQexec, then turns every value into what kronos would push (an integer, a double,
 * a boolean, a string already in its final form: timestamps in ISO 8601 UTC) before the clock
 * runs again, then builds the same tables kronos builds in `shape` ("named": conn:exec, "arrays":
 * conn:exec_arrays, "columns": conn:exec_columns) from those pre-made values, with the same Lua
 * calls (sized tables, column names kept on the stack, Lua 5.4's collector paused as kronos
 * pauses it). seconds = the PQexec time + the build time: what any binding must spend (libpq
 * reading the result, Lua making the strings and tables), nothing of conversion. The build is
 * the function floor_build, so callgrind can count it alone (--toggle-collect=floor_build), and
 * the pre-making floor_premake, so that a whole-client count can subtract it.
 * Built by bench/run.sh for Lua 5.4 and LuaJIT. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <lua.h>
#include <lauxlib.h>

#include "convert.h"

enum { V_NULL, V_STR, V_INT, V_NUM, V_BOOL };

typedef struct {
    unsigned char tag;
    size_t len;
    union {
        const char *s;
        long long i;
        double d;
        int b;
    } u;
} value;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The value kronos would push for this text of this type; strings point into iso (timestamps)
 * or into the PGresult. */
static void premake(const PGresult *res, int i, int j, value *v, char *iso)
{
    if (PQgetisnull(res, i, j)) {
        v->tag = V_NULL;
        return;
    }
    const char *s = PQgetvalue(res, i, j);
    size_t len = (size_t)PQgetlength(res, i, j);
    switch (PQftype(res, j)) {
    case 16: v->tag = V_BOOL; v->u.b = s[0] == 't'; return;
    case 20: case 21: case 23: v->tag = V_INT; v->u.i = strtoll(s, NULL, 10); return;
    case 700: case 701: v->tag = V_NUM; v->u.d = strtod(s, NULL); return;
    case 1184: {
        size_t n = kr_iso_timestamptz(s, len, iso);
        if (n > 0) {
            v->tag = V_STR; v->u.s = iso; v->len = n;
            return;
        }
        break;
    }
    default: break;
    }
    v->tag = V_STR;
    v->u.s = s;
    v->len = len;
}

static void push(lua_State *L, const value *v)
{
    switch (v->tag) {
    case V_INT: lua_pushinteger(L, (lua_Integer)v->u.i); break;
    case V_NUM: lua_pushnumber(L, v->u.d); break;
    case V_BOOL: lua_pushboolean(L, v->u.b); break;
    default: lua_pushlstring(L, v->u.s, v->len);
    }
}

/* Every value pre-made into vals (isos: KR_ISO_MAX bytes per value for timestamps). Not static,
 * not inlined: callgrind counts it alone (--toggle-collect=floor_premake), so that a whole-client
 * count can leave it out. */
__attribute__((noinline)) void floor_premake(const PGresult *res, value *vals, char *isos);
__attribute__((noinline)) void floor_premake(const PGresult *res, value *vals, char *isos)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < ncols; j++) {
            size_t k = (size_t)i * (size_t)ncols + (size_t)j;
            premake(res, i, j, &vals[k], isos + k * KR_ISO_MAX);
        }
}

/* Not static and not inlined: callgrind's --toggle-collect names it. */
__attribute__((noinline)) void floor_build(lua_State *L, const value *vals, int nrows, int ncols, int names, int shape);
__attribute__((noinline)) void floor_build(lua_State *L, const value *vals, int nrows, int ncols, int names, int shape)
{
    if (shape == 2) { /* columns */
        int cols = lua_gettop(L) + 1;
        for (int j = 0; j < ncols; j++) lua_createtable(L, nrows, 0);
        for (int i = 0; i < nrows; i++)
            for (int j = 0; j < ncols; j++) {
                const value *v = &vals[(size_t)i * (size_t)ncols + (size_t)j];
                if (v->tag == V_NULL) continue;
                push(L, v);
                lua_rawseti(L, cols + j, i + 1);
            }
        lua_createtable(L, ncols, 3);
        for (int j = 0; j < ncols; j++) {
            lua_pushvalue(L, cols + j);
            lua_rawseti(L, -2, j + 1);
        }
        lua_pushinteger(L, nrows);
        lua_setfield(L, -2, "n");
        return;
    }
    lua_createtable(L, nrows, 2);
    for (int i = 0; i < nrows; i++) {
        const value *row = &vals[(size_t)i * (size_t)ncols];
        if (shape == 1) { /* arrays */
            lua_createtable(L, ncols, 0);
            for (int j = 0; j < ncols; j++) {
                if (row[j].tag == V_NULL) continue;
                push(L, &row[j]);
                lua_rawseti(L, -2, j + 1);
            }
        } else {
            int present = 0;
            for (int j = 0; j < ncols; j++) present += row[j].tag != V_NULL;
            lua_createtable(L, 0, present);
            for (int j = 0; j < ncols; j++) {
                if (row[j].tag == V_NULL) continue;
                lua_pushvalue(L, names + j);
                push(L, &row[j]);
                lua_rawset(L, -3);
            }
        }
        lua_rawseti(L, -2, i + 1);
    }
}

static int l_read(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1), *sql = luaL_checkstring(L, 2);
    const char *shapes[] = {"named", "arrays", "columns", NULL};
    int shape = luaL_checkoption(L, 3, "named", shapes);
    PGconn *pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) return luaL_error(L, "floor: %s", PQerrorMessage(pg));
    double t0 = now();
    PGresult *res = PQexec(pg, sql);
    double t_exec = now() - t0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) return luaL_error(L, "floor: %s", PQerrorMessage(pg));
    int nrows = PQntuples(res), ncols = PQnfields(res);
    value *vals = malloc(sizeof(value) * ((size_t)nrows * (size_t)ncols + 1));
    char *isos = malloc((size_t)KR_ISO_MAX * ((size_t)nrows * (size_t)ncols + 1));
    if (vals == NULL || isos == NULL) return luaL_error(L, "floor: out of memory");
    floor_premake(res, vals, isos);
    luaL_checkstack(L, 2 * ncols + 8, "floor");
    int names = lua_gettop(L) + 1;
    for (int j = 0; j < ncols; j++) lua_pushstring(L, PQfname(res, j));
    double t1 = now();
#if LUA_VERSION_NUM >= 504
    lua_gc(L, LUA_GCSTOP);
#endif
    floor_build(L, vals, nrows, ncols, names, shape);
#if LUA_VERSION_NUM >= 504
    lua_gc(L, LUA_GCRESTART);
#endif
    double t_build = now() - t1;
    free(vals);
    free(isos);
    PQclear(res);
    PQfinish(pg);
    lua_pushnumber(L, t_exec + t_build);
    return 2;
}

int luaopen_floor(lua_State *L)
{
    lua_newtable(L);
    lua_pushcfunction(L, l_read);
    lua_setfield(L, -2, "read");
    return 1;
}
