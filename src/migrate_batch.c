/* Round trips (online only). The opening of a transactional segment (BEGIN .. the version read)
 * and each transactional migration (its version row, its DDL, its execution time) are collected
 * and sent as one multi-statement query each. The server runs exactly the statements of the
 * offline SQL, in the same order and transaction; only the number of round trips changes.
 *
 * The state is kr_run.batch: `on` while statements are collected, `n` of them in
 * env[KR_ENV_PENDING]; only the functions of this file change it. */
#include <string.h>

#include "migrate_run.h"

/* Adds sql to the list env[slot]: kept as a Lua string, so the caller's buffer may go. */
static void append(lua_State *L, int env, int slot, const char *sql)
{
    lua_rawgeti(L, env, slot);
    lua_pushstring(L, sql);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* Sends the collected statements as one query. Leaves the boxed result of the last one on the
 * stack and returns it, or pushes the error object and returns NULL. Raises transaction_ended
 * when the query ended the run's transaction: a COMMIT or ROLLBACK the scan of op.execute could
 * not see (op.db, doubtful text) must not let the later statements run outside it unnoticed
 * (the session is left outside a transaction, or the step's guard raised: see kr_step_run). */
static PGresult *batch_send(lua_State *L, kr_run *r, int env)
{
    if (r->c->pg == NULL) kr_error_raise(L, "connection", "the connection was closed during the migration");
    lua_rawgeti(L, env, KR_ENV_PENDING);
    int t = lua_gettop(L);
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int i = 1; i <= r->batch.n; i++) {
        if (i > 1) luaL_addstring(&buf, ";\n");
        lua_rawgeti(L, t, i);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    lua_newtable(L);
    lua_rawseti(L, env, KR_ENV_PENDING);
    r->batch.n = 0;
    PGresult *res = kr_execscript(L, r->c, lua_tostring(L, -1));
    lua_remove(L, t);
    lua_remove(L, t); /* the query text */
    if ((res && r->intx && r->c->tx_ended) || (res == NULL && kr_tx_guard_failed(L, -1)))
        kr_error_raise(L, "transaction_ended", "its SQL ended the migration's transaction (COMMIT or ROLLBACK): the "
                       "step is not recorded; what the transaction held before that statement was committed or rolled "
                       "back by it, and what ran after it ran outside; the run stopped");
    return res;
}

/* Sends what was collected, if anything; raises on SQL errors (the caller has no use for the
 * result: the statements that need one end the batch with kr_batch_query). */
static void batch_flush(lua_State *L, kr_run *r, int env)
{
    if (r->batch.n == 0) return;
    if (batch_send(L, r, env) == NULL) lua_error(L);
    kr_dropbox(L, -1);
    lua_pop(L, 1);
}

/* From here on, batchable statements are collected (online only: offline every statement is
 * output anyway). */
void kr_batch_open(kr_run *r)
{
    r->batch.on = !r->offline;
    r->batch.n = 0;
}

/* Sends what was collected and stops collecting: before anything that must see the statements
 * done (op.db, a step's end, the COMMIT). Raises on SQL errors. */
void kr_batch_close(lua_State *L, kr_run *r, int env)
{
    if (!r->batch.on) return;
    batch_flush(L, r, env);
    r->batch.on = 0;
}

/* Runs sql now, or, while collecting and when it can share a query, collects it. A statement
 * that runs alone (the batch is closed, or kr_sqlscan_batchable doubts that joined to others it
 * would still be read as written) sends what came before it first, so the order is the one of
 * the offline SQL. Raises on SQL errors. */
void kr_batch_add(lua_State *L, kr_run *r, int env, const char *sql)
{
    int alone = !r->batch.on || !kr_sqlscan_batchable(sql);
    if (alone) batch_flush(L, r, env);
    append(L, env, KR_ENV_PENDING, sql);
    r->batch.n++;
    if (alone) batch_flush(L, r, env);
}

/* Ends the batch with a query whose result the caller needs (the version read): the collected
 * statements and sql go as one round trip. Same contract as batch_send: the result of sql is left
 * boxed on the stack and returned, or the error object is pushed and NULL returned, so the
 * caller can tell a lock timeout from other errors. */
PGresult *kr_batch_query(lua_State *L, kr_run *r, int env, const char *sql)
{
    append(L, env, KR_ENV_PENDING, sql);
    r->batch.n++;
    r->batch.on = 0;
    return batch_send(L, r, env);
}
