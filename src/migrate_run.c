/* The run: upgrade, downgrade and stamp over the revision graph, online (on a connection) or
 * offline (returning the SQL). migrate_plan.c decides what to run; this file runs it.
 *
 * A run is a sequence of segments. A transactional segment is
 *   BEGIN; SET LOCAL lock_timeout; SELECT pg_advisory_xact_lock(key); [SET LOCAL statement_timeout;]
 *   CREATE TABLE IF NOT EXISTS <version table>; (read the version) ; steps ... ; COMMIT
 * so the lock, the DDL and the version rows commit or vanish together, and no session state
 * outlives the transaction (transaction poolers keep working). A migration with
 * transactional = false gets a segment of its own under a session advisory lock.
 *
 * Two phases: a migration may carry finish = function(op) beside up and down. upgrade runs up
 * only; the "finish" command runs, in graph order, the finish of every applied migration whose
 * finish has not run, under the same segments and lock, and records it in the version table's
 * finished_at column (added by the first finish run: ALTER TABLE ... ADD COLUMN IF NOT EXISTS,
 * online and offline alike, so version tables of older kronos keep working). A downgrade of a
 * finished migration runs its unfinish(op) before its down, and is refused when it has none.
 *
 * Round trips (the batch): online, the opening of a transactional segment (BEGIN .. the version
 * read) and each transactional migration (its version row, its DDL, its execution time) are
 * collected and sent as one multi-statement query each. The server runs exactly the statements
 * of the offline SQL, in the same order and transaction; only the number of round trips changes. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "migrate.h"
#include "option.h"

/* One run_body call: the plan, the options, and where its Lua values live on the stack. */
typedef struct body {
    kr_run *r;
    kr_plan p;
    int each, allow_changed;
    int has_events;          /* opts.on_event is a function */
    unsigned char *finished; /* finish and downgrade: migrations whose finish has run (finished_at set) */
    unsigned char *finishes; /* migrations that have a finish function */
    const char *vt;          /* quoted version table */
    const char *vtname;
    const char *lock_timeout, *stmt_timeout;   /* quoted literals or NULL */
    const char *lock_timeout_text;
} body;

/* The stack of run_body: its arguments, then the tables it makes. */
enum { SLOT_RUN = 1, SLOT_CMD, SLOT_LIST, SLOT_OPTS, SLOT_CONN, SLOT_DDL, SLOT_PROGRESS, SLOT_ENV, SLOT_RESULTS };

/* The progress table (made by kr_migrate_run, which reads it after a failure): its fields. */
#define PROGRESS_KEPT "kept"        /* revisions committed by this run */
#define PROGRESS_OPEN "open"        /* revisions run in the open transaction, not committed yet */

/* ---- emitting SQL, and the batch ------------------------------------------------------- */

static void append(lua_State *L, int env, int slot, const char *sql)
{
    lua_rawgeti(L, env, slot);
    lua_pushstring(L, sql);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* Sends the collected statements as one query. Leaves the boxed result of the last one on the
 * stack and returns it, or pushes the error object and returns NULL. */
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
    if (res && r->intx && r->c->tx_ended)
        /* a COMMIT or ROLLBACK the scan of op.execute could not see (op.db, doubtful text) */
        kr_error_raise(L, "transaction_ended", "its SQL ended the migration's transaction (COMMIT or ROLLBACK): the "
                       "statements after that ran outside it; the run stopped, and what was still in the transaction "
                       "is rolled back");
    return res;
}

/* Sends what was collected; raises on SQL errors. */
static void batch_flush(lua_State *L, kr_run *r, int env)
{
    if (r->batch.n == 0) return;
    if (batch_send(L, r, env) == NULL) lua_error(L);
    kr_dropbox(L, -1);
    lua_pop(L, 1);
}

/* From here on, batchable statements are collected (online only). */
static void batch_open(kr_run *r)
{
    r->batch.on = !r->offline;
    r->batch.n = 0;
}

void kr_batch_close(lua_State *L, kr_run *r, int env)
{
    if (!r->batch.on) return;
    batch_flush(L, r, env);
    r->batch.on = 0;
}

/* Ends the batch with a query whose result the caller needs: sends the collected statements
 * and sql as one round trip. Same contract as batch_send. */
static PGresult *batch_query(lua_State *L, kr_run *r, int env, const char *sql)
{
    append(L, env, KR_ENV_PENDING, sql);
    r->batch.n++;
    r->batch.on = 0;
    return batch_send(L, r, env);
}

/* Tells opts.echo every statement the run executes (the specs compare it with the offline SQL). */
static void echo(lua_State *L, kr_run *r, int env, const char *sql)
{
    if (!r->has_echo) return;
    lua_getfield(L, env, "echo");
    lua_pushstring(L, sql);
    lua_call(L, 1, 0);
}

/* Runs one statement (online) or appends it to the output (offline); raises on SQL errors.
 * In a batch, a statement that can share a query is collected instead. */
static int step_statement(lua_State *L, kr_run *r, int env, const char *sql);

void kr_emit(lua_State *L, kr_run *r, int env, const char *sql)
{
    if (r->nontx_step && !step_statement(L, r, env, sql)) return; /* done by the interrupted run */
    echo(L, r, env, sql);
    if (r->offline) {
        append(L, env, KR_ENV_OUT, sql);
        return;
    }
    int alone = !r->batch.on || !kr_sqlscan_batchable(sql);
    if (alone) batch_flush(L, r, env); /* what came before runs first */
    append(L, env, KR_ENV_PENDING, sql);
    r->batch.n++;
    if (alone) batch_flush(L, r, env);
}

static void emitf(lua_State *L, body *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *sql = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    kr_emit(L, b->r, SLOT_ENV, sql);
    lua_pop(L, 1);
}

/* An SQL comment line for the offline output; a line break (\n or \r) would end the comment and
 * turn the rest of a message into SQL, so control characters are escaped as in error messages
 * (kr_error_addescaped: \n, \r, \t, \ddd). */
void kr_comment(lua_State *L, kr_run *r, int env, const char *text)
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

