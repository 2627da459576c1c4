/* The connection's low layer: the struct's Lua side (its uservalue, the registry's way back to
 * it), and the primitives every statement goes through: the check before it (kr_conn_ready),
 * the check of its result (kr_finish), the transaction state kronos opened (kr_tx_open), ending
 * what the server is still sending (kr_drain, kr_endstream, kr_endcopy).
 *
 * Nothing here calls up into the files that use it: where a layer above has work to do before a
 * statement (an open rows() stream, queued DEALLOCATEs), the core calls the hooks the connection
 * was made with (kr_conn_hooks, set by session.c). */
#include <stdio.h>
#include <string.h>

#include "kronos.h"

#define KR_CONNS_KEY "kronos.conns"   /* registry: weak {[light kr_conn] = connection} */

/* A new table with weak values: what it refers to may be collected. */
static void push_weak(lua_State *L)
{
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
}

/* A connection carries a uservalue table (notice handler, decoders, a weak ref to its open
 * stream), and the registry maps its C struct back to it weakly, so that C code holding only the
 * kr_conn can reach that table without keeping the connection alive. */
kr_conn *kr_conn_new(lua_State *L, const kr_conn_hooks *hooks)
{
    kr_conn *c = (kr_conn *)lua_newuserdata(L, sizeof(kr_conn));
    memset(c, 0, sizeof *c);
    c->hooks = hooks;
    c->notices_tail = &c->notices;
    luaL_setmetatable(L, KR_CONN_CLASS);
    lua_newtable(L);
    push_weak(L); /* env.weak: {stream = state} */
    lua_setfield(L, -2, "weak");
    kr_setuservalue(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
    lua_pushlightuserdata(L, c);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return c;
}

/* The connection userdata of c through the registry's weak map (nil once collected): C code
 * that holds only the struct (an iterator's upvalue, a hook) reaches the Lua object this way. */
void kr_conn_push(lua_State *L, kr_conn *c)
{
    lua_getfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
    lua_pushlightuserdata(L, c);
    lua_rawget(L, -2);
    lua_remove(L, -2);
}

/* The uservalue of c's connection; a table that is thrown away once the connection is being
 * collected, so that a __gc-time caller needs no check. */
void kr_conn_env(lua_State *L, kr_conn *c)
{
    kr_conn_push(L, c);
    if (lua_isuserdata(L, -1)) {
        kr_getuservalue(L, -1);
        lua_remove(L, -2);
    } else { /* being collected: an empty table stands in */
        lua_pop(L, 1);
        lua_newtable(L);
    }
}

/* Reads and frees every pending result. A COPY would never end by itself (libpq hands out a
 * new COPY result on each call), so one that kronos is not serving is ended here. */
void kr_drain(PGconn *pg)
{
    PGresult *r;
    while (pg && (r = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_BOTH) {
            if (PQputCopyEnd(pg, "the COPY was abandoned") < 0) return;
        } else if (st == PGRES_COPY_OUT) {
            char *buf;
            int n;
            while ((n = PQgetCopyData(pg, &buf, 0)) > 0) PQfreemem(buf);
            if (n == -2) return;
        }
        if (PQstatus(pg) == CONNECTION_BAD) return;
    }
}

/* A COPY that reached a statement path other than copy_from/copy_to (conn:exec, rows): the one
 * refusal, for kr_finish and the rows() iterator alike. */
int kr_refuse_copy(lua_State *L, kr_conn *c, ExecStatusType st)
{
    if (st != PGRES_COPY_IN && st != PGRES_COPY_OUT && st != PGRES_COPY_BOTH) return 0;
    kr_drain(c->pg); /* for a COPY, its result was only the announcement: this ends it */
    kr_error_return(L, "feature_not_supported", "COPY FROM STDIN / TO STDOUT runs through conn:copy_from / conn:copy_to");
    return 1;
}

/* Cuts short what the connection is sending (a rows() stream, a copy_to): the open iterator is
 * told by stream_gen that it is over, the server is asked to cancel (unless stream_drain asks to
 * read the rest instead), and every pending result is read. The one way both end early. */
static void cancel_drain(kr_conn *c)
{
    c->stream_gen++;
    PGcancel *cancel = c->stream_drain ? NULL : PQgetCancel(c->pg);
    if (cancel) {
        char errbuf[256];
        PQcancel(cancel, errbuf, sizeof errbuf);
        PQfreeCancel(cancel);
    }
    kr_drain(c->pg);
}

/* An open rows() stream cut short (cancel_drain); nothing when none is open. */
void kr_endstream(kr_conn *c)
{
    if (!c->streaming) return;
    c->streaming = 0;
    cancel_drain(c);
}

/* An open copy_to cut short the same way: the core owns both, since any statement path
 * (kr_conn_ready) must be able to end them before it runs. */
void kr_endcopy(kr_conn *c)
{
    if (c->copying != 2) return;
    c->copying = 0;
    cancel_drain(c);
}

/* Before each statement: see kronos.h. DateStyle: kronos's conversions (and users:list) read
 * ISO dates, and PostgreSQL reports every change of DateStyle to libpq; a user's
 * SET DateStyle = 'SQL, DMY' is turned into 'ISO, DMY' before the next statement, keeping the
 * field order the user chose for reading dates. */
void kr_conn_ready(lua_State *L, kr_conn *c)
{
    if (c->copying == 1 || c->pipelining)
        kr_error_raise(L, "connection_busy", "the connection is running %s: no other statement can run meanwhile",
                       c->copying == 1 ? "a COPY FROM" : "a pipeline");
    kr_endcopy(c);
    if (c->streaming) c->hooks->stream_interrupt(L, c);
    if (c->pg == NULL) return;
    if (c->deallocs) c->hooks->statement_flush(c);
    const char *ds = PQparameterStatus(c->pg, "DateStyle");
    if (ds && strncmp(ds, "ISO", 3) != 0 && PQtransactionStatus(c->pg) != PQTRANS_INERROR) {
        const char *order = strchr(ds, ',');
        char sql[80];
        order = order ? order + 1 : "";
        while (*order == ' ') order++;
        int known = strcmp(order, "DMY") == 0 || strcmp(order, "YMD") == 0;
        snprintf(sql, sizeof sql, "SET DateStyle TO 'ISO, %s'", known ? order : "MDY");
        PQclear(PQexec(c->pg, sql));
    }
}

/* Leaves the boxed result on the stack when it returns it. Inside a transaction kronos opened
 * (conn:transaction, a migration run) a statement after which the server is idle has ended it:
 * that is remembered, so the statements that follow are refused and the opener fails. */
PGresult *kr_finish(lua_State *L, kr_conn *c, PGresult *res)
{
    if (c->txdepth > 0 && c->pg && PQtransactionStatus(c->pg) == PQTRANS_IDLE) c->tx_ended = 1;
    PGresult **box = kr_boxresult(L, res);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) return res;
    if (!kr_refuse_copy(L, c, st)) kr_error_result(L, c, res);
    kr_clearbox(box); /* the error has copied what it needs */
    lua_remove(L, -3);
    return NULL;
}

