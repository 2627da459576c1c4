/* The Kronos user model over the users table: validation first, then fixed SQL with every
 * value as a parameter. Users are plain tables with a __tostring for the REPL. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"
#include "validate.h"

#define KR_USERS_CLASS "kronos.users"
#define KR_USER_CLASS "kronos.user"

#define COLS "id, email, first_name, last_name, is_active, profile_image_url, last_login, created_at, updated_at"
#define COL_ID 0
#define COL_CREATED_AT 7
/* now() stands still inside a transaction; updated_at must still move forward on each change. */
#define TOUCH "updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond')"
#define LIST_MAX 1000
#define LIST_DEFAULT 50
#define MAXPARAMS 8

/* ---- errors ---------------------------------------------------------------------------- */

/* Pushes an error object (not nil) with err.field set when field is not NULL. */
static void push_field_error(lua_State *L, const char *code, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    kr_newerror(L, code, msg);
    lua_remove(L, -2);
    kr_seterrorfield(L, "field", field);
}

static int fail_field(lua_State *L, const char *code, const char *field, const char *fmt, const char *arg)
{
    lua_pushnil(L);
    push_field_error(L, code, field, fmt, arg);
    return 2;
}

/* Server errors the model can explain (a unique race, the email check) get the model's codes;
 * the server's fields (sqlstate, constraint, detail) stay. err at -1. */
static void map_server_error(lua_State *L)
{
    lua_getfield(L, -1, "sqlstate");
    lua_getfield(L, -2, "constraint");
    const char *state = lua_tostring(L, -2), *con = lua_tostring(L, -1);
    const char *code = NULL, *field = NULL, *msg = NULL;
    if (state && strcmp(state, "23505") == 0 && (con == NULL || strstr(con, "email") != NULL)) {
        code = "duplicate_email", field = "email", msg = "a user with this email already exists";
    } else if (state && strcmp(state, "23514") == 0 && con && strcmp(con, "ck_users_email_length") == 0) {
        code = "invalid_email", field = "email", msg = "email must be at least 5 characters";
    } else if (state && strcmp(state, "22001") == 0) {
        code = "too_long";
    } else if (state && strcmp(state, "22021") == 0) {
        code = "invalid_utf8";
    }
    lua_pop(L, 2);
    kr_seterrorfield(L, "code", code);
    kr_seterrorfield(L, "field", field);
    kr_seterrorfield(L, "message", msg);
}

/* ---- the receiver ---------------------------------------------------------------------- */

