/* conn:transaction(fn, ...): fn's statements as one transaction, or a savepoint when nested. */
#include <stdio.h>
#include <string.h>

#include "kronos.h"

static int simple(lua_State *L, kr_conn *c, const char *sql)
{
    PGresult *res = kr_execscript(L, c, sql);
    if (res == NULL) return 0;
    kr_dropbox(L, -1);
    lua_pop(L, 1);
    return 1;
}

/* The mark of conn:transaction's own transaction, set with its BEGIN (kronos.h, KR_TX_GUARD). */
#define TX_BEGIN "BEGIN; SELECT set_config('kronos.tx', 'on', true)"
#define TX_COMMIT "SELECT " KR_TX_GUARD("kronos.tx", "boolean") "; COMMIT"

/* 1 when the error object at idx was raised by a KR_TX_GUARD expression: its message is the
 * server's "invalid input syntax" quoting KR_TX_ENDED_TEXT, which no other statement of kronos's
 * writes. */
int kr_tx_guard_failed(lua_State *L, int idx)
{
    lua_getfield(L, idx, "message");
    const char *msg = lua_tostring(L, -1);
    int guard = msg != NULL && strstr(msg, KR_TX_ENDED_TEXT) != NULL;
    lua_pop(L, 1);
    return guard;
}

/* Ends the transaction (or savepoint) fn ran in, after an error: nothing else is sent first. */
static void rollback(kr_conn *c, int nested, int depth)
{
    char sql[96];
    if (nested)
        snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT kronos_%d; RELEASE SAVEPOINT kronos_%d", depth, depth);
    else
        strcpy(sql, "ROLLBACK");
    c->stream_drain = 0; /* the work is rolled back anyway: cancel an abandoned stream */
    kr_endstream(c);
    PQclear(PQexec(c->pg, sql)); /* a lost connection has rolled back already */
}

/* nil, err for a function that ended the transaction itself: its work was not one unit. */
static int ended(lua_State *L)
{
    return kr_error_return(L, "transaction_ended", "the function ended the transaction itself (COMMIT or ROLLBACK "
                           "inside conn:transaction): its work did not run as one transaction");
}

/* conn:transaction(fn, ...): BEGIN (or SAVEPOINT when nested), fn(conn, ...), COMMIT.
 * If fn raises, ROLLBACK (TO SAVEPOINT) and re-raise the same value. A transaction the caller
 * opened with its own BEGIN counts as an outer one, so it is never committed from here. */
int kr_transaction(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (lua_type(L, 2) != LUA_TFUNCTION) kr_error_arg(L, 2, "function expected, got %s", luaL_typename(L, 2));
    int nargs = lua_gettop(L) - 2;
    int depth = c->txdepth;
    kr_conn_ready(L, c);
    int nested = depth > 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    char savepoint[64];
    snprintf(savepoint, sizeof savepoint, "SAVEPOINT kronos_%d", depth);
    if (!simple(L, c, nested ? savepoint : TX_BEGIN)) return 2;
    if (depth == 0) c->tx_ended = 0;
    c->txdepth = depth + 1;
    kr_checkstack(L, nargs + 2);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    for (int i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
    int base = lua_gettop(L) - nargs - 2;
    int status = lua_pcall(L, nargs + 1, LUA_MULTRET, 0);
    if (c->pg == NULL) { /* fn closed the connection: nothing to finish */
        c->txdepth = 0;
        if (status != 0) return lua_error(L);
        return lua_gettop(L) - base;
    }
    c->txdepth = depth;
    if (status != 0) {
        rollback(c, nested, depth);
        return lua_error(L);
    }
    kr_endstream(c);
    if (c->tx_ended || (!nested && PQtransactionStatus(c->pg) == PQTRANS_IDLE)) {
        /* fn ran COMMIT or ROLLBACK: what came after it ran outside, so nothing is one unit */
        if (!nested) rollback(c, 0, depth); /* a transaction fn began again is not ours to commit */
        c->tx_ended = c->tx_ended && depth > 0; /* the outer transaction() fails too */
        return ended(L);
    }
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
        /* fn caught an SQL error itself: committing would silently lose the work */
        rollback(c, nested, depth);
        return kr_error_return(L, "transaction_rollback", "the transaction was aborted by an earlier error and rolled back");
    }
    if (nested) snprintf(savepoint, sizeof savepoint, "RELEASE SAVEPOINT kronos_%d", depth);
    int nres = lua_gettop(L) - base;
    PGresult *res = kr_execscript(L, c, nested ? savepoint : TX_COMMIT);
    if (res == NULL) {
        /* fn's script ran ROLLBACK (or COMMIT) and then BEGIN: the session is in a transaction,
         * not ours. Its mark is gone (COMMIT's guard raised), or its savepoint (3B001): what
         * ran in the new one is rolled back, and the outer transaction() fails too. */
        lua_getfield(L, -1, "sqlstate");
        int lost_savepoint = nested && lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "3B001") == 0;
        lua_pop(L, 1);
        if (!lost_savepoint && !kr_tx_guard_failed(L, -1)) return 2;
        lua_pop(L, 2);
        rollback(c, 0, depth);
        c->tx_ended = depth > 0;
        return ended(L);
    }
    /* COMMIT of an aborted transaction succeeds as "ROLLBACK": the work is lost, so say so. */
    int rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    kr_dropbox(L, -1);
    lua_pop(L, 1);
    kr_notice_deliver(L, c);
    if (rolled_back)
        return kr_error_return(L, "transaction_rollback", "the transaction was aborted by an earlier error and rolled back");
    return nres;
}
