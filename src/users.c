/* The Kronos user model over the users table: validation first, then fixed SQL with every
 * value as a parameter. Users are plain tables with a __tostring for the REPL. */
#include <stdio.h>
#include <string.h>

#include "users.h"

/* now() stands still inside a transaction; updated_at must still move forward on each change. */
#define TOUCH "updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond')"

static int fail_field(lua_State *L, const char *code, const char *field, const char *fmt, const char *arg)
{
    lua_pushnil(L);
    kr_users_error(L, code, field, fmt, arg);
    return 2;
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
kr_conn *kr_users_self(lua_State *L)
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

void kr_users_checktable(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_argerror(L, idx, lua_pushfstring(L, "%s must be a table, got %s", what, luaL_typename(L, idx)));
}

/* ---- running statements ---------------------------------------------------------------- */

/* Runs sql with n text parameters; the boxed result is left on the stack, or nil, err. */
PGresult *kr_users_run(lua_State *L, kr_conn *c, int id, const char *sql, int n, const char **values)
{
    PGresult *res = kr_prepared_exec(L, c, id, sql, n, values);
    if (res == NULL) kr_users_map_error(L);
    return res;
}

/* Appends s at *p (the callers' buffers are sized for the longest statement). */
static void add(char **p, const char *s)
{
    size_t len = strlen(s);
    memcpy(*p, s, len + 1);
    *p += len;
}

static const char *const placeholder[MAXPARAMS + 1] = {"$0", "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"};

void kr_users_pushuser(lua_State *L, const PGresult *res, int row, int names)
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
    kr_users_pushuser(L, res, 0, lua_gettop(L));
    kr_clearbox((PGresult **)lua_touserdata(L, -3));
    return 1;
}

/* Runs a fixed statement on one user by id ($1) that returns the row, or not_found. */
static int user_statement(lua_State *L, kr_conn *c, int st, const char *sql, const char *id)
{
    const char *values[1] = {id};
    PGresult *res = kr_users_run(L, c, st, sql, 1, values);
    return res ? one_user(L, res, 1) : 2;
}

/* ---- methods --------------------------------------------------------------------------- */

static int l_create(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    kr_users_checktable(L, 2, "fields");
    lua_settop(L, 2);
    kr_fieldval v[KR_USER_NFIELDS];
    if (!kr_users_check_fields(L, 2, v, 1)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    char id[37];
    kr_uuid_format(id);
    const char *values[MAXPARAMS];
    values[0] = id;
    char sql[512], *p = sql;
    int n = 1, mask = 0;
    add(&p, "INSERT INTO users (id");
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        if (!v[i].set) continue;
        values[n++] = v[i].s;
        mask |= 1 << i;
        add(&p, ", ");
        add(&p, kr_user_fields[i].name);
    }
    add(&p, ") VALUES ($1");
    for (int k = 2; k <= n; k++) {
        add(&p, ", ");
        add(&p, placeholder[k]);
    }
    add(&p, ") RETURNING " COLS);
    PGresult *res = kr_users_run(L, c, ST_CREATE + mask, sql, n, values);
    return res ? one_user(L, res, 1) : 2;
}

static int l_get(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    const char *values[1] = {id};
    PGresult *res = kr_users_run(L, c, ST_GET, "SELECT " COLS " FROM users WHERE id = $1", 1, values);
    return res ? one_user(L, res, 0) : 2;
}

static int l_find_by_email(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    if (lua_type(L, 2) != LUA_TSTRING)
        luaL_argerror(L, 2, lua_pushfstring(L, "email must be a string, got %s", luaL_typename(L, 2)));
    lua_settop(L, 2);
    kr_fieldval v;
    if (!kr_users_field_value(L, &kr_user_fields[0], &v)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    const char *values[1] = {v.s};
    PGresult *res = kr_users_run(L, c, ST_FIND_BY_EMAIL, "SELECT " COLS " FROM users WHERE email = $1", 1, values);
    return res ? one_user(L, res, 0) : 2;
}

static int l_update(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    kr_users_checktable(L, 3, "fields");
    lua_settop(L, 3);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    kr_fieldval v[KR_USER_NFIELDS];
    if (!kr_users_check_fields(L, 3, v, 0)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    const char *values[MAXPARAMS];
    values[0] = id;
    char sql[512], *p = sql;
    int n = 1, mask = 0;
    add(&p, "UPDATE users SET ");
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        if (!v[i].set) continue;
        values[n++] = v[i].s;
        mask |= 1 << i;
        add(&p, kr_user_fields[i].name);
        add(&p, " = ");
        add(&p, placeholder[n]);
        add(&p, ", ");
    }
    add(&p, TOUCH " WHERE id = $1 RETURNING " COLS);
    PGresult *res = kr_users_run(L, c, ST_UPDATE + mask, sql, n, values);
    return res ? one_user(L, res, 1) : 2;
}

static int set_state(lua_State *L, int st, const char *sql)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    return user_statement(L, c, st, sql, id);
}

static int l_activate(lua_State *L)
{
    return set_state(L, ST_ACTIVATE, "UPDATE users SET is_active = true, " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_deactivate(lua_State *L)
{
    return set_state(L, ST_DEACTIVATE, "UPDATE users SET is_active = false, " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_record_login(lua_State *L)
{
    return set_state(L, ST_RECORD_LOGIN, "UPDATE users SET last_login = clock_timestamp(), " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_delete(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return fail_field(L, "invalid_uuid", "id", "id is not a UUID%s", "");
    const char *values[1] = {id};
    PGresult *res = kr_users_run(L, c, ST_DELETE, "DELETE FROM users WHERE id = $1", 1, values);
    if (res == NULL) return 2;
    int deleted = strcmp(PQcmdTuples(res), "0") != 0;
    kr_clearbox((PGresult **)lua_touserdata(L, -1));
    if (!deleted) return fail_field(L, "not_found", "id", "no user has this id%s", "");
    lua_pushboolean(L, 1);
    return 1;
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
    {"create_many", kr_users_create_many},
    {"get", l_get},
    {"find_by_email", l_find_by_email},
    {"update", l_update},
    {"activate", l_activate},
    {"deactivate", l_deactivate},
    {"record_login", l_record_login},
    {"delete", l_delete},
    {"list", kr_users_list},
    {"count", kr_users_count},
    {NULL, NULL},
};

void kr_open_users(lua_State *L)
{
    static const luaL_Reg users_meta[] = {{"__tostring", users_tostring}, {NULL, NULL}};
    static const luaL_Reg user_meta[] = {{"__tostring", user_tostring}, {NULL, NULL}};
    kr_newclass(L, KR_USERS_CLASS, methods, users_meta);
    kr_newclass(L, KR_USER_CLASS, NULL, user_meta);
    lua_pushcfunction(L, l_users_new);
    lua_setfield(L, -2, "users_new");
}
