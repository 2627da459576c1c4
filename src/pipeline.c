/* conn:pipeline(fn [, {transaction = true}]): statements queued by fn(p) through p:exec(sql, ...)
 * are sent in libpq's pipeline mode once fn returns, without waiting for each result, and their
 * results come back in order: results[i] is the rows of statement i (as conn:exec returns them)
 * or its error object.
 *
 * Error isolation (the default): a Sync follows each statement, so each runs in its own implicit
 * transaction as conn:exec would (autocommit), and a failure affects that statement only.
 * {transaction = true}: one Sync after the last statement, so the batch is one implicit
 * transaction: the first failure aborts the rest (their entries are errors with code
 * "pipeline_aborted") and rolls the whole batch back; pipeline returns nil, err (the failing
 * statement's error, err.index its position). Inside a transaction block the caller opened
 * (conn:transaction, BEGIN) the statements are part of that block either way.
 *
 * Sending never blocks on a full socket while the server blocks on its own results (the
 * classic pipeline deadlock): the connection is non-blocking while sending, and results are read
 * whenever the server has produced some. Every parameter is converted before the pipeline
 * starts (nothing can raise half-way through a batch); the queued statements and their
 * results are held in memory, as one Lua table each. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "kronos.h"
#include "option.h"


typedef struct {
    kr_conn *c;
    int n;             /* statements queued */
    int got;           /* statements whose results are complete */
    int cur;           /* the current statement has a result stored */
    int syncs_sent, syncs_seen;
    int tx;
    int results;       /* stack index of the results table */
    int failed;
    int first_failed;  /* index of the first failure, 0 if none */
} pstate;

/* p:exec(sql, ...) -> the statement's position: queued, sent when fn returns. */
static int p_exec(lua_State *L)
{
    if (!lua_istable(L, 1) || !kr_testclass(L, 1, KR_PIPELINE_CLASS)) kr_error_arg(L, 1, "kronos pipeline expected");
    lua_getfield(L, 1, "done");
    if (lua_toboolean(L, -1)) kr_error_arg(L, 1, "the pipeline has been sent (p:exec is for inside its function)");
    lua_pop(L, 1);
    kr_checksql(L, 2);
    int n = lua_gettop(L) - 1; /* sql and its parameters */
    lua_createtable(L, n, 1);
    for (int i = 1; i <= n; i++) {
        lua_pushvalue(L, i + 1);
        lua_rawseti(L, -2, i);
    }
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "n");
    lua_Integer pos = (lua_Integer)lua_rawlen(L, 1) + 1;
    lua_rawseti(L, 1, pos);
    lua_pushinteger(L, pos);
    return 1;
}

/* Stores one result of the current statement in results[got + 1]. */
static void store(lua_State *L, pstate *s, PGresult *r)
{
    kr_conn *c = s->c;
    ExecStatusType st = PQresultStatus(r);
    int idx = s->got + 1;
    if (st == PGRES_PIPELINE_ABORTED) {
        PQclear(r);
        kr_error_push(L, "pipeline_aborted", "not run: an earlier statement of the same transaction failed");
    } else {
        PGresult *res = kr_finish(L, c, r); /* box or nil, err */
        if (res != NULL) {
            kr_decode_rows(L, c, res, KR_ROWS_NAMED);
            kr_dropbox(L, -2);
            lua_remove(L, -2);
        } else {
            lua_remove(L, -2);
        }
    }
    if (kr_testclass(L, -1, KR_ERROR_CLASS)) {
        s->failed++;
        if (s->first_failed == 0 && st != PGRES_PIPELINE_ABORTED) s->first_failed = idx;
        lua_pushinteger(L, idx);
        lua_setfield(L, -2, "index");
    }
    lua_rawseti(L, s->results, idx);
    s->cur = 1;
}

/* Reads results: all that are ready (blocking = 0) or until every Sync has come back. */
static void collect(lua_State *L, pstate *s, int blocking)
{
    PGconn *pg = s->c->pg;
    while (s->syncs_seen < s->syncs_sent) {
        if (!blocking && PQisBusy(pg)) return;
        PGresult *r = PQgetResult(pg);
        if (r == NULL) {
            if (s->cur) {
                s->got++;
                s->cur = 0;
                continue;
            }
            if (!blocking) return;
            if (PQstatus(pg) == CONNECTION_BAD) kr_error_raise(L, "connection", "the connection was lost during a pipeline");
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            s->syncs_seen++;
            continue;
        }
        if (s->cur) { /* a second result for one statement cannot happen with PQsendQueryParams */
            PQclear(r);
            continue;
        }
        store(L, s, r);
    }
}

/* Sends what libpq has buffered without blocking; reads results meanwhile. */
static void pump(lua_State *L, pstate *s, int until_sent)
{
    PGconn *pg = s->c->pg;
    for (;;) {
        int f = PQflush(pg);
        if (f < 0) kr_error_raise(L, "connection", "sending a pipeline failed");
        if (!PQconsumeInput(pg)) kr_error_raise(L, "connection", "reading a pipeline's results failed");
        collect(L, s, 0);
        if (f == 0 || !until_sent) return;
        struct pollfd pfd = {PQsocket(pg), POLLIN | POLLOUT, 0};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR) kr_error_raise(L, "connection", "poll: %s", strerror(errno));
    }
}

/* Queued statement i (the queue at `queue`): its parameters converted into p, their strings and
 * arrays left on the stack above the entry (the caller resets the top), its SQL returned. The
 * one conversion of a queued statement, for the check before sending and for the sending. */