static void comment(lua_State *L, body *b, const char *text)
{
    kr_comment(L, b->r, SLOT_ENV, text);
}

/* ---- the lock ------------------------------------------------------------------------- */

/* The run waits for the migration lock without holding a snapshot, because a session that
 * waits inside a statement (pg_advisory_lock) or inside a transaction keeps a snapshot or a
 * virtual transaction that CREATE INDEX CONCURRENTLY, run by the lock's holder, must wait for:
 * a deadlock. So each attempt is pg_try_advisory_(xact_)lock, which never blocks; a transaction
 * that did not get the lock is rolled back at once; between attempts the session holds no
 * transaction at all, and lock_timeout is enforced here, on the client. The state is read only
 * once the lock is held. Offline, and in opts.echo, the lock is its one blocking statement. */

_Noreturn static void locked(lua_State *L, body *b)
{
    kr_error_push(L, "migration_locked",
                  "another process is migrating: the migration lock on %s was not granted within lock_timeout %s",
                  b->vtname, b->lock_timeout_text);
    kr_error_setfield(L, "sqlstate", "55P03");
    kr_error_throw(L);
}

/* The error at -1 came from a query run under the lock: a lock_timeout there means another
 * migrator. Raises. */
_Noreturn static void lock_failed(lua_State *L, body *b)
{
    lua_getfield(L, -1, "sqlstate");
    int timed_out = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "55P03") == 0;
    lua_pop(L, 1);
    if (!timed_out) kr_error_throw(L);
    locked(L, b);
}

/* Runs sql (no echo) and returns the first value of its last result; raises on errors. */
static int query_bool(lua_State *L, kr_run *r, const char *sql)
{
    PGresult *res = kr_execscript(L, r->c, sql);
    if (res == NULL) kr_error_throw(L);
    int v = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    kr_dropbox(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Who holds the lock, told once through opts.on_event ("lock_wait"); returns lock_timeout in
 * milliseconds as the server reads the setting in force (0: wait for ever). */
static double lock_wait_event(lua_State *L, body *b)
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
    lua_getfield(L, SLOT_ENV, "on_event");
    if (lua_isfunction(L, -1) && PQntuples(res) == 1) {
        lua_createtable(L, 0, 4);
        lua_pushliteral(L, "lock_wait");
        lua_setfield(L, -2, "type");
        if (!PQgetisnull(res, 0, 1)) {
            lua_pushinteger(L, (lua_Integer)strtol(PQgetvalue(res, 0, 1), NULL, 10));
            lua_setfield(L, -2, "holder_pid");
            lua_pushstring(L, PQgetvalue(res, 0, 2));
            lua_setfield(L, -2, "holder_application_name");
            lua_pushnumber(L, strtod(PQgetvalue(res, 0, 3), NULL));
            lua_setfield(L, -2, "held_seconds");
        }
        lua_call(L, 1, 0);
    } else {
        lua_pop(L, 1);
    }
    kr_dropbox(L, -1);
    lua_pop(L, 2);
    return timeout_ms;
}

static void sleep_ms(double ms)
{
    if (!(ms > 0)) return;
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}


/* Takes the lock online: session = 0, pg_advisory_xact_lock in a transaction this leaves open
 * (BEGIN; SET LOCAL lock_timeout; the lock); session = 1, pg_advisory_lock on the session
 * (SET lock_timeout came first). Raises migration_locked once lock_timeout has passed. */
static void lock_acquire(lua_State *L, body *b, int session)
{
    kr_run *r = b->r;
    char key[32];
    snprintf(key, sizeof key, "%lld", kr_lock_key(b->vtname));
    if (session)
        lua_pushfstring(L, "SELECT pg_try_advisory_lock(%s)", key);
    else
        lua_pushfstring(L, "BEGIN; SET LOCAL lock_timeout = %s; SELECT pg_try_advisory_xact_lock(%s)", b->lock_timeout, key);
    const char *attempt = lua_tostring(L, -1);
    double start = now_ms(), timeout_ms = -1, delay = 2 + (double)((unsigned)PQbackendPID(r->c->pg) % 5); /* PgBouncer's pid may be negative */
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
        double left = timeout_ms > 0 ? start + timeout_ms - now_ms() : delay;
        if (left <= 0) locked(L, b);
        sleep_ms(delay < left ? delay : left);
        delay = delay * 1.5 > 100 ? 100 : delay * 1.5;
    }
    lua_pop(L, 1);
}

/* The lock statement: offline it is output; online it is echoed and taken by lock_acquire. */
static void take_lock(lua_State *L, body *b, int session)
{
    kr_run *r = b->r;
    const char *sql = session ? r->slock_sql : r->xlock_sql;
    if (r->offline) {
        kr_emit(L, r, SLOT_ENV, sql);
        return;
    }
    echo(L, r, SLOT_ENV, sql);
    lock_acquire(L, b, session);
}

/* ---- progress events (EVENTS.md) --------------------------------------------------------- */

/* Starts an event table {type = type} at the top of the stack. */
static void event_new(lua_State *L, const char *type)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
}

/* Hands the event table at -1 to opts.on_event (online runs only) and pops it. */
static void event_fire(lua_State *L, body *b)
{
    if (!b->has_events || b->r->offline) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, SLOT_OPTS, "on_event");
    lua_insert(L, -2);
    lua_call(L, 1, 0);
}

static void list_append(lua_State *L, int list, const char *value)
{
    lua_pushstring(L, value);
    lua_rawseti(L, list, (int)lua_rawlen(L, list) + 1);
}

/* Records a step that ran in the open transaction (or, non-transactional, committed by itself). */
static void progress_ran(lua_State *L, const char *rev)
{
    lua_getfield(L, SLOT_PROGRESS, PROGRESS_OPEN);
    list_append(L, lua_gettop(L), rev);
    lua_pop(L, 1);
}

