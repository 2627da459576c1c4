/* The migration lock: one advisory lock per version table (kr_lock_key), so that any number of
 * processes can run migrations at once and each step is applied once.
 *
 * The run waits for it without holding a snapshot, because a session that waits inside a
 * statement (pg_advisory_lock) or inside a transaction keeps a snapshot or a virtual transaction
 * that CREATE INDEX CONCURRENTLY, run by the lock's holder, must wait for: a deadlock. So each
 * attempt is pg_try_advisory_(xact_)lock, which never blocks; a transaction that did not get the
 * lock is rolled back at once; between attempts the session holds no transaction at all, and
 * lock_timeout is enforced here, on the client, with a growing pause (2-6 ms, x1.5, at most
 * 100 ms). The state is read only once the lock is held. Offline, and in opts.echo, the lock is
 * its one blocking statement. Retrying a run whose wait ran out (opts.retries) is Lua's
 * (lua/kronos/deploy.lua). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate_run.h"

/* Raises migration_locked (sqlstate 55P03, what the server's lock_timeout would have said):
 * the error deploy.lua retries, naming the version table and the timeout that ran out. */
_Noreturn static void locked(lua_State *L, kr_runner *b)
{
    kr_error_push(L, "migration_locked",
                  "another process is migrating: the migration lock on %s was not granted within lock_timeout %s",
                  b->vtname, b->lock_timeout_text);
    kr_error_setfield(L, "sqlstate", "55P03");
    kr_error_throw(L);
}

/* The error at -1 came from a query run under the lock: a lock_timeout there means another
 * migrator (one of an older kronos, or a DBA by hand) holds what the run needs, so it is told
 * as migration_locked like a lock wait that ran out; any other error is raised as it is. */
_Noreturn void kr_lock_failed(lua_State *L, kr_runner *b)
{
    lua_getfield(L, -1, "sqlstate");
    int timed_out = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "55P03") == 0;
    lua_pop(L, 1);
    if (!timed_out) kr_error_throw(L);
    locked(L, b);
}

/* Runs sql (no echo: an attempt is not a statement of the run) and returns whether the first
 * value of its last result is true; raises on errors. */
static int query_bool(lua_State *L, kr_run *r, const char *sql)
{
    PGresult *res = kr_execscript(L, r->c, sql);
    if (res == NULL) kr_error_throw(L);
    int v = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    kr_dropbox(L, -1);
    lua_pop(L, 1);
    return v;
}

/* After the first attempt failed: who holds the lock, told once through opts.on_event
 * ("lock_wait": holder_pid, holder_application_name, held_seconds), so that an operator sees
 * what the run waits for. Returns lock_timeout in milliseconds as the server reads the setting
 * in force (0: wait for ever), so that "30s", "1min" and numbers mean what they mean to it. */
static double lock_wait_event(lua_State *L, kr_runner *b)
{
    unsigned long long k = (unsigned long long)kr_lock_key(b->vtname);
    char hi[16], lo[16];
    snprintf(hi, sizeof hi, "%llu", (k >> 32) & 0xffffffffULL);
    snprintf(lo, sizeof lo, "%llu", k & 0xffffffffULL);
    lua_pushfstring(L,
        "SELECT (SELECT setting FROM pg_settings WHERE name = 'lock_timeout') AS timeout_ms, a.pid, a.application_name, "
        "extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.query_start, a.backend_start))::float8 AS held "
        "FROM (SELECT 1) AS one LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %s AND l.objid = %s LEFT JOIN pg_stat_activity a ON a.pid = l.pid LIMIT 1", hi, lo);
    PGresult *res = kr_execscript(L, b->r->c, lua_tostring(L, -1));
    if (res == NULL) kr_error_throw(L);
    double timeout_ms = PQntuples(res) == 1 ? strtod(PQgetvalue(res, 0, 0), NULL) : 0;
    if (PQntuples(res) == 1 && b->has_events) {
        kr_progress_event(L, "lock_wait");
        if (!PQgetisnull(res, 0, 1)) {
            lua_pushinteger(L, (lua_Integer)strtol(PQgetvalue(res, 0, 1), NULL, 10));
            lua_setfield(L, -2, "holder_pid");
            lua_pushstring(L, PQgetvalue(res, 0, 2));
            lua_setfield(L, -2, "holder_application_name");
            lua_pushnumber(L, strtod(PQgetvalue(res, 0, 3), NULL));
            lua_setfield(L, -2, "held_seconds");
        }
        kr_progress_fire(L, b);
    }
    kr_dropbox(L, -1);
    lua_pop(L, 2);
    return timeout_ms;
}

/* Takes the lock online: session = 0, pg_advisory_xact_lock in a transaction this leaves open
 * (BEGIN; SET LOCAL lock_timeout; the lock); session = 1, pg_advisory_lock on the session
 * (SET lock_timeout came first). Raises migration_locked once lock_timeout has passed. The first
 * pause depends on the backend's pid, so that runs started together do not poll in step. */
static void lock_acquire(lua_State *L, kr_runner *b, int session)
{
    kr_run *r = b->r;
    char key[32];
    snprintf(key, sizeof key, "%lld", kr_lock_key(b->vtname));
    if (session)
        lua_pushfstring(L, "SELECT pg_try_advisory_lock(%s)", key);
    else
        lua_pushfstring(L, "BEGIN; SET LOCAL lock_timeout = %s; SELECT pg_try_advisory_xact_lock(%s)", b->lock_timeout, key);
    const char *attempt = lua_tostring(L, -1);
    double start = kr_clock_ms(), timeout_ms = -1, delay = 2 + (double)((unsigned)PQbackendPID(r->c->pg) % 5); /* PgBouncer's pid may be negative */
    for (;;) {
        if (!session) r->intx = 1; /* from here on a failure rolls back */
        if (query_bool(L, r, attempt)) break;
        if (timeout_ms < 0) timeout_ms = lock_wait_event(L, b); /* in the transaction: SET LOCAL is in force */
        if (!session) {
            r->intx = 0;
            PGresult *res = kr_execscript(L, r->c, "ROLLBACK"); /* no transaction while waiting */
            if (res == NULL) kr_error_throw(L);
            kr_dropbox(L, -1);
            lua_pop(L, 1);
        }
        double left = timeout_ms > 0 ? start + timeout_ms - kr_clock_ms() : delay;
        if (left <= 0) locked(L, b);
        kr_clock_sleep(delay < left ? delay : left);
        delay = delay * 1.5 > 100 ? 100 : delay * 1.5;
    }
    lua_pop(L, 1);
}

/* The lock statement of a segment (session: the session lock of a non-transactional step):
 * offline it is output as the blocking statement a psql run needs; online it is echoed as that
 * same statement, and taken by polling (lock_acquire). */
void kr_lock_take(lua_State *L, kr_runner *b, int session)
{
    kr_run *r = b->r;
    const char *sql = session ? r->slock_sql : r->xlock_sql;
    if (r->offline) {
        kr_emit(L, r, b->env, sql);
        return;
    }
    kr_emit_echo(L, r, b->env, sql);
    lock_acquire(L, b, session);
}