/* Refuses a statement once the transaction kronos opened was ended under it: it would run
 * outside, autocommitted, while its opener still counts it as part of the transaction.
 * Returns 1, or pushes nil, err and returns 0. */
int kr_tx_open(lua_State *L, kr_conn *c)
{
    if (c->txdepth == 0 || !c->tx_ended) return 1;
    kr_error_return(L, "transaction_ended", "the transaction was ended by a COMMIT or ROLLBACK inside it; "
                    "no statement runs until its conn:transaction (or migration) returns");
    return 0;
}

/* A script through the same checks as every statement (kr_tx_open, kr_conn_ready, kr_finish). */
PGresult *kr_execscript(lua_State *L, kr_conn *c, const char *sql)
{
    if (!kr_tx_open(L, c)) return NULL;
    kr_conn_ready(L, c);
    return kr_finish(L, c, PQexec(c->pg, sql));
}

/* The SQL argument of every method: a string without NUL bytes (libpq would cut it there). */
const char *kr_checksql(lua_State *L, int idx)
{
    size_t len;
    return kr_checktext(L, idx, &len, "SQL");
}

/* The registry's weak map from kr_conn to its connection (kr_conn_push); the class itself and
 * its methods are registered by kronos.c. */
void kr_open_conn(lua_State *L)
{
    push_weak(L);
    lua_setfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
}
