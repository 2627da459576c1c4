/* Named prepared statements for kronos's own fixed SQL (the user model), one small cache per
 * connection. The server parses and plans an unnamed extended-protocol statement on every call;
 * a named one only once per session.
 *
 * Safety: a transaction pooler (PgBouncer in transaction mode) hands each transaction another
 * server session, where a statement prepared elsewhere does not exist. Before the first use on a
 * connection, kronos compares the backend pid libpq was told at startup with the pid of the
 * session that answers `SELECT pg_backend_pid()`: a pooler reports its own (fake) key, so they
 * differ, and that connection keeps using unnamed statements (PQexecParams). A reset connection
 * (another backend pid) forgets what it had prepared; a statement the session lost anyway
 * (DEALLOCATE, DISCARD ALL: SQLSTATE 26000) or whose plan no longer fits the table (0A000,
 * "cached plan must not change result type") is prepared again, and the call retried once only
 * when no transaction block was open, so nothing the caller began is ever run twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"

enum { UNPREPARED = 0, PREPARED = 1, STALE = 2 };

/* 1: prepared statements reach the session they were made in; -1: they do not (a pooler);
 * 0: cannot tell now (the query failed, e.g. inside an aborted transaction). */
static int same_session(kr_conn *c)
{
    PGresult *r = PQexec(c->pg, "SELECT pg_backend_pid()");
    int answer = 0;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        answer = atoi(PQgetvalue(r, 0, 0)) == PQbackendPID(c->pg) ? 1 : -1;
    PQclear(r);
    return answer;
}

int kr_prepared_usable(kr_conn *c)
{
    int pid = PQbackendPID(c->pg);
    if (c->prep_pid != pid) { /* a new session (conn:reset()): nothing is prepared there */
        c->prep_pid = pid;
        c->prep_mode = 0;
        memset(c->prepared, UNPREPARED, sizeof c->prepared);
    }
    if (c->prep_mode == 0) c->prep_mode = same_session(c);
    return c->prep_mode == 1;
}

/* What an error of PQexecPrepared or PQprepare says of the statement's name on the session. */
static int state_after(const PGresult *res, int state)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (st == NULL) return state;
    if (strcmp(st, "26000") == 0) return UNPREPARED; /* gone (DEALLOCATE, DISCARD ALL) */
    if (strcmp(st, "0A000") == 0 || strcmp(st, "42P05") == 0) return STALE; /* there, but unusable */
    return state;
}

int kr_prepared_lost(const PGresult *res)
{
    return state_after(res, PREPARED) == PREPARED ? 0 : state_after(res, PREPARED) == UNPREPARED ? 1 : 2;
}

/* Makes the statement ready on the session; on failure leaves nil, err and returns 0. */
static int prepare(lua_State *L, kr_conn *c, int id, const char *name, const char *sql, int n)
{
    if (c->prepared[id] == STALE) {
        char dealloc[48];
        snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", name);
        PGresult *d = PQexec(c->pg, dealloc);
        if (PQresultStatus(d) != PGRES_COMMAND_OK) return kr_finish(L, c, d) != NULL;
        PQclear(d);
        c->prepared[id] = UNPREPARED;
    }
    if (c->prepared[id] == PREPARED) return 1;
    PGresult *p = PQprepare(c->pg, name, sql, n, NULL);
    if (PQresultStatus(p) != PGRES_COMMAND_OK) {
        c->prepared[id] = (unsigned char)state_after(p, UNPREPARED);
        return kr_finish(L, c, p) != NULL;
    }
    PQclear(p);
    c->prepared[id] = PREPARED;
    return 1;
}

PGresult *kr_prepared_exec(lua_State *L, kr_conn *c, int id, const char *sql, int n, const char *const *values)
{
    if (!kr_tx_open(L, c)) return NULL;
    kr_conn_ready(L, c);
    if (id < 0 || id >= KR_PREPARED_MAX || !kr_prepared_usable(c))
        return kr_finish(L, c, PQexecParams(c->pg, sql, n, NULL, values, NULL, NULL, 0));
    char name[32];
    snprintf(name, sizeof name, "kronos_%d", id);
    /* outside a transaction block a failed statement changed nothing, so it may run again */
    int retry = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
    for (;;) {
        if (!prepare(L, c, id, name, sql, n)) return NULL;
        PGresult *res = PQexecPrepared(c->pg, name, n, values, NULL, NULL, 0);
        int state = res ? state_after(res, PREPARED) : PREPARED;
        if (state == PREPARED) return kr_finish(L, c, res);
        c->prepared[id] = (unsigned char)state;
        if (!retry) return kr_finish(L, c, res);
        retry = 0;
        PQclear(res);
    }
}
