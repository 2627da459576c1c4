/* Segments. A run is a sequence of them; a transactional segment is
 *   BEGIN; SET LOCAL lock_timeout; SELECT pg_advisory_xact_lock(key); [SET LOCAL statement_timeout;]
 *   CREATE TABLE IF NOT EXISTS <version table>; (read the version) ; steps ... ; COMMIT
 * so the lock, the DDL and the version rows commit or vanish together, and no session state
 * outlives the transaction (transaction poolers keep working). A migration with
 * transactional = false gets a segment of its own under a session advisory lock, whose settings
 * are reset when it ends. Either way the state is read under the lock, never before it. */
#include <stdarg.h>
#include <string.h>

#include "migrate_run.h"

/* Formats (lua_pushfstring's formats) and emits one statement of the run (kr_emit). */
void kr_segment_emit(lua_State *L, kr_runner *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *sql = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    kr_emit(L, b->r, b->env, sql);
    lua_pop(L, 1);
}

/* Records m as applied: its version row, with its message and the checksum that a later
 * upgrade compares with the file (changed_migration). marked: in a transactional step, whose
 * row comes last (after the guard of its mark, kr_step_run), applied_at and execution_ms come
 * from the step's mark, its start time; otherwise (a non-transactional step, once its work is done; a
 * stamp) the row is stamped with the time it is written. */
