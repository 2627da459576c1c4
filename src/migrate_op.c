/* The op proxy given to a migration's up/down: op.<helper>(...) runs the statements that
 * kronos.core.ddl.<helper> builds, op.execute(sql) runs raw SQL, op.db is the connection (nil
 * offline). Every statement goes through the run's kr_step_emit, so online and offline runs
 * execute the same statements in the same order. Upvalues of every closure: 1 = the run
 * userdata, 2 = the run's environment table. */
#include <string.h>

#include "lint.h"
#include "migrate.h"
#include "option.h"

enum { UP_RUN = 1, UP_ENV, UP_BUILDER, UP_NAME }; /* upvalues (the last two: builders only) */

static kr_run *op_run(lua_State *L)
{
    kr_run *r = (kr_run *)lua_touserdata(L, lua_upvalueindex(UP_RUN));
    if (!r->active) kr_error_raise(L, "bad_migration", "op was used outside of its migration's up/down function");
    /* op:name(...) works as well as op.name(...) */
    lua_getfield(L, lua_upvalueindex(UP_ENV), "op");
    if (lua_gettop(L) > 1 && lua_rawequal(L, 1, -1)) lua_remove(L, 1);
    lua_pop(L, 1);
    return r;
}

/* op.execute(sql): raw SQL, several statements allowed. */
static int op_execute(lua_State *L)
{
    kr_run *r = op_run(L);
    r->watch.generated = 0;
    size_t len;
    if (lua_type(L, 1) != LUA_TSTRING) {
        kr_error_setfname(L, "execute");
        kr_error_arg(L, 1, "SQL text (string) expected, got %s", luaL_typename(L, 1));
    }
    const char *sql = lua_tolstring(L, 1, &len);
    if (strlen(sql) != len) {
        kr_error_setfname(L, "execute");
        kr_error_arg(L, 1, "SQL contains a NUL byte");
    }
    /* a trailing ';' would double in the offline output */
    while (len > 0 && (sql[len - 1] == ';' || sql[len - 1] == ' ' || sql[len - 1] == '\n' ||
                       sql[len - 1] == '\t' || sql[len - 1] == '\r'))
        len--;
    if (len == 0) return 0;
    lua_pushlstring(L, sql, len);
    const char *ends = r->intx ? kr_sqlscan_txcontrol(lua_tostring(L, -1)) : NULL;
    if (ends)
        /* it would end the run's transaction and its lock, and what follows would run outside */
        kr_error_raise(L, "transaction_control", "op.execute: %s would end the migration's transaction (and release the "
                       "migration lock); nothing was run. Give the migration transactional = false to manage transactions "
                       "yourself", ends);
    kr_step_emit(L, r, lua_upvalueindex(UP_ENV), lua_tostring(L, -1));
    return 0;
}

/* A builder's error at -1 is raised again, naming the helper and where the migration called it:
 * "migrations/x.lua:12: bad argument #2 to 'create_table' (...)". The builder, called from C,
 * cannot know the name Lua would give it: kr_error_arg reads it from kr_error_setfname. */
_Noreturn static void builder_failed(lua_State *L, const char *name)
{
    kr_error_setfname(L, NULL);
    if (kr_testclass(L, -1, KR_ERROR_CLASS)) {
        lua_getfield(L, -1, "message");
        luaL_where(L, 1); /* the migration's line that called op.<name> */
        lua_pushfstring(L, "%s%s", lua_tostring(L, -1), lua_tostring(L, -2));
        lua_setfield(L, -4, "message");
        lua_pop(L, 2);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "func");
    }
    kr_error_throw(L);
}

