/* The Kronos user model over the users table: validation first, then fixed SQL with every
 * value as a parameter. Users are plain tables with a __tostring for the REPL. */
#include <stdio.h>
#include <string.h>

#include "users.h"
#include "ddl_lua.h"

/* now() stands still inside a transaction; updated_at must still move forward on each change. */
#define TOUCH "updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond')"

/* nil, err with err.field = "id": an id that is no UUID, or no user with it. */
static int id_error(lua_State *L, const char *code, const char *message)
{
    kr_error_return(L, code, "%s", message);
    kr_error_setfield(L, "field", "id");
    return 2;
}

/* The id at idx: raises when it is not a string; NULL when it is not a UUID. */
static const char *check_id(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        kr_error_arg(L, idx, "id must be a string, got %s", luaL_typename(L, idx));
    size_t len;
    const char *id = lua_tolstring(L, idx, &len);
    return kr_check_uuid(id, len) ? id : NULL;
}

/* ---- running statements ---------------------------------------------------------------- */

/* Appends the placeholder $k. */
static void add_placeholder(kr_sql *b, int k)
{
    char p[16];
    snprintf(p, sizeof p, "$%d", k);
    kr_sql_adds(b, p);
}

/* The result's box at -1 -> its first row as a user, or nil / not_found when there is none. */
static int one_user(lua_State *L, PGresult *res, int missing_is_error)
{
    if (PQntuples(res) == 0) {
        kr_dropbox(L, -1);
        lua_pop(L, 1);
        if (missing_is_error) return id_error(L, "not_found", "no user has this id");
        lua_pushnil(L);
        return 1;
    }
    kr_pushcolnames(L, res);
    kr_users_pushuser(L, res, 0, lua_gettop(L));
    kr_dropbox(L, -3);
    return 1;
}

/* Runs a fixed statement on one user by id ($1) that returns the row, or not_found. */
static int user_statement(lua_State *L, kr_conn *c, int st, const char *sql, const char *id)
{
    const char *values[1] = {id};
    PGresult *res = kr_users_run(L, c, st, sql, 1, values);
    return res ? one_user(L, res, 1) : 2;
}

/* The error object at -1 -> nil, err. */
static int returned(lua_State *L)
{
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* ---- methods --------------------------------------------------------------------------- */

static int l_create(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    kr_users_checktable(L, 2, "fields");
    lua_settop(L, 2);
    kr_fieldval v[KR_USER_NFIELDS];
    if (!kr_users_check_fields(L, 2, v, 1)) return returned(L);
    char id[37];
    kr_uuid_format(L, id);
    const char *values[KR_USER_MAXPARAMS];
    values[0] = id;
    kr_sql b;
    kr_sql_init(L, &b);
    int n = 1, mask = 0;
    kr_sql_adds(&b, "INSERT INTO " KR_USERS_TABLE " (" KR_USERS_ID);
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        if (!v[i].set) continue;
        values[n++] = v[i].s;
        mask |= 1 << i;
        kr_sql_adds(&b, ", ");
        kr_sql_adds(&b, kr_user_fields[i].name);
    }
    kr_sql_adds(&b, ") VALUES ($1");
    for (int k = 2; k <= n; k++) {
        kr_sql_adds(&b, ", ");
        add_placeholder(&b, k);
    }
    kr_sql_adds(&b, ") RETURNING " COLS);
    kr_sql_add(&b, "", 1);   /* the NUL */
    PGresult *res = kr_users_run(L, c, ST_CREATE + mask, b.p, n, values);
    return res ? one_user(L, res, 1) : 2;
}

static int l_get(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return id_error(L, "invalid_uuid", "id is not a UUID");
    const char *values[1] = {id};
    PGresult *res = kr_users_run(L, c, ST_GET, "SELECT " COLS " FROM " KR_USERS_TABLE " WHERE id = $1", 1, values);
    return res ? one_user(L, res, 0) : 2;
}