void kr_segment_insert_version(lua_State *L, kr_runner *b, const kr_mig *m, int marked)
{
    kr_push_literal(L, m->rev);
    kr_push_literal(L, m->message);
    kr_push_literal(L, m->checksum);
    if (marked)
        kr_segment_emit(L, b, "INSERT INTO %s (revision, message, checksum, applied_at, execution_ms) "
                              "SELECT %s, %s, %s, t, (extract(epoch FROM clock_timestamp() - t) * 1000)::integer "
                              "FROM (SELECT current_setting('kronos.step')::timestamptz AS t) s", b->vt,
                        lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
    else
        kr_segment_emit(L, b, "INSERT INTO %s (revision, message, checksum) VALUES (%s, %s, %s)", b->vt,
                        lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pop(L, 3);
}

/* The version table, made by the first run (under the lock, so two first runs cannot race).
 * finished_at is added by the first finish run that needs it: version tables of older kronos
 * keep working. */
static void create_version_table(lua_State *L, kr_runner *b)
{
    kr_segment_emit(L, b, "CREATE TABLE IF NOT EXISTS %s (revision text NOT NULL PRIMARY KEY, message text NOT NULL DEFAULT '', "
                          "checksum text, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), execution_ms integer)", b->vt);
    if (b->p.cmd == KR_CMD_FINISH)
        kr_segment_emit(L, b, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS finished_at timestamptz", b->vt);
}

/* Reads the applied revisions into b->p.applied (and b->finished) (online; offline the
 * simulated state stands), and the version table's comment into env.marker (the mark of an
 * interrupted non-transactional step, migrate_resume.c; nil when there is none), so that every
 * segment sees it with no round trip of its own. Raises for a revision no file provides (a stamp
 * collects it in env.unknown instead, to replace it), and for a changed file unless
 * opts.allow_changed. The read ends the batch that the segment's opening collected (BEGIN, lock,
 * version table): one round trip, whose lock_timeout is told as migration_locked. */
static void read_state(lua_State *L, kr_runner *b)
{
    kr_run *r = b->r;
    kr_graph *g = &b->p.g;
    if (r->offline) return;
    /* finish and downgrade need finished_at, which a version table of an older kronos lacks;
     * the comment comes as one more row, whose revision is NULL */
    kr_push_literal(L, b->vt);
    if (b->finished)
        lua_pushfstring(L, "SELECT revision, checksum, (to_jsonb(v) ->> 'finished_at') IS NOT NULL FROM %s v "
                           "UNION ALL SELECT NULL, obj_description(to_regclass(%s), 'pg_class'), NULL", b->vt, lua_tostring(L, -1));
    else
        lua_pushfstring(L, "SELECT revision, checksum FROM %s UNION ALL SELECT NULL, obj_description(to_regclass(%s), "
                           "'pg_class')", b->vt, lua_tostring(L, -1));
    lua_remove(L, -2);
    lua_pushnil(L);
    lua_setfield(L, b->env, "marker");
    PGresult *res;
    if (r->batch.on) {
        res = kr_batch_query(L, r, b->env, lua_tostring(L, -1));
        if (res == NULL) kr_lock_failed(L, b);
    } else {
        res = kr_execscript(L, r->c, lua_tostring(L, -1));
    }
    if (res == NULL) kr_error_throw(L);
    memset(b->p.applied, 0, (size_t)g->n + 1);
    if (b->finished) memset(b->finished, 0, (size_t)g->n + 1);
    for (int row = 0; row < PQntuples(res); row++) {
        if (PQgetisnull(res, row, 0)) {
            if (!PQgetisnull(res, row, 1)) {
                lua_pushstring(L, PQgetvalue(res, row, 1));
                lua_setfield(L, b->env, "marker");
            }
            continue;
        }
        const char *rev = PQgetvalue(res, row, 0);
        int i = kr_graph_find(g, rev);
        if (i < 0 && b->p.cmd == KR_CMD_STAMP) {
            /* a stamp replaces it (see run_stamp) */
            lua_getfield(L, b->env, "unknown");
            lua_pushstring(L, rev);
            lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
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

/* Opens a transactional segment: BEGIN and the transaction lock, then (batched with the read)
 * statement_timeout, the version table and the state. From here on a failure rolls back
 * (r->intx), and conn:transaction() inside a migration makes savepoints (txdepth 1). */
void kr_segment_begin(lua_State *L, kr_runner *b)
{
    kr_run *r = b->r;
    if (r->offline) {
        kr_segment_emit(L, b, "BEGIN");
        kr_segment_emit(L, b, "SET LOCAL lock_timeout = %s", b->lock_timeout);
    } else {
        kr_emit_echo(L, r, b->env, "BEGIN");
        lua_pushfstring(L, "SET LOCAL lock_timeout = %s", b->lock_timeout);
        kr_emit_echo(L, r, b->env, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    kr_lock_take(L, b, 0); /* online: BEGIN and SET LOCAL run with each attempt */
    r->intx = 1;
    if (r->c) {
        r->c->txdepth = 1;
        r->c->tx_ended = 0;
    }
    kr_batch_open(r); /* read_state sends the rest of the opening */
    if (b->stmt_timeout) kr_segment_emit(L, b, "SET LOCAL statement_timeout = %s", b->stmt_timeout);
    create_version_table(L, b);
    read_state(L, b);
}

/* Commits the segment's transaction: its steps become durable (err.kept, the commit event). */
void kr_segment_commit(lua_State *L, kr_runner *b)
{
    b->r->intx = 0; /* before: the COMMIT itself ends the transaction on purpose */
    if (b->r->c) b->r->c->txdepth = 0;
    kr_segment_emit(L, b, "COMMIT");
    kr_progress_committed(L, b);
}

/* Opens the segment of a non-transactional step: the session lock (SET lock_timeout first),
 * statement_timeout, the version table and the state, read again under this lock. */
void kr_segment_begin_session(lua_State *L, kr_runner *b)
{
    b->r->session_lock = 1; /* from here on a failure resets the session (unlocking is harmless) */
    kr_segment_emit(L, b, "SET lock_timeout = %s", b->lock_timeout);
    kr_lock_take(L, b, 1);
    if (b->stmt_timeout) kr_segment_emit(L, b, "SET statement_timeout = %s", b->stmt_timeout);
    create_version_table(L, b);
    read_state(L, b);
}

/* Ends it: the lock given back and the session's settings reset, so that the connection goes
 * back to its owner as it came. */
void kr_segment_end_session(lua_State *L, kr_runner *b)
{
    kr_emit(L, b->r, b->env, b->r->unlock_sql);
    b->r->session_lock = 0;
    kr_segment_emit(L, b, "RESET lock_timeout");
    if (b->stmt_timeout) kr_segment_emit(L, b, "RESET statement_timeout");
}