static const char *entry_params(lua_State *L, kr_conn *c, int queue, int i, kr_params *p)
{
    lua_rawgeti(L, queue, i);
    int entry = lua_gettop(L);
    lua_getfield(L, entry, "n");
    int np = (int)lua_tointeger(L, -1) - 1;
    lua_pop(L, 1);
    kr_checkstack(L, np + 8);
    lua_rawgeti(L, entry, 1);
    const char *sql = lua_tostring(L, -1);
    int first = lua_gettop(L) + 1;
    for (int j = 0; j < np; j++) lua_rawgeti(L, entry, j + 2);
    kr_checkparams_conn(L, c, first, np, p);
    return sql;
}

/* send_all's stack under lua_pcall: the pstate (a light userdata), the queue, the results. */
enum { SEND_STATE = 1, SEND_QUEUE, SEND_RESULTS };

/* Under lua_pcall (see SEND_STATE ..): sends every queued statement, a Sync after each (or one
 * after the last, for a transaction), reading results as they come, then waits for the rest. */
static int send_all(lua_State *L)
{
    pstate *s = (pstate *)lua_touserdata(L, SEND_STATE);
    PGconn *pg = s->c->pg;
    s->results = SEND_RESULTS;
    for (int i = 1; i <= s->n; i++) {
        kr_params p;
        const char *sql = entry_params(L, s->c, SEND_QUEUE, i, &p);
        if (!PQsendQueryParams(pg, sql, p.n, p.types, p.values, p.lengths, p.formats, 0))
            kr_error_raise(L, "connection", "sending a pipeline failed: %s", PQerrorMessage(pg));
        if (!s->tx) {
            if (!PQpipelineSync(pg)) kr_error_raise(L, "connection", "sending a pipeline failed");
            s->syncs_sent++;
        }
        lua_settop(L, SEND_RESULTS);
        pump(L, s, 0);
    }
    if (s->tx) {
        if (!PQpipelineSync(pg)) kr_error_raise(L, "connection", "sending a pipeline failed");
        s->syncs_sent++;
    }
    pump(L, s, 1);
    collect(L, s, 1);
    return 0;
}

/* Checks every parameter before anything is sent (a bad value raises here, with nothing sent). */
static void convert_all(lua_State *L, kr_conn *c, int queue, int n)
{
    for (int i = 1; i <= n; i++) {
        int top = lua_gettop(L);
        kr_params p;
        entry_params(L, c, queue, i, &p);
        lua_settop(L, top);
    }
}

/* After a failure while sending: ends the pipeline so that the connection is usable. In a
 * transaction batch a statement that fails is sent before the Sync, so nothing of it commits. */
static void abandon(pstate *s)
{
    PGconn *pg = s->c->pg;
    if (PQstatus(pg) != CONNECTION_OK) return;
    if (s->tx) PQsendQueryParams(pg, "DO $$BEGIN RAISE EXCEPTION 'kronos: pipeline abandoned'; END$$", 0, NULL, NULL, NULL, NULL, 0);
    if (PQpipelineSync(pg)) s->syncs_sent++; /* one more Sync is harmless */
    PQsetnonblocking(pg, 0);
    while (PQflush(pg) > 0) {}
    while (s->syncs_seen < s->syncs_sent && PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQgetResult(pg);
        if (r == NULL) continue;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) s->syncs_seen++;
        PQclear(r);
    }
}

/* conn:pipeline(fn [, opts]) -> results | nil, err (see the head comment). */
int kr_pipeline_run(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (!lua_isfunction(L, 2)) kr_error_arg(L, 2, "function expected, got %s", luaL_typename(L, 2));
    static const char *const keys[] = {"transaction", NULL};
    int opts = kr_option_check(L, 3, "opts", keys);
    int tx = kr_option_bool(L, opts, 3, "opts", "transaction", 0);
    lua_settop(L, 2);
    lua_newtable(L); /* 3: the queue, which is p itself */
    luaL_setmetatable(L, KR_PIPELINE_CLASS);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_call(L, 1, 0);
    lua_pushboolean(L, 1);
    lua_setfield(L, 3, "done");
    int n = (int)lua_rawlen(L, 3);
    convert_all(L, c, 3, n);
    lua_createtable(L, n, 1); /* 4: results */
    if (n == 0) {
        lua_pushinteger(L, 0);
        lua_setfield(L, 4, "failed");
        return 1;
    }
    if (!kr_tx_open(L, c)) return 2;
    kr_conn_ready(L, c);
    pstate s;
    memset(&s, 0, sizeof s);
    s.c = c;
    s.n = n;
    s.tx = tx;
    if (!PQenterPipelineMode(c->pg)) return kr_error_result(L, c, NULL);
    PQsetnonblocking(c->pg, 1);
    c->pipelining = 1;
    lua_pushcfunction(L, send_all);
    lua_pushlightuserdata(L, &s);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4);
    int status = lua_pcall(L, SEND_RESULTS, 0, 0);
    if (status != 0) abandon(&s);
    PQsetnonblocking(c->pg, 0);
    PQexitPipelineMode(c->pg);
    c->pipelining = 0;
    kr_notice_deliver(L, c);
    if (status != 0) return lua_error(L);
    lua_settop(L, 4);
    lua_pushinteger(L, s.failed);
    lua_setfield(L, 4, "failed");
    if (tx && s.first_failed > 0) {
        lua_pushnil(L);
        lua_rawgeti(L, 4, s.first_failed);
        return 2;
    }
    return 1;
}

/* The class of p, the queue fn fills (p:exec). */
void kr_open_pipeline(lua_State *L)
{
    static const luaL_Reg methods[] = {{"exec", p_exec}, {NULL, NULL}};
    kr_newclass(L, KR_PIPELINE_CLASS, methods, NULL);
}