/* op.<builder>(...): core.ddl.<builder>(...) returns the statements; each one runs. */
static int op_builder(lua_State *L)
{
    kr_run *r = op_run(L);
    int n = lua_gettop(L);
    kr_lint_strip_safe(L, n); /* safe = true is advice for the DDL check (lint.c), not a builder option */
    const char *name = lua_tostring(L, lua_upvalueindex(UP_NAME));
    lua_pushvalue(L, lua_upvalueindex(UP_BUILDER));
    lua_insert(L, 1);
    kr_error_setfname(L, name);
    if (lua_pcall(L, n, 1, 0) != 0) builder_failed(L, name);
    kr_error_setfname(L, NULL);
    r->watch.generated = 1; /* kronos generated these statements (a non-transactional step may resume them) */
    if (lua_type(L, -1) == LUA_TSTRING) {
        kr_step_emit(L, r, lua_upvalueindex(UP_ENV), lua_tostring(L, -1));
        r->watch.generated = 0;
        return 0;
    }
    if (!lua_istable(L, -1)) kr_error_raise(L, "bad_migration", "ddl.%s returned %s, not an array of statements", name, luaL_typename(L, -1));
    int t = lua_gettop(L);
    for (int i = 1; i <= (int)lua_rawlen(L, t); i++) {
        lua_rawgeti(L, t, i);
        if (lua_type(L, -1) != LUA_TSTRING) kr_error_raise(L, "bad_migration", "ddl.%s returned a non-string statement", name);
        kr_step_emit(L, r, lua_upvalueindex(UP_ENV), lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    r->watch.generated = 0;
    return 0;
}

/* The builders are looked up in core.ddl on first use; pure helpers pass through unchanged. */
static int op_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING) kr_error_raise(L, "bad_migration", "op has only named fields, not %s keys", luaL_typename(L, 2));
    const char *key = lua_tostring(L, 2);
    if (strcmp(key, "db") == 0) {
        /* The migration reaches the connection itself: what op collected must have run first,
         * and from here on this migration's statements run one by one, in the order given. */
        kr_run *r = (kr_run *)lua_touserdata(L, lua_upvalueindex(UP_RUN));
        if (r->active) kr_batch_close(L, r, lua_upvalueindex(UP_ENV));
        if (r->active) kr_resume_raw(L, r, lua_upvalueindex(UP_ENV)); /* in a non-transactional step */
        if (r->active && r->offline && r->cur_rev && r->db_noted != r->cur_rev) {
            /* offline op.db is nil: a guarded use silently skips its work, so the script says so */
            r->db_noted = r->cur_rev;
            lua_pushfstring(L, "-- %s: revision %s reads op.db, which is nil offline: the database work it does "
                               "through op.db is NOT in this script", r->cur_file, r->cur_rev);
            kr_emit_comment(L, r, lua_upvalueindex(UP_ENV), lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_getfield(L, lua_upvalueindex(UP_ENV), "db");
        return 1;
    }
    lua_getfield(L, lua_upvalueindex(UP_ENV), "ddl");
    if (!lua_istable(L, -1)) kr_error_raise(L, "bad_migration", "op.%s: the DDL helpers (kronos.core.ddl) are not available", key);
    lua_getfield(L, -1, key);
    if (!lua_isfunction(L, -1)) kr_error_raise(L, "bad_migration", "op.%s: no such DDL helper", key);
    if (strcmp(key, "sql") == 0 || strcmp(key, "quote_ident") == 0 || strcmp(key, "quote_literal") == 0) return 1;
    lua_pushvalue(L, lua_upvalueindex(UP_RUN));
    lua_pushvalue(L, lua_upvalueindex(UP_ENV));
    lua_pushvalue(L, -3);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, op_builder, 4);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

void kr_op_make(lua_State *L, int run_idx, int env, int conn_idx, int opts)
{
    lua_createtable(L, 0, 4);
    if (!kr_option_typed(L, opts, 1, "opts", "x", LUA_TTABLE)) { /* the CLI's -x key=value pairs */
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_setfield(L, -2, "x");
    lua_pushvalue(L, run_idx);
    lua_pushvalue(L, env);
    lua_pushcclosure(L, op_execute, 2);
    lua_setfield(L, -2, "execute");
    lua_pushboolean(L, ((kr_run *)lua_touserdata(L, run_idx))->offline);
    lua_setfield(L, -2, "offline");
    lua_pushvalue(L, conn_idx); /* op.db: served by op_index */
    lua_setfield(L, env, "db");
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, run_idx);
    lua_pushvalue(L, env);
    lua_pushcclosure(L, op_index, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, env, "op");
}
