/* User prepared statements: conn:prepare(sql) -> statement with :exec(...), :rows(...), :close().
 *
 * On a direct connection the statement is a named server-side statement ("kronos_st<n>"),
 * parsed and planned once per session. Behind a transaction pooler (kr_prepared_usable says no:
 * each transaction may land on another server session, where the name does not exist) every
 * call runs the SQL as an unnamed statement instead (PQexecParams): the same results, without
 * the saving. A statement the session lost (DEALLOCATE ALL, DISCARD ALL: 26000) or that DDL made
 * unusable (0A000 "cached plan must not change result type") is prepared again and the call is
 * retried once, only when no transaction block was open (nothing the caller began runs twice);
 * inside a transaction the error is returned and the next call prepares it again. A statement
 * made on another session (conn:reset()) is prepared again on first use.
 *
 * close() deallocates at once. The garbage collector cannot: __gc may run in the middle of any
 * allocation, even while the connection is inside another statement, a stream or a COPY. So __gc
 * only queues the name on the connection (C memory, no Lua call), and the next statement on the
 * connection runs the queued DEALLOCATEs first (kr_conn_ready -> kr_statement_flush). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"


enum { UNPREPARED = 0, PREPARED = 1, STALE = 2 };

typedef struct kr_stmt {
    kr_conn *c;    /* kept alive by the uservalue {conn, sql} */
    int named;     /* a named statement (a direct connection), else unnamed on each call */
    int state;     /* UNPREPARED, PREPARED, STALE on session pid */
    int pid;
    int closed;
    char name[32];
} kr_stmt;

typedef struct kr_dealloc {
    struct kr_dealloc *next;
    int pid;
    char name[32];
} kr_dealloc;

/* Forgets the queued names (close, reset: the session they were on is gone). */
void kr_statement_free(kr_conn *c)
{
    while (c->deallocs) {
        kr_dealloc *d = c->deallocs;
        c->deallocs = d->next;
        free(d);
    }
}

/* The connection's statement_flush hook (kr_conn_ready): the queued DEALLOCATEs in one round
 * trip, for names of this session only; not inside an aborted transaction, where they would fail. */
void kr_statement_flush(kr_conn *c)
{
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR) return; /* later, after the ROLLBACK */
    char sql[1024];
    size_t len = 0;
    int pid = PQbackendPID(c->pg);
    while (c->deallocs) {
        kr_dealloc *d = c->deallocs;
        if (len + strlen(d->name) + 16 > sizeof sql) break; /* the rest next time */
        if (d->pid == pid) len += (size_t)snprintf(sql + len, sizeof sql - len, "DEALLOCATE %s;", d->name);
        c->deallocs = d->next;
        free(d);
    }
    if (len > 0) PQclear(PQexec(c->pg, sql)); /* a name the session lost anyway is no failure */
}

/* The statement at idx, closed or not; anything else raises a bad_argument error object. */
static kr_stmt *to_stmt(lua_State *L, int idx)
{
    if (lua_type(L, idx) != LUA_TUSERDATA || !kr_testclass(L, idx, KR_STMT_CLASS))
        kr_error_arg(L, idx, "kronos statement expected, got %s", luaL_typename(L, idx));
    return (kr_stmt *)lua_touserdata(L, idx);
}

static kr_stmt *check_stmt(lua_State *L, int idx)
{
    kr_stmt *st = to_stmt(L, idx);
    if (st->closed) kr_error_arg(L, idx, "statement is closed");
    if (st->c->pg == NULL) kr_error_arg(L, idx, "connection is closed");
    if (st->c->pipelining) kr_error_arg(L, idx, "a pipeline is running on the connection");
    return st;
}

/* Runs one utility command; 1 on success, else nil, err pushed and 0. */
static int command(lua_State *L, kr_conn *c, PGresult *res)
{
    if (kr_finish(L, c, res) == NULL) return 0;
    lua_pop(L, 1); /* the box frees res */
    return 1;
}

