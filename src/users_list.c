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

/* One page: the rows of created_at $3 after id $4 (every row of $3 when $4 is NULL), then the
 * rows of later created_at values. One (created_at, id) > (...) condition would do, but with
 * only the seed's index on created_at the server then sorts every row of the cursor's
 * created_at again for each page: after one create_many (one now() for the whole batch) that is
 * the whole batch, every page. Split, the first branch can walk pk_users in id order (or
 * ix_users_created_at when its created_at is rare), the second ix_users_created_at, each
 * stopping after $2 rows. The outer ORDER BY stays: the server only promises the branches'
 * order through it (a Merge Append when both branches come sorted on (created_at, id), a sort
 * of at most 2 * $2 rows otherwise), never through Append's order. Which index suits the first
 * branch depends on how common $3 is, so the statement must be planned with its values: it is
 * sent unnamed (a custom plan every time, where "$4 IS NULL OR" folds away), not as a named
 * prepared statement, which the server switches to one generic plan after five executions
 * (plan_cache_mode = auto). */
#define LIST_PAGE_SQL \
    "SELECT " COLS " FROM (" \
    "(SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)" \
    " AND created_at = $3::timestamptz AND ($4::uuid IS NULL OR id > $4::uuid) ORDER BY id LIMIT $2)" \
    " UNION ALL " \
    "(SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)" \
    " AND created_at > $3::timestamptz ORDER BY created_at, id LIMIT $2)" \
    ") page ORDER BY created_at, id LIMIT $2"

/* The first page starts at the smallest created_at: found first (an index probe), so that the
 * page itself is LIST_PAGE_SQL planned with that value. One ORDER BY created_at, id LIMIT
 * would have the server read and sort every row of the first created_at (all 100,000 of one
 * create_many batch: 30 ms and more). */
#define LIST_FIRST_SQL \
    "SELECT min(created_at) FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"

/* A server error of the page's statement, err at -1: a forged timestamp the server refused
 * (class 22) is the cursor's fault, reported as invalid_field "after". */
static void list_cursor_error(lua_State *L)
{
    lua_getfield(L, -1, "sqlstate");
    const char *st = lua_tostring(L, -1);
    int bad_cursor = st && strncmp(st, "22", 2) == 0;
    lua_pop(L, 1);
    if (bad_cursor) {
        kr_error_setfield(L, "code", "invalid_field");
        kr_error_setfield(L, "field", "after");
        kr_error_setfield(L, "message", "after is not a cursor returned by users:list()");
    }
}

/* users:list{active =, limit =, after =} -> users, next cursor | nil, err.
 * Keyset pagination on (created_at, id): a page starts strictly after the previous one's last
 * row, so rows inserted meanwhile never shift the pages as OFFSET would. The rows are built one
 * by one with the collector running: kr_pushrows would pause it for a page this big, and its
 * restart after every page sets the collector's debt to zero, so each page would start
 * collection work early (callgrind, 100 pages of 1000 over 100,000 kept rows: 1.36G
 * instructions against 1.17G). */
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
    if (!o.after) {
        PGresult *first = kr_users_run(L, c, ST_LIST, LIST_FIRST_SQL, 1, values);
        if (first == NULL) return 2;
        if (PQgetisnull(first, 0, 0)) { /* no users (that match): one empty page */
            kr_dropbox(L, -1);
            lua_newtable(L);
            lua_pushnil(L);
            return 2;
        }
        if (PQgetlength(first, 0, 0) >= KR_CURSOR_TS_MAX) {
            kr_dropbox(L, -1);
            return kr_error_return(L, "invalid_field", "created_at of a listed user cannot be paged after (not a finite timestamp)");
        }
        memcpy(o.ts, PQgetvalue(first, 0, 0), (size_t)PQgetlength(first, 0, 0) + 1);
        kr_dropbox(L, -1);
        values[3] = NULL;
    }
    PGresult *res = kr_users_run(L, c, -1 /* unnamed: custom plans */, LIST_PAGE_SQL, 4, values);
    if (res == NULL) {
        list_cursor_error(L);
        return 2;
    }
    int box = lua_gettop(L);
    int rows = PQntuples(res), more = rows > o.limit;
    if (more) rows = o.limit;
    kr_pushcolnames(L, res);
    int names = lua_gettop(L);
    luaL_getmetatable(L, KR_USER_CLASS); /* once, not a registry lookup per row */
    lua_createtable(L, rows, 0);
    for (int i = 0; i < rows; i++) {
        kr_pushrow(L, res, i, PQnfields(res), names);
        lua_pushvalue(L, -3);
        lua_setmetatable(L, -2);
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