static int is_class(lua_State *L, int idx, const char *class)
{
    if (!lua_istable(L, idx) || !lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, class);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

/* self at 1: the users object; its connection stays referenced by self. */
static kr_conn *self_conn(lua_State *L)
{
    if (!is_class(L, 1, KR_USERS_CLASS)) luaL_argerror(L, 1, "users object expected (call methods as users:method(...))");
    lua_pushliteral(L, "conn");
    lua_rawget(L, 1);
    kr_conn *c = (kr_conn *)luaL_testudata(L, -1, KR_CONN_CLASS);
    lua_pop(L, 1);
    if (c == NULL) luaL_argerror(L, 1, "users object has no connection");
    if (c->pg == NULL) luaL_argerror(L, 1, "the users object's connection is closed");
    return c;
}

static const char *check_id(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_argerror(L, idx, lua_pushfstring(L, "id must be a string, got %s", luaL_typename(L, idx)));
    size_t len;
    const char *id = lua_tolstring(L, idx, &len);
    return kr_uuid_valid(id, len) ? id : NULL;
}

static void check_table(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a table, got %s", what, luaL_typename(L, idx)));
}

/* ---- fields ---------------------------------------------------------------------------- */

enum kind { K_EMAIL, K_NAME, K_URL, K_BOOL };
static const struct field {
    const char *name;
    enum kind kind;
} FIELDS[] = {
    {"email", K_EMAIL}, {"first_name", K_NAME}, {"last_name", K_NAME},
    {"profile_image_url", K_URL}, {"is_active", K_BOOL},
};
#define NFIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

typedef struct {
    int set;        /* the caller gave the field (a value or kronos.null) */
    const char *s;  /* its text, NULL for SQL NULL; owned by the caller's table or the stack */
    size_t len;
} fieldval;

static int verdict_error(lua_State *L, kr_verdict v, const char *field, const char *code, const char *why, size_t max)
{
    if (v == KR_BAD_UTF8)
        push_field_error(L, "invalid_utf8", field, "%s is not valid UTF-8 text", field);
    else if (v == KR_TOO_LONG)
        push_field_error(L, "too_long", field, "%s is longer than %d characters", field, (int)max);
    else
        push_field_error(L, code, field, "%s %s", field, why ? why : "is not valid");
    return 0;
}

/* Pushes the normalized form of the email at -1 (what is below may stay on the stack). */
static int email_value(lua_State *L, fieldval *v)
{
    size_t len;
    const char *in = lua_tolstring(L, -1, &len);
    char small[512];
    char *out = len <= sizeof small ? small : (char *)lua_newuserdata(L, len);
    size_t outlen;
    const char *why = NULL;
    kr_verdict verdict = kr_normalize_email(in, len, out, &outlen, &why);
    if (verdict != KR_VALID) return verdict_error(L, verdict, "email", "invalid_email", why, KR_EMAIL_MAX);
    lua_pushlstring(L, out, outlen);
    v->s = lua_tolstring(L, -1, &v->len);
    return 1;
}

/* Checks the value at -1 for field f. On success fills v (for the email, the normalized string is
 * pushed); on failure pushes an error object. Either way the result is at -1, above what the
 * caller should clear. */
static int field_value(lua_State *L, const struct field *f, fieldval *v)
{
    int t = lua_type(L, -1);
    v->set = 1;
    v->s = NULL;
    v->len = 0;
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) { /* kronos.null */
        if (f->kind == K_NAME || f->kind == K_URL) return 1;
        push_field_error(L, "invalid_type", f->name, "%s cannot be null", f->name);
        return 0;
    }
    if (f->kind == K_BOOL) {
        if (t != LUA_TBOOLEAN) {
            push_field_error(L, "invalid_type", f->name, "%s must be a boolean, got %s", f->name, luaL_typename(L, -1));
            return 0;
        }
        v->s = lua_toboolean(L, -1) ? "true" : "false";
        v->len = strlen(v->s);
        return 1;
    }
    if (t != LUA_TSTRING) {
        push_field_error(L, "invalid_type", f->name, "%s must be a string, got %s", f->name, luaL_typename(L, -1));
        return 0;
    }
    if (f->kind == K_EMAIL) return email_value(L, v);
    v->s = lua_tolstring(L, -1, &v->len);
    const char *why = NULL;
    kr_verdict verdict = f->kind == K_URL ? kr_check_url(v->s, v->len, &why) : kr_check_text(v->s, v->len, KR_NAME_MAX);
    if (verdict == KR_VALID) return 1;
    return verdict_error(L, verdict, f->name, "invalid_url", why, f->kind == K_URL ? KR_URL_MAX : KR_NAME_MAX);
}

static int known_field(const char *name)
{
    for (int i = 0; i < NFIELDS; i++)
        if (strcmp(FIELDS[i].name, name) == 0) return 1;
    return 0;
}

/* Refuses keys that are not fields; pushes the error and returns 0 for the first one found. */
static int check_keys(lua_State *L, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (key && known_field(key)) {
            lua_pop(L, 1);
            continue;
        }
        if (key == NULL)
            push_field_error(L, "invalid_field", NULL, "field names must be strings, got a %s key", luaL_typename(L, -2));
        else if (strcmp(key, "id") == 0 || strcmp(key, "created_at") == 0 || strcmp(key, "updated_at") == 0)
            push_field_error(L, "invalid_field", key, "%s is set by the database and cannot be given", key);
        else if (strcmp(key, "last_login") == 0)
            push_field_error(L, "invalid_field", key, "last_login is set by users:record_login()");
        else
            push_field_error(L, "invalid_field", key, "unknown field '%s'", key);
        lua_insert(L, -3);
        lua_pop(L, 2);
        return 0;
    }
    return 1;
}

