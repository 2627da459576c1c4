/* What every method file of the user model needs: the receiver, running one of the model's
 * statements, a row as a user, and the model's reading of server errors. */
#include <string.h>

#include "users.h"

/* self at 1: the users object; its connection stays referenced by self. */
kr_conn *kr_users_self(lua_State *L)
{
    if (!lua_istable(L, 1) || !kr_testclass(L, 1, KR_USERS_CLASS))
        kr_error_arg(L, 1, "users object expected (call methods as users:method(...))");
    lua_pushliteral(L, "conn");
    lua_rawget(L, 1);
    kr_conn *c = lua_type(L, -1) == LUA_TUSERDATA && kr_testclass(L, -1, KR_CONN_CLASS)
                 ? (kr_conn *)lua_touserdata(L, -1) : NULL;
    lua_pop(L, 1);
    if (c == NULL) kr_error_arg(L, 1, "users object has no connection");
    if (c->pg == NULL) kr_error_arg(L, 1, "the users object's connection is closed");
    return c;
}

void kr_users_checktable(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) != LUA_TTABLE)
        kr_error_arg(L, idx, "%s must be a table, got %s", what, luaL_typename(L, idx));
}

/* Server errors the model can explain (a unique race, the email check) get the model's codes;
 * the server's fields (sqlstate, constraint, detail) stay. err at -1. */
void kr_users_map_error(lua_State *L)
{
    lua_getfield(L, -1, "sqlstate");
    lua_getfield(L, -2, "constraint");
    const char *state = lua_tostring(L, -2), *con = lua_tostring(L, -1);
    const char *code = NULL, *field = NULL, *msg = NULL;
    if (state && strcmp(state, "23505") == 0 && con && strcmp(con, KR_USERS_EMAIL_UNIQUE) == 0) {
        code = "duplicate_email", field = "email", msg = "a user with this email already exists";
    } else if (state && strcmp(state, "23514") == 0 && con && strcmp(con, KR_USERS_EMAIL_LENGTH) == 0) {
        code = "invalid_email", field = "email", msg = "email must be at least 5 characters";
    } else if (state && strcmp(state, "22001") == 0) {
        code = "too_long";
    } else if (state && strcmp(state, "22021") == 0) {
        code = "invalid_utf8";
    }
    lua_pop(L, 2);
    kr_error_setfield(L, "code", code);
    kr_error_setfield(L, "field", field);
    kr_error_setfield(L, "message", msg);
}

/* Runs statement id with n text parameters; the boxed result is left on the stack, or nil, err
 * (with the model's codes). */
PGresult *kr_users_run(lua_State *L, kr_conn *c, int id, const char *sql, int n, const char **values)
{
    PGresult *res = kr_prepared_exec(L, c, id, sql, n, values);
    if (res == NULL) kr_users_map_error(L);
    return res;
}

void kr_users_pushuser(lua_State *L, const PGresult *res, int row, int names)
{
    kr_pushrow(L, res, row, PQnfields(res), names);
    luaL_setmetatable(L, KR_USER_CLASS);
}
