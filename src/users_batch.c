/* users:create_many: every entry validated, then one COPY (all or nothing). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "users.h"

/* ---- create_many ----------------------------------------------------------------------- */

/* One value in COPY text format: \N for NULL, backslash escapes for what would break a row. */
static void add_copy_value(luaL_Buffer *b, const char *s, size_t len, const char *absent)
{
    if (s == NULL) {
        luaL_addstring(b, absent);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\': luaL_addstring(b, "\\\\"); break;
        case '\t': luaL_addstring(b, "\\t"); break;
        case '\n': luaL_addstring(b, "\\n"); break;
        case '\r': luaL_addstring(b, "\\r"); break;
        default: luaL_addchar(b, ch);
        }
    }
}

/* err at -1 (batch entry i): names the entry. */
static void set_index(lua_State *L, lua_Integer i)
{
    lua_pushinteger(L, i);
    lua_setfield(L, -2, "index");
    lua_getfield(L, -1, "message");
    lua_pushfstring(L, "entry %d: %s", (int)i, lua_tostring(L, -1));
    lua_setfield(L, -3, "message");
    lua_pop(L, 1);
}

/* Validates every entry, checks emails are unique in the batch, and leaves at 3 the COPY line of
 * each entry and at 4 a table email -> index. Returns 0 with the error object at -1 otherwise. */
static int prepare_batch(lua_State *L, lua_Integer n)
{
    lua_createtable(L, n < 1000000 ? (int)n : 1000000, 0);
    lua_createtable(L, 0, n < 1000000 ? (int)n : 1000000);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, (int)i);
        if (!lua_istable(L, 5)) {
            kr_users_error(L, "invalid_type", NULL, "must be a table of fields, got %s", luaL_typename(L, 5));
            set_index(L, i);
            return 0;
        }
        kr_fieldval v[KR_USER_NFIELDS];
        if (!kr_users_check_fields(L, 5, v, 1)) {
            set_index(L, i);
            return 0;
        }
        lua_pushvalue(L, 6);
        lua_rawget(L, 4);
        if (!lua_isnil(L, -1)) {
            kr_users_error(L, "duplicate_email", "email", "email %s is also entry %d's", lua_tostring(L, 6),
                             (int)lua_tointeger(L, -1));
            set_index(L, i);
            return 0;
        }
        lua_pop(L, 1);
        lua_pushvalue(L, 6);
        lua_pushinteger(L, i);
        lua_rawset(L, 4);
        kr_pushuuid(L);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, lua_tostring(L, 7), 36);
        for (int k = 0; k < KR_USER_NFIELDS; k++) {
            luaL_addchar(&b, '\t');
            /* COPY's column order is kr_user_fields' order; an absent is_active gets the table's default */
            add_copy_value(&b, v[k].set ? v[k].s : NULL, v[k].len, kr_user_fields[k].kind == K_BOOL ? "true" : "\\N");
        }
        luaL_addchar(&b, '\n');
        luaL_pushresult(&b);
        lua_rawseti(L, 3, (int)i);
        lua_settop(L, 4);
    }
    return 1;
}

/* After a unique violation during COPY: err.index from the key the server names in err.detail
 * ("Key (email)=(x) already exists."; only the parenthesized parts are read, not the words). */
static void index_from_detail(lua_State *L, int seen)
{
    lua_Integer index = 0;
    lua_getfield(L, -1, "detail");
    const char *d = lua_tostring(L, -1);
    const char *start = d ? strstr(d, ")=(") : NULL;
    const char *end = d ? strrchr(d, ')') : NULL;
    if (start && end && end > start + 3) {
        lua_pushlstring(L, start + 3, (size_t)(end - start - 3));
        lua_rawget(L, seen);
        if (lua_type(L, -1) == LUA_TNUMBER) index = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (index > 0) set_index(L, index);
}

static int copy_batch(lua_State *L, kr_conn *c, lua_Integer n)
{
    kr_endstream(c);
    PGresult *r = PQexec(c->pg, "COPY users (id, email, first_name, last_name, profile_image_url, is_active) FROM STDIN");
    PGresult **box = kr_boxresult(L, r);
    if (r == NULL || PQresultStatus(r) != PGRES_COPY_IN) {
        kr_fail_result(L, c, r);
        kr_clearbox(box);
        kr_users_map_error(L);
        return 2;
    }
    kr_clearbox(box);
    lua_pop(L, 1);
    int sent = 1;
    for (lua_Integer i = 1; i <= n && sent; i++) {
        size_t len;
        lua_rawgeti(L, 3, (int)i);
        const char *line = lua_tolstring(L, -1, &len);
        sent = PQputCopyData(c->pg, line, (int)len) == 1;
        lua_pop(L, 1);
    }
    PQputCopyEnd(c->pg, sent ? NULL : "kronos: sending the batch failed");
    r = PQgetResult(c->pg);
    box = kr_boxresult(L, r);
    PGresult *extra;
    while ((extra = PQgetResult(c->pg)) != NULL) PQclear(extra);
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) {
        kr_fail_result(L, c, r);
        kr_clearbox(box);
        kr_users_map_error(L);
        lua_getfield(L, -1, "code");
        int dup = strcmp(lua_tostring(L, -1), "duplicate_email") == 0;
        lua_pop(L, 1);
        if (dup) index_from_detail(L, 4);
        return 2;
    }
    lua_Integer created = (lua_Integer)strtoll(PQcmdTuples(r), NULL, 10);
    kr_clearbox(box);
    lua_pushinteger(L, created);
    return 1;
}

/* users:create_many(list) -> count | nil, err: one COPY, so the batch is written whole or not
 * at all; every entry is validated before anything is sent. */
int kr_users_create_many(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    kr_users_checktable(L, 2, "list");
    lua_settop(L, 2);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    if (n > 0x7fffffff) luaL_argerror(L, 2, "list too long");
    if (n == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    if (!prepare_batch(L, n)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return copy_batch(L, c, n);
}