static int l_find_by_email(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    if (lua_type(L, 2) != LUA_TSTRING)
        kr_error_arg(L, 2, "email must be a string, got %s", luaL_typename(L, 2));
    lua_settop(L, 2);
    kr_fieldval v;
    if (!kr_users_field_value(L, &kr_user_fields[0], &v)) return returned(L);
    const char *values[1] = {v.s};
    PGresult *res = kr_users_run(L, c, ST_FIND_BY_EMAIL, "SELECT " COLS " FROM " KR_USERS_TABLE " WHERE email = $1", 1, values);
    return res ? one_user(L, res, 0) : 2;
}

static int l_update(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    kr_users_checktable(L, 3, "fields");
    lua_settop(L, 3);
    if (id == NULL) return id_error(L, "invalid_uuid", "id is not a UUID");
    kr_fieldval v[KR_USER_NFIELDS];
    if (!kr_users_check_fields(L, 3, v, 0)) return returned(L);
    const char *values[KR_USER_MAXPARAMS];
    values[0] = id;
    kr_sql b;
    kr_sql_init(L, &b);
    int n = 1, mask = 0;
    kr_sql_adds(&b, "UPDATE " KR_USERS_TABLE " SET ");
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        if (!v[i].set) continue;
        values[n++] = v[i].s;
        mask |= 1 << i;
        kr_sql_adds(&b, kr_user_fields[i].name);
        kr_sql_adds(&b, " = ");
        add_placeholder(&b, n);
        kr_sql_adds(&b, ", ");
    }
    kr_sql_adds(&b, TOUCH " WHERE id = $1 RETURNING " COLS);
    kr_sql_add(&b, "", 1);   /* the NUL */
    PGresult *res = kr_users_run(L, c, ST_UPDATE + mask, b.p, n, values);
    return res ? one_user(L, res, 1) : 2;
}

static int set_state(lua_State *L, int st, const char *sql)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return id_error(L, "invalid_uuid", "id is not a UUID");
    return user_statement(L, c, st, sql, id);
}

