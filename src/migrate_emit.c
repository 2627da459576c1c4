/* Where a statement of the run goes: told to opts.echo, then output (offline) or sent through
 * the batch (online), so that online and offline runs are the same statements in the same order.
 * kr_emit is the run's own way (BEGIN, the lock, version rows, markers); a migration's statements
 * come through kr_step_emit, which watches a non-transactional step's first. */
#include <string.h>

#include "migrate_run.h"

/* Tells opts.echo a statement the run executes (the specs compare the echo with the offline SQL);
 * the lock, which online is polled with other statements, is echoed as its offline form. */
void kr_emit_echo(lua_State *L, kr_run *r, int env, const char *sql)
{
    if (!r->has_echo) return;
    lua_getfield(L, env, "echo");
    lua_pushstring(L, sql);
    lua_call(L, 1, 0);
}

/* Runs one statement (online; in a batch it may be collected) or appends it to the output
 * (offline); raises on SQL errors. */
void kr_emit(lua_State *L, kr_run *r, int env, const char *sql)
{
    kr_emit_echo(L, r, env, sql);
    if (!r->offline) {
        kr_batch_add(L, r, env, sql);
        return;
    }
    lua_rawgeti(L, env, KR_ENV_OUT);
    lua_pushstring(L, sql);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* An SQL comment line for the offline output (nothing online: the server has no use for it). A
 * line break (\n or \r) would end the comment and turn the rest of a message into SQL, so
 * control characters are escaped as in error messages (kr_error_addescaped: \n, \r, \t, \ddd).
 * The line is output as {text}, a table: migrate.lua prints it as it is, with no terminator, and
 * leaves it out of the statements it returns. */
void kr_emit_comment(lua_State *L, kr_run *r, int env, const char *text)
{
    if (!r->offline) return;
    lua_rawgeti(L, env, KR_ENV_OUT);
    lua_createtable(L, 1, 0);
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    kr_error_addescaped(&buf, text, strlen(text), 0);
    luaL_pushresult(&buf);
    lua_rawseti(L, -2, 1);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}