/* Validates the fields table at t in a fixed order. On success returns 1 and leaves one value on
 * the stack (the normalized email, or nil); on failure returns 0 and leaves the error object. */
static int check_fields(lua_State *L, int t, fieldval *vals, int need_email)
{
    if (!check_keys(L, t)) return 0;
    lua_pushnil(L); /* the slot of the normalized email */
    int slot = lua_gettop(L);
    for (int i = 0; i < NFIELDS; i++) {
        lua_pushstring(L, FIELDS[i].name);
        lua_rawget(L, t);
        vals[i].set = 0;
        if (lua_isnil(L, -1)) {
            lua_settop(L, slot);
            if (i == 0 && need_email) {
                push_field_error(L, "invalid_email", "email", "email is required");
                lua_replace(L, slot);
                return 0;
            }
            continue;
        }
        int ok = field_value(L, &FIELDS[i], &vals[i]);
        if (!ok || i == 0) lua_replace(L, slot); /* the error, or the normalized email */
        lua_settop(L, slot); /* other strings stay referenced by the caller's table */
        if (!ok) return 0;
    }
    return 1;
}

/* ---- running statements ---------------------------------------------------------------- */

/* Runs sql with n text parameters; the boxed result is left on the stack, or nil, err. */
static PGresult *run(lua_State *L, kr_conn *c, const char *sql, int n, const char **values)
{
    int lengths[MAXPARAMS] = {0}, formats[MAXPARAMS] = {0};
    Oid types[MAXPARAMS] = {0};
    kr_params p;
    p.n = n;
    p.values = values;
    p.lengths = lengths;
    p.formats = formats;
    p.types = types;
    PGresult *res = kr_execparams(L, c, sql, &p);
    if (res == NULL) map_server_error(L);
    return res;
}

static void push_user(lua_State *L, const PGresult *res, int row, int names)
{
    kr_pushrow(L, res, row, PQnfields(res), names);
    luaL_setmetatable(L, KR_USER_CLASS);
}

/* The result's box at -1 -> its first row as a user, or nil / not_found when there is none. */
static int one_user(lua_State *L, PGresult *res, int missing_is_error)
{
    if (PQntuples(res) == 0) {
        kr_clearbox((PGresult **)lua_touserdata(L, -1));
        lua_pop(L, 1);
        if (missing_is_error) return fail_field(L, "not_found", "id", "no user has this id%s", "");
        lua_pushnil(L);
        return 1;
    }
    kr_pushcolnames(L, res);
    push_user(L, res, 0, lua_gettop(L));
    kr_clearbox((PGresult **)lua_touserdata(L, -3));
    return 1;
}

/* The SQL of one row change: "UPDATE users SET <cols = $n>, <extra> WHERE id = $1 RETURNING". */
static int user_statement(lua_State *L, kr_conn *c, const char *sql, const char *id)
{
    const char *values[1] = {id};
    PGresult *res = run(L, c, sql, 1, values);
    return res ? one_user(L, res, 1) : 2;
}

/* ---- methods --------------------------------------------------------------------------- */