static int l_activate(lua_State *L)
{
    return set_state(L, ST_ACTIVATE, "UPDATE " KR_USERS_TABLE " SET is_active = true, " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_deactivate(lua_State *L)
{
    return set_state(L, ST_DEACTIVATE, "UPDATE " KR_USERS_TABLE " SET is_active = false, " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_record_login(lua_State *L)
{
    return set_state(L, ST_RECORD_LOGIN, "UPDATE " KR_USERS_TABLE " SET last_login = clock_timestamp(), " TOUCH " WHERE id = $1 RETURNING " COLS);
}

static int l_delete(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    const char *id = check_id(L, 2);
    if (id == NULL) return id_error(L, "invalid_uuid", "id is not a UUID");
    const char *values[1] = {id};
    PGresult *res = kr_users_run(L, c, ST_DELETE, "DELETE FROM " KR_USERS_TABLE " WHERE id = $1", 1, values);
    if (res == NULL) return 2;
    int deleted = strcmp(PQcmdTuples(res), "0") != 0;
    kr_dropbox(L, -1);
    if (!deleted) return id_error(L, "not_found", "no user has this id");
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- printing -------------------------------------------------------------------------- */

/* tostring(user): a one-line Lua constructor of its present fields, in column order. */
static int user_tostring(lua_State *L)
{
    if (!lua_istable(L, 1)) kr_error_arg(L, 1, "user expected, got %s", luaL_typename(L, 1));
    lua_settop(L, 1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "user{");
    int first = 1;
    for (const char *col = COLS; *col; col += strspn(col, ", ")) {   /* the columns in order */
        size_t clen = strcspn(col, ",");
        lua_pushlstring(L, col, clen);
        col += clen;
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
        luaL_addlstring(&b, col - clen, clen);
        luaL_addstring(&b, " = ");
        if (t == LUA_TSTRING) {
            luaL_addchar(&b, '"');
            kr_error_addescaped(&b, s, len, '"');
            luaL_addchar(&b, '"');
        } else {
            luaL_addstring(&b, s);
        }
    }
    luaL_addstring(&b, first ? "}" : " }");
    luaL_pushresult(&b);
    return 1;
}

/* tostring(users): "kronos.users on " and its connection's tostring (the type of what it holds
 * when that is no connection), for the REPL. */
static int users_tostring(lua_State *L)
{
    lua_pushliteral(L, "conn");
    lua_rawget(L, 1);
    lua_pushfstring(L, "kronos.users on %s", luaL_typename(L, -1));
    if (lua_type(L, -2) == LUA_TUSERDATA && kr_testclass(L, -2, KR_CONN_CLASS) && luaL_callmeta(L, -2, "__tostring"))
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

/* kronos.core.users_model() -> a new table of the facts the C model assumes about the users
 * table: the column list it selects (COLS), the positions it reads by number, each field's kind,
 * lengths and server default (create_many writes it for an absent field), and the constraint
 * names it maps server errors by. A fresh copy each call, so Lua cannot change what C uses;
 * spec/users_model_spec.lua proves every value against pg_catalog. */
static int l_users_model(lua_State *L)
{
    lua_createtable(L, 0, 5);
    lua_pushliteral(L, KR_USERS_TABLE);
    lua_setfield(L, -2, "table");
    lua_newtable(L); /* columns, in COLS order */
    int n = 0;
    for (const char *col = COLS; *col; col += strspn(col, ", ")) {
        size_t clen = strcspn(col, ",");
        lua_pushlstring(L, col, clen);
        lua_rawseti(L, -2, ++n);
        col += clen;
    }
    lua_setfield(L, -2, "columns");
    lua_createtable(L, 0, 2); /* 1-based positions in columns of what C reads by number */
    lua_pushinteger(L, COL_ID + 1);
    lua_setfield(L, -2, "id");
    lua_pushinteger(L, COL_CREATED_AT + 1);
    lua_setfield(L, -2, "created_at");
    lua_setfield(L, -2, "positions");
    lua_createtable(L, 0, KR_USER_NFIELDS);
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        const struct kr_user_field *f = &kr_user_fields[i];
        lua_createtable(L, 0, 3);
        static const char *const kinds[] = {[K_EMAIL] = "email", [K_NAME] = "text", [K_URL] = "url", [K_BOOL] = "boolean"};
        lua_pushstring(L, kinds[f->kind]);
        lua_setfield(L, -2, "kind");
        int max = f->kind == K_EMAIL ? KR_EMAIL_MAX : f->kind == K_NAME ? KR_NAME_MAX : f->kind == K_URL ? KR_URL_MAX : 0;
        if (max) {
            lua_pushinteger(L, max);
            lua_setfield(L, -2, "max_length");
        }
        if (f->kind == K_EMAIL) {
            lua_pushinteger(L, KR_EMAIL_MIN);
            lua_setfield(L, -2, "min_length");
        }
        if (f->server_default) {
            lua_pushstring(L, f->server_default);
            lua_setfield(L, -2, "server_default");
        }
        lua_setfield(L, -2, f->name);
    }
    lua_setfield(L, -2, "fields");
    lua_createtable(L, 0, 3);
    lua_pushliteral(L, KR_USERS_PKEY);
    lua_setfield(L, -2, "primary_key");
    lua_pushliteral(L, KR_USERS_EMAIL_UNIQUE);
    lua_setfield(L, -2, "email_unique");
    lua_pushliteral(L, KR_USERS_EMAIL_LENGTH);
    lua_setfield(L, -2, "email_length");
    lua_setfield(L, -2, "constraints");
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
    kr_users_open_batch(L);
    lua_pushcfunction(L, l_users_new);
    lua_setfield(L, -2, "users_new");
    lua_pushcfunction(L, l_users_model);
    lua_setfield(L, -2, "users_model");
}