/* Makes the named statement usable on the current session; 0 with nil, err pushed. */
static int ensure(lua_State *L, kr_stmt *st, const char *sql)
{
    kr_conn *c = st->c;
    int pid = PQbackendPID(c->pg);
    if (st->pid != pid) {
        st->pid = pid;
        st->state = UNPREPARED;
    }
    if (st->state == STALE) {
        char sqlbuf[64];
        snprintf(sqlbuf, sizeof sqlbuf, "DEALLOCATE %s", st->name);
        PGresult *r = PQexec(c->pg, sqlbuf);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && kr_prepared_lost(r) != 1) return command(L, c, r);
        PQclear(r);
        st->state = UNPREPARED;
    }
    if (st->state == PREPARED) return 1;
    PGresult *r = PQprepare(c->pg, st->name, sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        if (kr_prepared_lost(r) == 2) st->state = STALE; /* 42P05: the name exists already */
        return command(L, c, r);
    }
    PQclear(r);
    st->state = PREPARED;
    return 1;
}

static void lost(kr_stmt *st, const PGresult *res)
{
    int why = res ? kr_prepared_lost(res) : 0;
    if (why) st->state = why == 1 ? UNPREPARED : STALE;
}

/* conn:prepare(sql) -> statement | nil, err (the server's error for SQL that does not parse). */
int kr_statement_prepare(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    if (c->pipelining) kr_error_arg(L, 1, "a pipeline is running");
    lua_settop(L, 2);
    kr_conn_ready(L, c);
    kr_stmt *st = (kr_stmt *)lua_newuserdata(L, sizeof *st);
    memset(st, 0, sizeof *st);
    st->c = c;
    luaL_setmetatable(L, KR_STMT_CLASS);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, 2);
    lua_rawseti(L, -2, 2);
    kr_setuservalue(L, -2);
    st->named = kr_prepared_usable(c);
    int ok;
    if (st->named) {
        snprintf(st->name, sizeof st->name, "kronos_st%u", c->stmt_seq++);
        ok = ensure(L, st, sql);
    } else { /* parsed once anyway, so that bad SQL fails here as it does on a direct connection */
        ok = command(L, c, PQprepare(c->pg, "", sql, 0, NULL));
    }
    kr_notice_deliver(L, c);
    if (!ok) {
        st->closed = 1; /* nothing to deallocate */
        return 2;
    }
    return 1; /* the statement, at 3 */
}

static const char *stmt_sql(lua_State *L, int idx)
{
    kr_getuservalue(L, idx);
    lua_rawgeti(L, -1, 2);
    const char *sql = lua_tostring(L, -1);
    lua_pop(L, 2); /* the uservalue keeps the string alive */
    return sql;
}

/* The start of st:exec and st:rows: the open statement at 1, its SQL, its parameters (from 2 on)
 * converted into p, the connection made ready; NULL with nil, err pushed when the transaction
 * kronos opened has ended (kr_tx_open). */
static kr_stmt *begin(lua_State *L, const char **sql, kr_params *p)
{
    kr_stmt *st = check_stmt(L, 1);
    *sql = stmt_sql(L, 1);
    kr_checkparams_conn(L, st->c, 2, lua_gettop(L) - 1, p);
    if (!kr_tx_open(L, st->c)) return NULL;
    kr_conn_ready(L, st->c);
    return st;
}

/* st:exec(...) -> rows | nil, err */
static int l_exec(lua_State *L)
{
    const char *sql;
    kr_params p;
    kr_stmt *st = begin(L, &sql, &p);
    if (st == NULL) return 2;
    kr_conn *c = st->c;
    PGresult *res;
    if (!st->named) {
        res = kr_finish(L, c, PQexecParams(c->pg, sql, p.n, p.types, p.values, p.lengths, p.formats, 0));
    } else {
        int retry = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
        for (;;) {
            if (!ensure(L, st, sql)) {
                res = NULL;
                break;
            }
            PGresult *r = PQexecPrepared(c->pg, st->name, p.n, p.values, p.lengths, p.formats, 0);
            lost(st, r);
            if (st->state == PREPARED || !retry) {
                res = kr_finish(L, c, r);
                break;
            }
            retry = 0;
            PQclear(r);
        }
    }
    return kr_exec_return(L, c, res, KR_ROWS_NAMED);
}

