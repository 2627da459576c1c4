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
 * the whole batch, every page. Split, the first branch (LIST_SAME_SQL) can walk pk_users in id
 * order (or ix_users_created_at when its created_at is rare), the second (LIST_LATER_SQL)
 * ix_users_created_at, each stopping after $2 rows. The outer ORDER BY stays: the server only
 * promises the branches' order through it (a Merge Append when both branches come sorted on
 * (created_at, id), a sort of at most 2 * $2 rows otherwise), never through Append's order.
 * Which index suits the first branch depends on how common $3 is, so the statements must be
 * planned with their values: they are sent unnamed (a custom plan every time, where "$4 IS NULL
 * OR" folds away), not as named prepared statements, which the server switches to one generic
 * plan after five executions (plan_cache_mode = auto). */
#define LIST_SAME_SQL \
    "SELECT " COLS " FROM " KR_USERS_TABLE " WHERE ($1::boolean IS NULL OR is_active = $1)" \
    " AND created_at = $3::timestamptz AND ($4::uuid IS NULL OR id > $4::uuid) ORDER BY id LIMIT $2"
#define LIST_LATER_SQL \
    "SELECT " COLS " FROM " KR_USERS_TABLE " WHERE ($1::boolean IS NULL OR is_active = $1)" \
    " AND created_at > $3::timestamptz ORDER BY created_at, id LIMIT $2"
#define LIST_PAGE_SQL \
    "SELECT " COLS " FROM ((" LIST_SAME_SQL ") UNION ALL (" LIST_LATER_SQL ")) page ORDER BY created_at, id LIMIT $2"

/* The first page starts at the smallest created_at: found first (an index probe), so that the
 * page itself is LIST_PAGE_SQL planned with that value. One ORDER BY created_at, id LIMIT
 * would have the server read and sort every row of the first created_at (all 100,000 of one
 * create_many batch: 30 ms and more). */
#define LIST_FIRST_SQL \
    "SELECT min(created_at) FROM " KR_USERS_TABLE " WHERE ($1::boolean IS NULL OR is_active = $1)"

/* Registry table (weak keys) of users object -> the last cursor it returned after a full page
 * whose rows all shared one created_at: the next page most likely continues that created_at
 * (a create_many batch), so it is asked of LIST_SAME_SQL alone, without LIST_PAGE_SQL's union
 * and sort of the whole page (and LIST_LATER_SQL asked for the rest only when the created_at
 * ran out). Only a choice of statements: both ways return the same rows. */
#define LIST_HINTS "kronos.users.list_hints"

/* Pushes the hints table, made on first use. */
static void list_hints(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, LIST_HINTS);
    if (lua_istable(L, -1)) return;
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, LIST_HINTS);
}

/* Whether the cursor at idx is the hint of self (at 1). */
static int list_hinted(lua_State *L, int idx)
{
    list_hints(L);
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    int hinted = lua_rawequal(L, -1, idx);
    lua_pop(L, 2);
    return hinted;
}