/* The open transaction committed: its steps are durable. Fires "commit" when it had any. */
static void progress_committed(lua_State *L, body *b)
{
    lua_getfield(L, SLOT_PROGRESS, PROGRESS_OPEN);
    int open = lua_gettop(L), n = (int)lua_rawlen(L, open);
    if (n > 0) {
        lua_getfield(L, SLOT_PROGRESS, PROGRESS_KEPT);
        for (int k = 1; k <= n; k++) {
            lua_rawgeti(L, open, k);
            lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
        }
        lua_pop(L, 1);
        event_new(L, "commit");
        lua_pushvalue(L, open);
        lua_setfield(L, -2, "revisions");
        lua_newtable(L);
        lua_setfield(L, SLOT_PROGRESS, PROGRESS_OPEN);
        event_fire(L, b);
    }
    lua_pop(L, 1);
}

/* "base", or the down_revisions joined by ",": where an upgrade step starts, a downgrade ends. */
static void push_parents(lua_State *L, const kr_graph *g, const kr_mig *m)
{
    if (m->npar == 0) {
        lua_pushliteral(L, "base");
        return;
    }
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int q = m->par0; q < m->par0 + m->npar; q++) {
        if (q > m->par0) luaL_addchar(&buf, ',');
        luaL_addstring(&buf, g->m[g->par[q]].rev);
    }
    luaL_pushresult(&buf);
}

static void event_step(lua_State *L, body *b, const kr_mig *m, int up, const char *type, double ms)
{
    if (!b->has_events || b->r->offline) return;
    event_new(L, type);
    lua_pushstring(L, m->rev);
    lua_setfield(L, -2, "revision");
    lua_pushstring(L, up == KR_STEP_FINISH ? "finish" : up ? "upgrade" : "downgrade");
    lua_setfield(L, -2, "direction");
    if (ms < 0) {
        push_parents(L, &b->p.g, m);
        lua_setfield(L, -2, "from");
        lua_pushstring(L, m->message);
        lua_setfield(L, -2, "message");
        lua_pushboolean(L, m->transactional);
        lua_setfield(L, -2, "transactional");
    } else {
        lua_pushnumber(L, ms);
        lua_setfield(L, -2, "ms");
    }
    event_fire(L, b);
}

/* ---- segments and the version table --------------------------------------------------- */

