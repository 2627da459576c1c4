/* users:list (keyset pagination with opaque cursors) and users:count. */
#include <stdio.h>
#include <string.h>

#include "users.h"
#include "option.h"

#define LIST_MAX 1000
#define LIST_DEFAULT 50

/* ---- list and count -------------------------------------------------------------------- */

typedef struct {
    const char *active;  /* "true", "false" or NULL for all */
    int limit;
    char ts[KR_CURSOR_TS_MAX];
    char id[37];
    int after;
} listopts;

static const char *const list_keys[] = {"active", "limit", "after", NULL};
static const char *const count_keys[] = {"active", NULL};

/* Options at 2 (nil or a table), read by the one option reader: misuse raises a bad_argument
 * object. A cursor that does not decode is data from outside (a client sent it back), so that
 * alone pushes an error object (invalid_field, err.field = "after") and returns 0. */
static int list_options(lua_State *L, listopts *o, int with_paging)
{
    int t = kr_option_check(L, 2, "options", with_paging ? list_keys : count_keys);
    int active = kr_option_bool(L, t, 2, "options", "active", -1);
    o->active = active < 0 ? NULL : active ? "true" : "false";
    o->limit = (int)kr_option_integer(L, t, 2, "options", "limit", 1, LIST_MAX, LIST_DEFAULT);
    size_t len;
    const char *cur = kr_option_string(L, t, 2, "options", "after", &len);
    o->after = cur != NULL;
    if (cur != NULL && !kr_cursor_decode(cur, len, o->ts, o->id)) {
        kr_error_push(L, "invalid_field", "after is not a cursor returned by users:list()");
        kr_error_setfield(L, "field", "after");
        return 0;
    }
    return 1;
}

/* The page after a cursor (created_at $3, id $4): the rows of the cursor's own created_at after
 * its id, then the rows of later created_at values. One (created_at, id) > (...) condition would
 * do, but with only the seed's index on created_at the server then sorts every row of the
 * cursor's created_at again for each page: after one create_many (one now() for the whole batch)
 * that is the whole batch, every page. Split, the first branch can walk pk_users in id order (or
 * ix_users_created_at when its created_at is rare), the second ix_users_created_at, each stopping
 * after $2 rows. Which index suits the first branch depends on how common the cursor's created_at
 * is, so the statement must be planned with its values: it is sent unnamed (a custom plan every
 * time), not as a named prepared statement, which the server switches to one generic plan after
 * five executions (plan_cache_mode = auto). */
#define LIST_AFTER_SQL \
    "SELECT " COLS " FROM (" \
    "(SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)" \
    " AND created_at = $3::timestamptz AND id > $4::uuid ORDER BY id LIMIT $2)" \
    " UNION ALL " \
    "(SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)" \
    " AND created_at > $3::timestamptz ORDER BY created_at, id LIMIT $2)" \
    ") page ORDER BY created_at, id LIMIT $2"

/* users:list{active =, limit =, after =} -> users, next cursor | nil, err.
 * Keyset pagination on (created_at, id): a page starts strictly after the previous one's last
 * row, so rows inserted meanwhile never shift the pages as OFFSET would. */
int kr_users_list(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    lua_settop(L, 2);
    listopts o;
    if (!list_options(L, &o, 1)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    char limit[16];
    snprintf(limit, sizeof limit, "%d", o.limit + 1); /* one more row tells whether a page follows */
    const char *values[4] = {o.active, limit, o.ts, o.id};
    PGresult *res = o.after ? kr_users_run(L, c, -1 /* unnamed: custom plans */, LIST_AFTER_SQL, 4, values)
                            : kr_users_run(L, c, ST_LIST,
                                           "SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"
                                           " ORDER BY created_at, id LIMIT $2",
                                           2, values);
    if (res == NULL) {
        lua_getfield(L, -1, "sqlstate");
        const char *st = lua_tostring(L, -1);
        int bad_cursor = st && strncmp(st, "22", 2) == 0; /* a forged timestamp the server refused */
        lua_pop(L, 1);
        if (bad_cursor) {
            kr_error_setfield(L, "code", "invalid_field");
            kr_error_setfield(L, "field", "after");
            kr_error_setfield(L, "message", "after is not a cursor returned by users:list()");
        }
        return 2;
    }
    int box = lua_gettop(L);
    int rows = PQntuples(res), more = rows > o.limit;
    if (more) rows = o.limit;
    kr_pushcolnames(L, res);
    int names = lua_gettop(L);
    lua_createtable(L, rows, 0);
    for (int i = 0; i < rows; i++) {
        kr_users_pushuser(L, res, i, names);
        lua_rawseti(L, -2, i + 1);
    }
    if (more) {
        char cursor[KR_CURSOR_MAX];
        size_t n = kr_cursor_encode(PQgetvalue(res, rows - 1, COL_CREATED_AT),
                                    (size_t)PQgetlength(res, rows - 1, COL_CREATED_AT),
                                    PQgetvalue(res, rows - 1, COL_ID), (size_t)PQgetlength(res, rows - 1, COL_ID), cursor);
        if (n == 0) {
            kr_dropbox(L, box);
            return kr_error_return(L, "invalid_field", "created_at of a listed user cannot be paged after (not a finite timestamp)");
        }
        lua_pushlstring(L, cursor, n);
    } else {
        lua_pushnil(L);
    }
    kr_dropbox(L, box);
    return 2;
}

int kr_users_count(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    lua_settop(L, 2);
    listopts o;
    if (!list_options(L, &o, 0)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    const char *values[1] = {o.active};
    PGresult *res = kr_users_run(L, c, ST_COUNT, "SELECT count(*) FROM users WHERE ($1::boolean IS NULL OR is_active = $1)", 1, values);
    if (res == NULL) return 2;
    kr_pushvalue(L, res, 0, 0);
    kr_dropbox(L, -2);
    return 1;
}