/* for row in st:rows(...) do ... end: as conn:rows. The first result is read here, so that a
 * statement invalidated by DDL is prepared again before the loop starts. */
static int l_rows(lua_State *L)
{
    const char *sql;
    kr_params p;
    kr_stmt *st = begin(L, &sql, &p);
    if (st == NULL) return lua_error(L);
    kr_conn *c = st->c;
    if (!st->named) {
        if (!PQsendQueryParams(c->pg, sql, p.n, p.types, p.values, p.lengths, p.formats, 0)) {
            kr_error_result(L, c, NULL);
            return lua_error(L);
        }
        return kr_stream_open(L, c, NULL);
    }
    int retry = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
    for (;;) {
        if (!ensure(L, st, sql)) return lua_error(L);
        if (!PQsendQueryPrepared(c->pg, st->name, p.n, p.values, p.lengths, p.formats, 0)) {
            kr_error_result(L, c, NULL);
            return lua_error(L);
        }
        PQsetSingleRowMode(c->pg);
        PGresult *first = PQgetResult(c->pg);
        lost(st, first);
        if (st->state == PREPARED || !retry) return kr_stream_open(L, c, first);
        retry = 0;
        PQclear(first);
        while ((first = PQgetResult(c->pg)) != NULL) PQclear(first);
    }
}

/* st:close() -> true | nil, err: deallocates now; idempotent. */
static int l_close(lua_State *L)
{
    kr_stmt *st = to_stmt(L, 1);
    if (st->closed) {
        lua_pushboolean(L, 1);
        return 1;
    }
    st->closed = 1;
    kr_conn *c = st->c;
    if (!st->named || st->state == UNPREPARED || c->pg == NULL || PQbackendPID(c->pg) != st->pid) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (c->pipelining) kr_error_arg(L, 1, "a pipeline is running on the connection");
    kr_conn_ready(L, c);
    char sql[64];
    snprintf(sql, sizeof sql, "DEALLOCATE %s", st->name);
    int ok = command(L, c, PQexec(c->pg, sql));
    kr_notice_deliver(L, c);
    if (!ok) return 2;
    lua_pushboolean(L, 1);
    return 1;
}

/* Queues the name: see the head comment. */
static int l_gc(lua_State *L)
{
    kr_stmt *st = to_stmt(L, 1);
    kr_conn *c = st->c;
    if (st->closed || !st->named || st->state == UNPREPARED || c->pg == NULL) return 0;
    st->closed = 1;
    kr_dealloc *d = (kr_dealloc *)malloc(sizeof *d);
    if (d == NULL) return 0; /* the session keeps the statement: no harm */
    d->pid = st->pid;
    memcpy(d->name, st->name, sizeof d->name);
    d->next = c->deallocs;
    c->deallocs = d;
    return 0;
}

static int l_tostring(lua_State *L)
{
    kr_stmt *st = to_stmt(L, 1);
    lua_pushfstring(L, "kronos.statement (%s%s)", st->named ? st->name : "unnamed", st->closed ? ", closed" : "");
    return 1;
}

/* The statement class (conn:prepare is a method of the connection, in kronos.c's table). */
void kr_open_statement(lua_State *L)
{
    static const luaL_Reg methods[] = {{"exec", l_exec}, {"rows", l_rows}, {"close", l_close}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", l_gc}, {"__close", l_close}, {"__tostring", l_tostring}, {NULL, NULL}};
    kr_newclass(L, KR_STMT_CLASS, methods, meta);
}