static int l_create(lua_State *L)
{
    kr_conn *c = self_conn(L);
    check_table(L, 2, "fields");
    lua_settop(L, 2);
    fieldval v[NFIELDS];
    if (!check_fields(L, 2, v, 1)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    kr_pushuuid(L);
    const char *values[MAXPARAMS];
    values[0] = lua_tostring(L, -1);
    char cols[256] = "id", args[64] = "$1";
    int n = 1;
    for (int i = 0; i < NFIELDS; i++) {
        if (!v[i].set) continue;
        values[n++] = v[i].s;
        size_t cl = strlen(cols), al = strlen(args);
        snprintf(cols + cl, sizeof cols - cl, ", %s", FIELDS[i].name);
        snprintf(args + al, sizeof args - al, ", $%d", n);
    }
    char sql[512];
    snprintf(sql, sizeof sql, "INSERT INTO users (%s) VALUES (%s) RETURNING " COLS, cols, args);
    PGresult *res = run(L, c, sql, n, values);
    return res ? one_user(L, res, 1) : 2;
}

static int l_get(lua_State *L)
{
    kr_conn *c = self_conn(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    const char *values[1] = {id};
    PGresult *res = run(L, c, "SELECT " COLS " FROM users WHERE id = $1", 1, values);
    return res ? one_user(L, res, 0) : 2;
}

static int l_find_by_email(lua_State *L)
{
    kr_conn *c = self_conn(L);
    if (lua_type(L, 2) != LUA_TSTRING)
        luaL_argerror(L, 2, lua_pushfstring(L, "email must be a string, got %s", luaL_typename(L, 2)));
    lua_settop(L, 2);
    fieldval v;
    if (!field_value(L, &FIELDS[0], &v)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    const char *values[1] = {v.s};
    PGresult *res = run(L, c, "SELECT " COLS " FROM users WHERE email = $1", 1, values);
    return res ? one_user(L, res, 0) : 2;
}

static int l_update(lua_State *L)
{
    kr_conn *c = self_conn(L);
    const char *id = check_id(L, 2);
    check_table(L, 3, "fields");
    lua_settop(L, 3);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    fieldval v[NFIELDS];
    if (!check_fields(L, 3, v, 0)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    const char *values[MAXPARAMS];
    values[0] = id;
    char sets[256] = "";
    int n = 1;
    for (int i = 0; i < NFIELDS; i++) {
        if (!v[i].set) continue;
        values[n++] = v[i].s;
        size_t sl = strlen(sets);
        snprintf(sets + sl, sizeof sets - sl, "%s = $%d, ", FIELDS[i].name, n);
    }
    char sql[512];
    snprintf(sql, sizeof sql, "UPDATE users SET %s" TOUCH " WHERE id = $1 RETURNING " COLS, sets);
    PGresult *res = run(L, c, sql, n, values);
    return res ? one_user(L, res, 1) : 2;
}

static int set_state(lua_State *L, const char *sql)
{
    kr_conn *c = self_conn(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    return user_statement(L, c, sql, id);
}

static int l_activate(lua_State *L)
{
    return set_state(L, "UPDATE users SET is_active = true, " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_deactivate(lua_State *L)
{
    return set_state(L, "UPDATE users SET is_active = false, " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_record_login(lua_State *L)
{
    return set_state(L, "UPDATE users SET last_login = clock_timestamp(), " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_delete(lua_State *L)
{
    kr_conn *c = self_conn(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    const char *values[1] = {id};
    PGresult *res = run(L, c, "DELETE FROM users WHERE id = $1", 1, values);
    if (res == NULL) return 2;
    int deleted = strcmp(PQcmdTuples(res), "0") != 0;
    kr_clearbox((PGresult **)lua_touserdata(L, -1));
    if (!deleted) return fail_field(L, "not_found", "id", "no user has this id%s", "");
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- list and count -------------------------------------------------------------------- */

typedef struct {
    const char *active;  /* "true", "false" or NULL for all */
    int limit;
    char ts[KR_CURSOR_TS_MAX];
    char id[37];
    int after;
} listopts;

/* Options at 2 (nil or a table); pushes an error object and returns 0 when one is not valid. */
static int list_options(lua_State *L, listopts *o, int with_paging)
{
    o->active = NULL;
    o->limit = LIST_DEFAULT;
    o->after = 0;
    if (lua_isnoneornil(L, 2)) return 1;
    check_table(L, 2, "options");
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        int known = strcmp(key, "active") == 0 || (with_paging && (strcmp(key, "limit") == 0 || strcmp(key, "after") == 0));
        lua_pop(L, 1);
        if (!known) {
            push_field_error(L, "invalid_field", key, "unknown option '%s'", key);
            lua_remove(L, -2);
            return 0;
        }
    }
    lua_getfield(L, 2, "active");
    if (lua_type(L, -1) == LUA_TBOOLEAN) {
        o->active = lua_toboolean(L, -1) ? "true" : "false";
    } else if (!lua_isnil(L, -1)) {
        push_field_error(L, "invalid_type", "active", "active must be a boolean or nil, got %s", luaL_typename(L, -1));
        return 0;
    }
    lua_pop(L, 1);
    if (!with_paging) return 1;
    lua_getfield(L, 2, "limit");
    if (lua_type(L, -1) == LUA_TNUMBER) {
        if (!kr_isinteger(L, -1) || kr_tointeger(L, -1) < 1 || kr_tointeger(L, -1) > LIST_MAX) {
            push_field_error(L, "invalid_field", "limit", "limit must be an integer from 1 to %d", LIST_MAX);
            return 0;
        }
        o->limit = (int)kr_tointeger(L, -1);
    } else if (!lua_isnil(L, -1)) {
        push_field_error(L, "invalid_type", "limit", "limit must be an integer, got %s", luaL_typename(L, -1));
        return 0;
    }
    lua_pop(L, 1);
    lua_getfield(L, 2, "after");
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *cur = lua_tolstring(L, -1, &len);
        if (!kr_cursor_decode(cur, len, o->ts, o->id)) {
            push_field_error(L, "invalid_field", "after", "after is not a cursor returned by users:list()");
            return 0;
        }
        o->after = 1;
    } else if (!lua_isnil(L, -1)) {
        push_field_error(L, "invalid_type", "after", "after must be a cursor string, got %s", luaL_typename(L, -1));
        return 0;
    }
    lua_pop(L, 1);
    return 1;
}

/* users:list{active =, limit =, after =} -> users, next cursor | nil, err.
 * Keyset pagination on (created_at, id): a page starts strictly after the previous one's last
 * row, so rows inserted meanwhile never shift the pages as OFFSET would. */
static int l_list(lua_State *L)
{
    kr_conn *c = self_conn(L);
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
    PGresult *res = run(L, c,
                        o.after ? "SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"
                                  " AND created_at >= $3::timestamptz AND (created_at, id) > ($3::timestamptz, $4::uuid)"
                                  " ORDER BY created_at, id LIMIT $2"
                                : "SELECT " COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"
                                  " ORDER BY created_at, id LIMIT $2",
                        o.after ? 4 : 2, values);
    if (res == NULL) {
        lua_getfield(L, -1, "sqlstate");
        const char *st = lua_tostring(L, -1);
        int bad_cursor = st && strncmp(st, "22", 2) == 0; /* a forged timestamp the server refused */
        lua_pop(L, 1);
        if (bad_cursor) {
            kr_seterrorfield(L, "code", "invalid_field");
            kr_seterrorfield(L, "field", "after");
            kr_seterrorfield(L, "message", "after is not a cursor returned by users:list()");
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
        push_user(L, res, i, names);
        lua_rawseti(L, -2, i + 1);
    }
    if (more) {
        char cursor[KR_CURSOR_MAX];
        size_t n = kr_cursor_encode(PQgetvalue(res, rows - 1, COL_CREATED_AT),
                                    (size_t)PQgetlength(res, rows - 1, COL_CREATED_AT),
                                    PQgetvalue(res, rows - 1, COL_ID), (size_t)PQgetlength(res, rows - 1, COL_ID), cursor);
        if (n == 0) {
            kr_clearbox((PGresult **)lua_touserdata(L, box));
            return kr_fail(L, "invalid_field", "created_at of a listed user cannot be paged after (not a finite timestamp)");
        }
        lua_pushlstring(L, cursor, n);
    } else {
        lua_pushnil(L);
    }
    kr_clearbox((PGresult **)lua_touserdata(L, box));
    return 2;
}

static int l_count(lua_State *L)
{
    kr_conn *c = self_conn(L);
    lua_settop(L, 2);
    listopts o;
    if (!list_options(L, &o, 0)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    const char *values[1] = {o.active};
    PGresult *res = run(L, c, "SELECT count(*) FROM users WHERE ($1::boolean IS NULL OR is_active = $1)", 1, values);
    if (res == NULL) return 2;
    kr_pushvalue(L, res, 0, 0);
    kr_clearbox((PGresult **)lua_touserdata(L, -2));
    return 1;
}

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
            push_field_error(L, "invalid_type", NULL, "must be a table of fields, got %s", luaL_typename(L, 5));
            set_index(L, i);
            return 0;
        }
        fieldval v[NFIELDS];
        if (!check_fields(L, 5, v, 1)) {
            set_index(L, i);
            return 0;
        }
        lua_pushvalue(L, 6);
        lua_rawget(L, 4);
        if (!lua_isnil(L, -1)) {
            push_field_error(L, "duplicate_email", "email", "email %s is also entry %d's", lua_tostring(L, 6),
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
        for (int k = 0; k < NFIELDS; k++) {
            luaL_addchar(&b, '\t');
            /* COPY's column order is FIELDS' order; an absent is_active gets the table's default */
            add_copy_value(&b, v[k].set ? v[k].s : NULL, v[k].len, FIELDS[k].kind == K_BOOL ? "true" : "\\N");
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
        map_server_error(L);
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
        map_server_error(L);
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
static int l_create_many(lua_State *L)
{
    kr_conn *c = self_conn(L);
    check_table(L, 2, "list");
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

/* ---- printing -------------------------------------------------------------------------- */

static void add_quoted(luaL_Buffer *b, const char *s, size_t len)
{
    luaL_addchar(b, '"');
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\') {
            luaL_addchar(b, '\\');
            luaL_addchar(b, (char)ch);
        } else if (ch == '\n' || ch == '\t' || ch == '\r') {
            luaL_addchar(b, '\\');
            luaL_addchar(b, ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r');
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, "\\%03d", ch);
            luaL_addstring(b, esc);
        } else {
            luaL_addchar(b, (char)ch);
        }
    }
    luaL_addchar(b, '"');
}

/* tostring(user): a one-line Lua constructor of its present fields, in column order. */
static int user_tostring(lua_State *L)
{
    static const char *const order[] = {"id", "email", "first_name", "last_name", "is_active",
                                        "profile_image_url", "last_login", "created_at", "updated_at"};
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "user{");
    int first = 1;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        lua_pushstring(L, order[i]);
        lua_rawget(L, 1);
        int t = lua_type(L, -1);
        size_t len = 0;
        const char *s = t == LUA_TSTRING || t == LUA_TNUMBER ? lua_tolstring(L, -1, &len)
                        : t == LUA_TBOOLEAN                 ? (lua_toboolean(L, -1) ? "true" : "false")
                        : t == LUA_TNIL                     ? NULL
                                                            : luaL_typename(L, -1);
        lua_pop(L, 1); /* a string stays referenced by the user */
        if (s == NULL) continue;
        luaL_addstring(&b, first ? " " : ", ");
        first = 0;
        luaL_addstring(&b, order[i]);
        luaL_addstring(&b, " = ");
        if (t == LUA_TSTRING)
            add_quoted(&b, s, len);
        else
            luaL_addstring(&b, s);
    }
    luaL_addstring(&b, first ? "}" : " }");
    luaL_pushresult(&b);
    return 1;
}

static int users_tostring(lua_State *L)
{
    lua_pushliteral(L, "conn");
    lua_rawget(L, 1);
    lua_pushfstring(L, "kronos.users on %s", luaL_typename(L, -1));
    if (luaL_testudata(L, -2, KR_CONN_CLASS) && luaL_callmeta(L, -2, "__tostring"))
        lua_pushfstring(L, "kronos.users on %s", lua_tostring(L, -1));
    return 1;
}

/* kronos.core.users_new(conn) -> the user model bound to conn. */
static int l_users_new(lua_State *L)
{
    kr_checkconn(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "conn");
    luaL_setmetatable(L, KR_USERS_CLASS);
    return 1;
}

static const luaL_Reg methods[] = {
    {"create", l_create},
    {"create_many", l_create_many},
    {"get", l_get},
    {"find_by_email", l_find_by_email},
    {"update", l_update},
    {"activate", l_activate},
    {"deactivate", l_deactivate},
    {"record_login", l_record_login},
    {"delete", l_delete},
    {"list", l_list},
    {"count", l_count},
    {NULL, NULL},
};

void kr_open_users(lua_State *L)
{
    luaL_newmetatable(L, KR_USERS_CLASS);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, users_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, KR_USER_CLASS);
    lua_pushcfunction(L, user_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "kronos.user");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    lua_pushcfunction(L, l_users_new);
    lua_setfield(L, -2, "users_new");
}