/* Sets self's hint to the cursor at -1, or clears it (nil); the value stays. */
static void list_sethint(lua_State *L)
{
    list_hints(L);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

/* A server error of a page's statement, err at -1: a forged timestamp the server refused
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

/* Finds the smallest created_at of the users that match into o->ts: 1, or 0 with nil and an
 * empty page pushed (no user matches), or 0 with nil, err pushed. */
static int list_first(lua_State *L, kr_conn *c, listopts *o, const char **values)
{
    PGresult *first = kr_users_run(L, c, ST_LIST, LIST_FIRST_SQL, 1, values);
    if (first == NULL) return 0;
    int len = PQgetlength(first, 0, 0);
    if (PQgetisnull(first, 0, 0)) {
        kr_dropbox(L, -1);
        lua_newtable(L);
        lua_pushnil(L);
        return 0;
    }
    if (len >= KR_CURSOR_TS_MAX) {
        kr_dropbox(L, -1);
        kr_error_return(L, "invalid_field", "created_at of a listed user cannot be paged after (not a finite timestamp)");
        return 0;
    }
    memcpy(o->ts, PQgetvalue(first, 0, 0), (size_t)len + 1);
    kr_dropbox(L, -1);
    return 1;
}

/* Pushes rows [0, n) of res onto the page at -1 from position *pos + 1 on, as user objects
 * (names: the column names, mt: the user metatable, both stack indexes). */
static void list_push(lua_State *L, const PGresult *res, int n, int names, int mt, int *pos)
{
    int ncols = PQnfields(res);
    for (int i = 0; i < n; i++) {
        kr_pushrow(L, res, i, ncols, names);
        lua_pushvalue(L, mt);
        lua_setmetatable(L, -2);
        lua_rawseti(L, -2, ++*pos);
    }
}

/* users:list{active =, limit =, after =} -> users, next cursor | nil, err.
 * Keyset pagination on (created_at, id): a page starts strictly after the previous one's last
 * row, so rows inserted meanwhile never shift the pages as OFFSET would. The rows are built one
 * by one with the collector running: kr_pushrows_as would pause it for a page this big, and its
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
    char limit[16], rest[16];
    snprintf(limit, sizeof limit, "%d", o.limit + 1); /* one more row tells whether a page follows */
    const char *values[4] = {o.active, limit, o.ts, o.id};
    int hinted = 0;
    if (!o.after) {
        if (!list_first(L, c, &o, values)) return 2;
        values[3] = NULL;
    } else {
        lua_getfield(L, 2, "after");
        hinted = list_hinted(L, -1);
        lua_pop(L, 1);
    }
    /* same: the rows of the cursor's created_at (all of the page but with a hint); later: the
     * rest, asked of LIST_LATER_SQL when the hinted created_at ran out */
    PGresult *same = kr_users_run(L, c, -1 /* unnamed: custom plans */, hinted ? LIST_SAME_SQL : LIST_PAGE_SQL, 4, values);
    if (same == NULL) {
        list_cursor_error(L);
        return 2;
    }
    int box = lua_gettop(L), nsame = PQntuples(same), nlater = 0;
    PGresult *later = NULL;
    if (hinted && nsame <= o.limit) {
        snprintf(rest, sizeof rest, "%d", o.limit + 1 - nsame);
        values[1] = rest;
        later = kr_users_run(L, c, -1, LIST_LATER_SQL, 3, values);
        if (later == NULL) {
            kr_dropbox(L, box);
            return 2;
        }
        nlater = PQntuples(later);
    }
    int more = nsame + nlater > o.limit;
    if (nsame > o.limit) nsame = o.limit;
    if (nsame + nlater > o.limit) nlater = o.limit - nsame;
    kr_pushcolnames(L, same);
    int names = lua_gettop(L);
    luaL_getmetatable(L, KR_USER_CLASS); /* once, not a registry lookup per row */
    int mt = lua_gettop(L), pos = 0;
    lua_createtable(L, nsame + nlater, 0);
    list_push(L, same, nsame, names, mt, &pos);
    if (later) list_push(L, later, nlater, names, mt, &pos);
    if (more) {
        const PGresult *res = nlater > 0 ? later : same;
        int last = (nlater > 0 ? nlater : nsame) - 1;
        char cursor[KR_CURSOR_MAX];
        size_t n = kr_cursor_encode(PQgetvalue(res, last, COL_CREATED_AT), (size_t)PQgetlength(res, last, COL_CREATED_AT),
                                    PQgetvalue(res, last, COL_ID), (size_t)PQgetlength(res, last, COL_ID), cursor);
        if (n == 0) {
            kr_dropbox(L, box);
            if (later) kr_dropbox(L, box + 1);
            return kr_error_return(L, "invalid_field", "created_at of a listed user cannot be paged after (not a finite timestamp)");
        }
        lua_pushlstring(L, cursor, n);
        /* the page's rows all share the last one's created_at: hint the next page */
        int uniform = nlater == 0 && PQgetlength(same, 0, COL_CREATED_AT) == PQgetlength(same, last, COL_CREATED_AT) &&
                      memcmp(PQgetvalue(same, 0, COL_CREATED_AT), PQgetvalue(same, last, COL_CREATED_AT),
                             (size_t)PQgetlength(same, last, COL_CREATED_AT)) == 0;
        if (!uniform) lua_pushnil(L);
        list_sethint(L);
        if (!uniform) lua_pop(L, 1);
    } else {
        lua_pushnil(L);
        list_sethint(L);
    }
    kr_dropbox(L, box);
    if (later) kr_dropbox(L, box + 1);
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
    PGresult *res = kr_users_run(L, c, ST_COUNT, "SELECT count(*) FROM " KR_USERS_TABLE " WHERE ($1::boolean IS NULL OR is_active = $1)", 1, values);
    if (res == NULL) return 2;
    kr_pushvalue(L, res, 0, 0);
    kr_dropbox(L, -2);
    return 1;
}