static void create_version_table(lua_State *L, body *b)
{
    emitf(L, b, "CREATE TABLE IF NOT EXISTS %s (revision text NOT NULL PRIMARY KEY, message text NOT NULL DEFAULT '', "
                "checksum text, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), execution_ms integer)", b->vt);
    if (b->p.cmd == KR_CMD_FINISH) /* the first run that needs it adds it */
        emitf(L, b, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS finished_at timestamptz", b->vt);
}

/* Reads the applied revisions (online; offline the simulated state stands). Raises for a
 * revision no file provides, and for a changed file when the caller asks. The read ends the
 * batch that the segment's opening collected (BEGIN, lock, version table): one round trip. */
static void read_state(lua_State *L, body *b)
{
    kr_run *r = b->r;
    kr_graph *g = &b->p.g;
    if (r->offline) return;
    /* finish and downgrade need finished_at, which a version table of an older kronos lacks */
    if (b->finished)
        lua_pushfstring(L, "SELECT revision, checksum, (to_jsonb(v) ->> 'finished_at') IS NOT NULL FROM %s v", b->vt);
    else
        lua_pushfstring(L, "SELECT revision, checksum FROM %s", b->vt);
    PGresult *res;
    if (r->batch.on) {
        res = batch_query(L, r, SLOT_ENV, lua_tostring(L, -1));
        if (res == NULL) lock_failed(L, b);
    } else {
        res = kr_execscript(L, r->c, lua_tostring(L, -1));
    }
    if (res == NULL) kr_error_throw(L);
    memset(b->p.applied, 0, (size_t)g->n + 1);
    if (b->finished) memset(b->finished, 0, (size_t)g->n + 1);
    for (int row = 0; row < PQntuples(res); row++) {
        const char *rev = PQgetvalue(res, row, 0);
        int i = kr_graph_find(g, rev);
        if (i < 0 && b->p.cmd == KR_CMD_STAMP) {
            /* a stamp replaces it (see run_stamp) */
            lua_getfield(L, SLOT_ENV, "unknown");
            list_append(L, lua_gettop(L), rev);
            lua_pop(L, 1);
            continue;
        }
        if (i < 0)
            kr_migrate_raise(L, "unknown_revision", NULL, "the database is at revision '%s', which no migration file provides; "
                             "stamp the revision it is at (stamp --purge starts from an empty version table)", rev);
        b->p.applied[i] = 1;
        if (b->finished) b->finished[i] = strcmp(PQgetvalue(res, row, 2), "t") == 0;
        if (b->p.cmd == KR_CMD_UPGRADE && !b->allow_changed && !PQgetisnull(res, row, 1) &&
            strcmp(PQgetvalue(res, row, 1), g->m[i].checksum) != 0)
            kr_migrate_raise(L, "changed_migration", g->m[i].file,
                             "revision '%s' was applied from a different version of this file (checksum mismatch); "
                             "restore it, or pass allow_changed", rev);
    }
    kr_dropbox(L, -1);
    lua_pop(L, 2);
}

static void begin_tx(lua_State *L, body *b)
{
    kr_run *r = b->r;
    if (r->offline) {
        emitf(L, b, "BEGIN");
        emitf(L, b, "SET LOCAL lock_timeout = %s", b->lock_timeout);
    } else {
        echo(L, r, SLOT_ENV, "BEGIN");
        lua_pushfstring(L, "SET LOCAL lock_timeout = %s", b->lock_timeout);
        echo(L, r, SLOT_ENV, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    take_lock(L, b, 0); /* online: BEGIN and SET LOCAL run with each attempt */
    r->intx = 1;
    if (r->c) { /* conn:transaction() inside a migration makes savepoints */
        r->c->txdepth = 1;
        r->c->tx_ended = 0;
    }
    batch_open(r); /* read_state sends the rest of the opening */
    if (b->stmt_timeout) emitf(L, b, "SET LOCAL statement_timeout = %s", b->stmt_timeout);
    create_version_table(L, b);
    read_state(L, b);
}

static void commit_tx(lua_State *L, body *b)
{
    b->r->intx = 0; /* before: the COMMIT itself ends the transaction on purpose */
    if (b->r->c) b->r->c->txdepth = 0;
    emitf(L, b, "COMMIT");
    progress_committed(L, b);
}

static void begin_session(lua_State *L, body *b)
{
    b->r->session_lock = 1; /* from here on a failure resets the session (unlocking is harmless) */
    emitf(L, b, "SET lock_timeout = %s", b->lock_timeout);
    take_lock(L, b, 1);
    if (b->stmt_timeout) emitf(L, b, "SET statement_timeout = %s", b->stmt_timeout);
    create_version_table(L, b);
    read_state(L, b);
}

static void end_session(lua_State *L, body *b)
{
    kr_emit(L, b->r, SLOT_ENV, b->r->unlock_sql);
    b->r->session_lock = 0;
    emitf(L, b, "RESET lock_timeout");
    if (b->stmt_timeout) emitf(L, b, "RESET statement_timeout");
}

/* ---- non-transactional steps: the marker and the resume ----------------------------------- */

/* A transactional = false step runs statement by statement outside any transaction, so a kill
 * can leave part of it done. Before it runs, a marker is set, and cleared once its version row
 * is written: COMMENT ON TABLE <version table> IS 'kronos: running upgrade of <rev>' (a comment
 * changes no row that any reader counts). The marker says "(raw SQL)" once the step ran anything
 * but a kronos-generated CREATE/DROP INDEX CONCURRENTLY (op.execute, other helpers, op.db): such
 * work cannot be redone safely, so the next run stops and says how to resolve it. A generated
 * index step is resumed: an INVALID index it left is dropped and built again, a valid one kept. */

static void set_marker(lua_State *L, kr_run *r, int env, const char *text)
{
    int watched = r->nontx_step;
    r->nontx_step = 0;
    if (text) {
        kr_push_literal(L, text);
        lua_pushfstring(L, "COMMENT ON TABLE %s IS %s", r->vt, lua_tostring(L, -1));
    } else {
        lua_pushfstring(L, "COMMENT ON TABLE %s IS NULL", r->vt);
    }
    kr_emit(L, r, env, lua_tostring(L, -1));
    lua_pop(L, text ? 2 : 1);
    r->nontx_step = watched;
}

static void running_marker(lua_State *L, kr_run *r, int env, int raw)
{
    lua_pushfstring(L, "kronos: running %s of %s%s", r->up ? "upgrade" : "downgrade", r->cur_rev, raw ? " (raw SQL)" : "");
    set_marker(L, r, env, lua_tostring(L, -1));
    lua_pop(L, 1);
}

void kr_step_raw(lua_State *L, kr_run *r, int env)
{
    if (r->raw_marked) return;
    r->raw_marked = 1;
    running_marker(L, r, env, 1);
}

/* The index a generated CREATE/DROP INDEX CONCURRENTLY names, schema-qualified as written
 * ("s"."ix" or "ix"), pushed; 0 (nothing pushed) when sql is not one. */
static int index_statement(lua_State *L, const char *sql, int *create)
{
    const char *p;
    if (strncmp(sql, "CREATE INDEX CONCURRENTLY ", 26) == 0) p = sql + 26, *create = 1;
    else if (strncmp(sql, "CREATE UNIQUE INDEX CONCURRENTLY ", 33) == 0) p = sql + 33, *create = 1;
    else if (strncmp(sql, "DROP INDEX CONCURRENTLY ", 24) == 0) p = sql + 24, *create = 0;
    else return 0;
    if (strncmp(p, "IF NOT EXISTS ", 14) == 0) p += 14;
    else if (strncmp(p, "IF EXISTS ", 10) == 0) p += 10;
    /* one or two quoted identifiers; a create's schema is the one of its table (ON "s"."t") */
    const char *q = p;
    for (int part = 0; part < 2 && *q == '"'; part++) {
        for (q++; *q && !(q[0] == '"' && q[1] != '"'); q += q[0] == '"' ? 2 : 1) {
        }
        if (*q) q++;
        if (*q != '.') break;
        q++;
    }
    if (q == p || *(q - 1) != '"') return 0;
    if (*create) {
        const char *on = strstr(q, " ON ");
        const char *dot = on ? strstr(on + 4, "\".\"") : NULL;
        const char *paren = on ? strchr(on + 4, '(') : NULL;
        if (dot && paren && dot < paren) {
            lua_pushlstring(L, on + 4, (size_t)(dot - on - 3));
            lua_pushliteral(L, ".");
            lua_pushlstring(L, p, (size_t)(q - p));
            lua_concat(L, 3);
            return 1;
        }
    }
    lua_pushlstring(L, p, (size_t)(q - p));
    return 1;
}

/* "t" (valid), "f" (invalid) or NULL (absent) for the index named at -1 (pops it). */
static int index_state(lua_State *L, kr_run *r)
{
    kr_push_literal(L, lua_tostring(L, -1));
    lua_pushfstring(L, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", lua_tostring(L, -1));
    PGresult *res = kr_execscript(L, r->c, lua_tostring(L, -1));
    if (res == NULL) kr_error_throw(L);
    int state = PQntuples(res) == 0 ? 0 : strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? 1 : -1;
    kr_dropbox(L, -1);
    lua_pop(L, 4);
    return state;
}

/* Watches one statement of a non-transactional step; returns 0 when it must not run (a resumed
 * step finds it done). */
static int step_statement(lua_State *L, kr_run *r, int env, const char *sql)
{
    int create = 0;
    if (!r->in_builder || !index_statement(L, sql, &create)) {
        kr_step_raw(L, r, env);
        return 1;
    }
    if (!r->resume || r->offline) {
        lua_pop(L, 1);
        return 1;
    }
    lua_pushvalue(L, -1);
    int state = index_state(L, r); /* 1 valid, -1 invalid (a build or drop cut short), 0 absent */
    if (create && state == -1) {
        lua_pushfstring(L, "DROP INDEX CONCURRENTLY %s", lua_tostring(L, -1));
        int watched = r->nontx_step;
        r->nontx_step = 0;
        kr_emit(L, r, env, lua_tostring(L, -1));
        r->nontx_step = watched;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return create ? state != 1 : state != 0;
}

/* The marker a previous run left (online), pushed, or nothing (returns 0). */
static int read_marker(lua_State *L, body *b)
{
    kr_push_literal(L, b->vt);
    lua_pushfstring(L, "SELECT obj_description(to_regclass(%s), 'pg_class') AS m", lua_tostring(L, -1));
    PGresult *res = kr_execscript(L, b->r->c, lua_tostring(L, -1));
    if (res == NULL) kr_error_throw(L);
    int has = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) && strncmp(PQgetvalue(res, 0, 0), "kronos: running ", 16) == 0;
    if (has) lua_pushstring(L, PQgetvalue(res, 0, 0));
    else lua_pushnil(L);
    lua_replace(L, -4);
    kr_dropbox(L, -1);
    lua_pop(L, 2);
    if (!has) lua_pop(L, 1);
    return has;
}

/* Under the session lock, before the non-transactional step `next` (direction up): deals with
 * the marker of an interrupted step. Finished after all: cleared. A generated index step that
 * is next: resumed. Anything else: an error that names the step and how to resolve it. */
static void interrupted(lua_State *L, body *b, int next, int up)
{
    kr_run *r = b->r;
    if (r->offline || !read_marker(L, b)) return;
    char dir[16], rev[256];
    const char *text = lua_tostring(L, -1);
    int raw = strstr(text, " (raw SQL)") != NULL;
    if (sscanf(text, "kronos: running %15s of %255s", dir, rev) != 2) {
        lua_pop(L, 1);
        return;
    }
    int was_up = strcmp(dir, "upgrade") == 0;
    int i = kr_graph_find(&b->p.g, rev);
    if (i < 0)
        kr_migrate_raise(L, "interrupted_migration", NULL, "the %s of revision '%s', which no migration file provides, "
                         "was interrupted; resolve it by hand, then clear the mark: COMMENT ON TABLE %s IS NULL",
                         dir, rev, b->vt);
    if (b->p.applied[i] == (unsigned char)was_up) { /* its version row was written: it finished */
        set_marker(L, r, SLOT_ENV, NULL);
        lua_pop(L, 1);
        return;
    }
    const kr_mig *m = &b->p.g.m[i];
    if (!raw && i == next && was_up == up) {
        r->resume = 1;
        lua_pop(L, 1);
        return;
    }
    const kr_mig *parent = m->npar == 1 ? &b->p.g.m[b->p.g.par[m->par0]] : NULL;
    if (raw)
        kr_migrate_raise(L, "interrupted_migration", m->file,
                         "the %s of revision '%s' was interrupted: it is transactional = false and ran raw SQL, so part of it "
                         "may have run and kronos cannot redo it. Check what it did, then either complete it by hand and "
                         "run `kronos stamp %s`, or undo it by hand and run the SQL: COMMENT ON TABLE %s IS NULL "
                         "(the next %s runs it again)", dir, rev, was_up ? rev : (parent ? parent->rev : "base"), b->vt, dir);
    kr_migrate_raise(L, "interrupted_migration", m->file,
                     "the %s of revision '%s' was interrupted; resume it first with `kronos %s %s`", dir, rev, dir,
                     was_up ? rev : (parent ? parent->rev : "base"));
}

/* ---- steps ------------------------------------------------------------------------------- */

static void log_step(lua_State *L, body *b, const kr_mig *m, int up, double ms)
{
    lua_getfield(L, SLOT_ENV, "log");
    if (!lua_isfunction(L, -1) || b->r->offline) {
        lua_pop(L, 1);
        return;
    }
    const char *dir = up == KR_STEP_FINISH ? "finish" : up ? "upgrade" : "downgrade";
    lua_pushfstring(L, "%s %s %s (%d ms)", up == KR_STEP_FINISH ? "finish   " : up ? "upgrade  " : "downgrade",
                    m->rev, m->message, (int)(ms + 0.5));
    lua_createtable(L, 0, 5);
    lua_pushstring(L, dir);
    lua_setfield(L, -2, "direction");
    lua_pushstring(L, m->rev);
    lua_setfield(L, -2, "revision");
    lua_pushstring(L, m->message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, m->file);
    lua_setfield(L, -2, "file");
    lua_pushnumber(L, ms);
    lua_setfield(L, -2, "ms");
    lua_call(L, 2, 0);
}

static void insert_version(lua_State *L, body *b, const kr_mig *m)
{
    kr_push_literal(L, m->rev);
    kr_push_literal(L, m->message);
    kr_push_literal(L, m->checksum);
    emitf(L, b, "INSERT INTO %s (revision, message, checksum) VALUES (%s, %s, %s)", b->vt,
          lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pop(L, 3);
}

static void run_step(lua_State *L, body *b, int i, int up)
{
    kr_mig *m = &b->p.g.m[i];
    kr_run *r = b->r;
    event_step(L, b, m, up, "step_start", -1);
    r->cur_file = m->file;
    r->cur_rev = m->rev;
    r->cur_transactional = m->transactional;
    r->up = up;
    if (!up && !m->has_down) kr_migrate_raise(L, "bad_migration", m->file, "revision '%s' has no down function", m->rev);
    int unfinish = !up && b->finished && b->finished[i];
    int top = lua_gettop(L);
    lua_rawgeti(L, SLOT_LIST, m->slot);
    lua_getfield(L, -1, "migration");
    int mig = lua_gettop(L);
    if (unfinish) {
        lua_getfield(L, mig, "unfinish");
        if (!lua_isfunction(L, -1))
            kr_migrate_raise(L, "finished_migration", m->file,
                             "revision '%s' is finished: its finish changed the schema and it has no unfinish function "
                             "to undo that; add unfinish = function(op) ... end (run before down), or restore a backup", m->rev);
        lua_pop(L, 1);
    }
    lua_pushfstring(L, "-- %s %s: %s", up == KR_STEP_FINISH ? "finish" : up ? "upgrade" : "downgrade", m->rev, m->message);
    comment(L, b, lua_tostring(L, -1));
    kr_push_literal(L, m->rev);
    const char *rev = lua_tostring(L, -1);
    double t0 = now_ms();
    if (m->transactional) batch_open(r); /* one round trip for the whole step */
    if (up == 1 && m->transactional) insert_version(L, b, m);
    if (unfinish) {
        lua_getfield(L, mig, "unfinish");
        lua_getfield(L, SLOT_ENV, "op");
        lua_call(L, 1, 0);
    }
    int watch = !m->transactional && up != KR_STEP_FINISH;
    if (watch) {
        r->raw_marked = 0;
        running_marker(L, r, SLOT_ENV, 0);
        r->nontx_step = 1;
    }
    lua_getfield(L, mig, up == KR_STEP_FINISH ? "finish" : up ? "up" : "down");
    lua_getfield(L, SLOT_ENV, "op");
    lua_call(L, 1, 0);
    r->nontx_step = 0;
    if (up == KR_STEP_FINISH)
        emitf(L, b, "UPDATE %s SET finished_at = clock_timestamp() WHERE revision = %s", b->vt, rev);
    else if (!up)
        emitf(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, rev);
    else if (m->transactional)
        emitf(L, b, "UPDATE %s SET execution_ms = (extract(epoch FROM clock_timestamp() - applied_at) * 1000)::integer "
                    "WHERE revision = %s", b->vt, rev);
    else
        insert_version(L, b, m); /* no transaction to share: the row is written once the DDL has succeeded */
    if (watch) set_marker(L, r, SLOT_ENV, NULL); /* done: a kill before this leaves a finished step's mark */
    r->resume = 0;
    kr_batch_close(L, r, SLOT_ENV);
    if (up == KR_STEP_FINISH)
        b->finished[i] = 1;
    else
        b->p.applied[i] = (unsigned char)up;
    lua_pushstring(L, m->rev);
    lua_rawseti(L, SLOT_RESULTS, (int)lua_rawlen(L, SLOT_RESULTS) + 1);
    r->cur_file = r->cur_rev = NULL;
    lua_settop(L, top);
    progress_ran(L, m->rev);
    double ms = now_ms() - t0;
    log_step(L, b, m, up, ms);
    event_step(L, b, m, up, "step_done", ms);
    if (!m->transactional) progress_committed(L, b); /* no transaction: durable at once */
}

/* ---- the run ------------------------------------------------------------------------------ */

static void run_stamp(lua_State *L, body *b, const char *spec)
{
    kr_graph *g = &b->p.g;
    begin_tx(L, b);
    kr_plan_resolve(L, &b->p, spec);
    if (b->p.purge) {
        /* Alembic's stamp --purge: the version table is emptied first, whatever it held */
        emitf(L, b, "DELETE FROM %s", b->vt);
        memset(b->p.applied, 0, (size_t)g->n + 1);
    } else {
        /* revisions no file provides say nothing this stamp can keep: an explicit stamp replaces them */
        lua_getfield(L, SLOT_ENV, "unknown");
        for (int k = 1; k <= (int)lua_rawlen(L, -1); k++) {
            lua_rawgeti(L, -1, k);
            kr_push_literal(L, lua_tostring(L, -1));
            emitf(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, lua_tostring(L, -1));
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
    }
    for (int k = g->n - 1; k >= 0; k--) {
        int i = g->order[k];
        if (!b->p.applied[i] || b->p.target[i]) continue;
        kr_push_literal(L, g->m[i].rev);
        emitf(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, lua_tostring(L, -1));
        lua_pop(L, 1);
        b->p.applied[i] = 0;
    }
    for (int k = 0; k < g->n; k++) {
        int i = g->order[k];
        if (b->p.applied[i] || !b->p.target[i]) continue;
        insert_version(L, b, &g->m[i]);
        b->p.applied[i] = 1;
    }
    commit_tx(L, b);
    int *heads = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g->n + 1));
    int nh = kr_applied_heads(g, b->p.applied, heads);
    for (int k = 0; k < nh; k++) {
        lua_pushstring(L, g->m[heads[k]].rev);
        lua_rawseti(L, SLOT_RESULTS, k + 1);
    }
    lua_pop(L, 1);
}

/* The finishes left: applied (or, offline, in the target's closure), with a finish function, not
 * finished; in graph order. Fills b->p.steps and returns the count. */
static int finish_steps(body *b)
{
    const kr_graph *g = &b->p.g;
    int n = 0;
    for (int k = 0; k < g->n; k++) {
        int i = g->order[k];
        if (b->p.applied[i] && b->finishes[i] && !b->finished[i]) b->p.steps[n++] = i;
    }
    return n;
}

static int steps_left(body *b)
{
    return b->p.cmd == KR_CMD_FINISH ? finish_steps(b) : kr_plan_steps(&b->p);
}

static void run_steps(lua_State *L, body *b, const char *spec)
{
    int up = b->p.cmd == KR_CMD_FINISH ? KR_STEP_FINISH : b->p.cmd == KR_CMD_UPGRADE;
    const kr_mig *m = b->p.g.m;
    const int *steps = b->p.steps;
    for (;;) {
        begin_tx(L, b);
        if (!b->p.resolved && b->p.cmd != KR_CMD_FINISH) kr_plan_resolve(L, &b->p, spec);
        int n = steps_left(b);
        if (n == 0) {
            commit_tx(L, b);
            return;
        }
        if (!m[steps[0]].transactional) {
            /* its own segment under a session lock; the state is read again under that lock */
            commit_tx(L, b);
            begin_session(L, b);
            n = steps_left(b);
            int ran = n > 0 && !m[steps[0]].transactional;
            if (ran && up != KR_STEP_FINISH) interrupted(L, b, steps[0], up);
            if (ran) run_step(L, b, steps[0], up);
            end_session(L, b);
            /* another process may have changed the plan meanwhile: stop only when nothing is left */
            if (n == 0 || (n == 1 && ran)) return;
            continue;
        }
        int k = 0;
        while (k < n && m[steps[k]].transactional && (k == 0 || !b->each)) run_step(L, b, steps[k++], up);
        commit_tx(L, b);
        if (k == n) return;
    }
}

/* ---- options ------------------------------------------------------------------------------ */

/* The run's options are read by option.h's one reader. opts is argument #1 of the command the
 * user called (upgrade{...}); run_body is called from C, so Lua cannot name it, and the name is
 * set with kr_error_setfname(cmd) while the options are read. */
static const char *opt_string(lua_State *L, const char *key, const char *dflt)
{
    const char *s = kr_option_string(L, SLOT_OPTS, 1, "opts", key, NULL);
    return s ? s : dflt; /* opts holds it */
}

static int opt_bool(lua_State *L, const char *key)
{
    return kr_option_bool(L, SLOT_OPTS, 1, "opts", key, 0);
}

/* A timeout: milliseconds as a number, or a PostgreSQL duration string such as "30s".
 * Pushes the quoted literal (or nothing and returns NULL when absent). */
static const char *opt_timeout(lua_State *L, const char *key, const char *dflt, const char **text)
{
    kr_option_field(L, SLOT_OPTS, key);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Number ms = lua_tonumber(L, -1);
        if (!(ms >= 0 && ms <= 2147483647.0))
            kr_error_arg(L, 1, "opts.%s: must be from 0 to 2147483647 ms", key);
        lua_pushfstring(L, "%dms", (int)ms);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
    } else if (lua_isnil(L, -1) && dflt) {
        lua_pushstring(L, dflt);
    } else if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    } else {
        kr_error_arg(L, 1, "opts.%s: milliseconds or a duration string expected, got %s", key, luaL_typename(L, -1));
    }
    lua_remove(L, -2);
    if (text) *text = lua_tostring(L, -1);
    kr_push_literal(L, lua_tostring(L, -1));
    return lua_tostring(L, -1); /* both strings stay on the body's stack */
}

static void read_options(lua_State *L, body *b)
{
    b->vtname = kr_version_table(L, SLOT_OPTS);
    b->vt = lua_tostring(L, -1);
    b->r->vt = b->vt;
    b->lock_timeout = opt_timeout(L, "lock_timeout", "60s", &b->lock_timeout_text);
    b->stmt_timeout = opt_timeout(L, "statement_timeout", NULL, NULL);
    b->each = opt_bool(L, "transaction_per_migration");
    b->allow_changed = opt_bool(L, "allow_changed");
    long long key = kr_lock_key(b->vtname);
    snprintf(b->r->xlock_sql, sizeof b->r->xlock_sql, "SELECT pg_advisory_xact_lock(%lld)", key);
    snprintf(b->r->slock_sql, sizeof b->r->slock_sql, "SELECT pg_advisory_lock(%lld)", key);
    snprintf(b->r->unlock_sql, sizeof b->r->unlock_sql, "SELECT pg_advisory_unlock(%lld)", key);
}

/* ---- entry --------------------------------------------------------------------------------- */

/* body(run, cmd, list, opts, conn, ddl, progress) -> revisions [, statements]; the stack is named by SLOT_*. */
static int run_body(lua_State *L)
{
    body b;
    memset(&b, 0, sizeof b);
    b.r = (kr_run *)lua_touserdata(L, SLOT_RUN);
    const char *cmd = lua_tostring(L, SLOT_CMD);
    int kind = strcmp(cmd, "upgrade") == 0 ? KR_CMD_UPGRADE : strcmp(cmd, "downgrade") == 0 ? KR_CMD_DOWNGRADE
             : strcmp(cmd, "finish") == 0 ? KR_CMD_FINISH : KR_CMD_STAMP;
    lua_settop(L, SLOT_PROGRESS);
    lua_createtable(L, 2, 5); /* SLOT_ENV */
    lua_newtable(L);
    lua_rawseti(L, SLOT_ENV, KR_ENV_OUT);
    lua_newtable(L);
    lua_rawseti(L, SLOT_ENV, KR_ENV_PENDING);
    lua_pushvalue(L, SLOT_DDL);
    lua_setfield(L, SLOT_ENV, "ddl");
    lua_getfield(L, SLOT_OPTS, "log");
    lua_setfield(L, SLOT_ENV, "log");
    lua_getfield(L, SLOT_OPTS, "on_event");
    lua_setfield(L, SLOT_ENV, "on_event");
    lua_getfield(L, SLOT_OPTS, "echo");
    b.r->has_echo = lua_isfunction(L, -1);
    lua_setfield(L, SLOT_ENV, "echo");
    lua_getfield(L, SLOT_OPTS, "on_event");
    b.has_events = lua_isfunction(L, -1);
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, SLOT_ENV, "unknown");
    lua_newtable(L); /* SLOT_RESULTS */
    b.r->make_op(L, SLOT_RUN, SLOT_ENV, SLOT_CONN, SLOT_OPTS);
    kr_error_setfname(L, cmd);
    read_options(L, &b);
    kr_plan_init(L, &b.p, SLOT_LIST, kind);
    if (kind == KR_CMD_FINISH || kind == KR_CMD_DOWNGRADE) {
        b.finished = kr_newset(L, &b.p.g);
        b.finishes = kr_newset(L, &b.p.g);
        for (int i = 0; i < b.p.g.n; i++) {
            lua_rawgeti(L, SLOT_LIST, b.p.g.m[i].slot);
            lua_getfield(L, -1, "migration");
            lua_getfield(L, -1, "finish");
            b.finishes[i] = lua_isfunction(L, -1);
            lua_pop(L, 3);
        }
    }
    b.p.purge = opt_bool(L, "purge");
    const char *spec = opt_string(L, "target", kind == KR_CMD_UPGRADE ? "head" : kind == KR_CMD_DOWNGRADE ? "base"
                                               : kind == KR_CMD_FINISH ? "heads" : "");
    kr_error_setfname(L, NULL);
    if (*spec == '\0') kr_migrate_raise(L, "bad_target", NULL, "stamp needs a target");
    const char *colon = strchr(spec, ':');
    if (colon && !b.r->offline) kr_migrate_raise(L, "bad_target", NULL, "a from:to range ('%s') is for offline (sql) mode only", spec);
    if (colon) {
        /* offline from a given state */
        lua_pushlstring(L, spec, (size_t)(colon - spec));
        kr_plan_closure(L, &b.p, *lua_tostring(L, -1) ? lua_tostring(L, -1) : "base", b.p.applied);
        lua_pop(L, 1);
        spec = colon + 1;
        if (*spec == '\0') spec = kind == KR_CMD_UPGRADE ? "head" : "base";
    } else if (b.r->offline && kind == KR_CMD_DOWNGRADE) {
        kr_migrate_raise(L, "bad_target", NULL, "offline downgrade needs a from:to range, such as 'head:base'");
    }
    if (kind == KR_CMD_FINISH && b.r->offline) {
        /* offline: the finishes of the target's closure, those of the range's start taken as run */
        memcpy(b.finished, b.p.applied, (size_t)b.p.g.n + 1);
        kr_plan_closure(L, &b.p, spec, b.p.applied);
    } else if (kind == KR_CMD_FINISH && strcmp(spec, "heads") != 0) {
        kr_migrate_raise(L, "bad_target", NULL, "finish runs every pending finish; it takes no target ('%s')", spec);
    }
    b.r->active = 1;
    if (kind == KR_CMD_STAMP)
        run_stamp(L, &b, spec);
    else
        run_steps(L, &b, spec);
    b.r->active = 0;
    lua_pushvalue(L, SLOT_RESULTS);
    lua_rawgeti(L, SLOT_ENV, KR_ENV_OUT);
    return 2;
}

/* Wraps the error at the top of the stack with the migration that raised it. */
static void blame(lua_State *L, kr_run *r)
{
    const char *dir = r->up == KR_STEP_FINISH ? "finish" : r->up ? "upgrade" : "downgrade";
    int is_error = 0;
    if (lua_istable(L, -1) && lua_getmetatable(L, -1)) {
        luaL_getmetatable(L, KR_ERROR_CLASS);
        is_error = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    if (!is_error) {
        const char *msg = lua_tostring(L, -1);
        kr_error_pushoneline(L, msg ? msg : luaL_typename(L, -1));
        kr_error_new(L, "migration_failed", lua_tostring(L, -1));
        lua_remove(L, -2);
        lua_remove(L, -2);
    }
    lua_getfield(L, -1, "message");
    lua_pushfstring(L, "%s: %s of revision '%s' failed: %s", r->cur_file, dir, r->cur_rev,
                    lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_setfield(L, -3, "message");
    lua_pop(L, 1);
    kr_error_setfield(L, "file", r->cur_file);
    kr_error_setfield(L, "revision", r->cur_rev);
}

/* Sets err.kept and err.rolled_back on the error object at -1 (not on a foreign error value):
 * what this run committed, and what its open transaction held (with the failing step when it
 * is transactional: its work went with the transaction). */
static void report_progress(lua_State *L, kr_run *r, int progress)
{
    if (!lua_istable(L, -1)) return;
    lua_getfield(L, progress, PROGRESS_KEPT);
    lua_setfield(L, -2, "kept");
    lua_getfield(L, progress, PROGRESS_OPEN);
    if (r->cur_rev && r->cur_transactional) list_append(L, lua_gettop(L), r->cur_rev);
    lua_setfield(L, -2, "rolled_back");
}

/* core.migrate.run(cmd, list, opts, conn|nil, ddl|nil) -> revisions, statements (offline) */
int kr_migrate_run(lua_State *L, kr_op_maker make_op)
{
    const char *cmd = luaL_checkstring(L, 1);
    if (strcmp(cmd, "upgrade") != 0 && strcmp(cmd, "downgrade") != 0 && strcmp(cmd, "stamp") != 0 &&
        strcmp(cmd, "finish") != 0)
        kr_error_arg(L, 1, "'upgrade', 'downgrade', 'stamp' or 'finish' expected");
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "sql");
    int offline = lua_toboolean(L, -1);
    lua_pop(L, 1);
    kr_conn *c = offline ? NULL : kr_checkconn(L, 4);
    lua_settop(L, 5);
    if (c && (c->txdepth > 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE))
        kr_migrate_raise(L, "in_transaction", NULL, "the connection is inside a transaction; migrations manage their own");
    kr_run *r = (kr_run *)lua_newuserdata(L, sizeof(kr_run)); /* 6 */
    memset(r, 0, sizeof *r);
    r->make_op = make_op;
    r->c = c;
    r->offline = offline;
    lua_createtable(L, 0, 2); /* 7: progress */
    lua_newtable(L);
    lua_setfield(L, 7, PROGRESS_KEPT);
    lua_newtable(L);
    lua_setfield(L, 7, PROGRESS_OPEN);
    lua_pushcfunction(L, run_body);
    lua_pushvalue(L, 6);
    for (int i = 1; i <= 5; i++) lua_pushvalue(L, i);
    lua_pushvalue(L, 7);
    int status = lua_pcall(L, 7, 2, 0);
    r->active = 0;
    if (status == 0) return 2;
    if (c && c->pg) {
        /* nothing of a failed transaction stays; a session lock is given back */
        kr_endstream(c);
        if (r->intx) PQclear(PQexec(c->pg, "ROLLBACK"));
        if (r->session_lock) {
            PQclear(PQexec(c->pg, r->unlock_sql));
            PQclear(PQexec(c->pg, "RESET lock_timeout; RESET statement_timeout"));
        }
    }
    if (c) c->txdepth = 0;
    kr_error_setfname(L, NULL); /* an op helper's name must not outlive its call */
    if (r->cur_file) blame(L, r);
    report_progress(L, r, 7);
    return lua_error(L);
}
