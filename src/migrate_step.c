/* One step: a migration's up, down or finish, with its version row, in the segment the loop
 * opened (migrate_run.c).
 *
 * Two phases: a migration may carry finish = function(op) beside up and down. upgrade runs up
 * only; the "finish" command runs, in graph order, the finish of every applied migration whose
 * finish has not run, under the same segments and lock, and records it in the version table's
 * finished_at column. A downgrade of a finished migration runs its unfinish(op) before its
 * down, and is refused when it has none. */
#include "migrate_run.h"

/* A statement of a migration (the op proxy's execute and helpers). In a non-transactional step
 * it is watched first (kr_resume_statement), and skipped when the resumed step finds it done;
 * then it goes where every statement goes (kr_emit), so online and offline runs stay the same. */
void kr_step_emit(lua_State *L, kr_run *r, int env, const char *sql)
{
    if (r->watch.on && !kr_resume_statement(L, r, env, sql)) return; /* done by the interrupted run */
    kr_emit(L, r, env, sql);
}

/* Runs step i (up: 1 upgrade, 0 downgrade, KR_STEP_FINISH finish) and records it: b->p.applied
 * or b->finished, the results, the progress, the log and the events. A transactional step is
 * one round trip: it marks the transaction as it starts (kronos.step, its start time, SET LOCAL)
 * and its version statement comes last, guarded by that mark (KR_TX_GUARD), so a COMMIT or
 * ROLLBACK inside its SQL that the scan of op.execute could not see fails the step instead of
 * recording work that left the transaction. A non-transactional one is watched
 * (migrate_resume.c) and its version row written once its work has succeeded. Raises on any failure, with
 * r->cur_file and r->cur_rev set for kr_migrate_run to name the migration. */
void kr_step_run(lua_State *L, kr_runner *b, int i, int up)
{
    kr_mig *m = &b->p.g.m[i];
    kr_run *r = b->r;
    kr_progress_step(L, b, m, up, "step_start", -1);
    r->cur_file = m->file;
    r->cur_rev = m->rev;
    r->cur_transactional = m->transactional;
    r->up = up;
    if (!up && !m->has_down) kr_migrate_raise(L, "bad_migration", m->file, "revision '%s' has no down function", m->rev);
    int unfinish = !up && b->finished && b->finished[i];
    int top = lua_gettop(L);
    lua_rawgeti(L, b->list, m->slot);
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
    kr_emit_comment(L, r, b->env, lua_tostring(L, -1));
    kr_push_literal(L, m->rev);
    const char *rev = lua_tostring(L, -1);
    double t0 = kr_clock_ms();
    if (m->transactional) {
        kr_batch_open(r); /* one round trip for the whole step */
        kr_segment_emit(L, b, "SELECT set_config('kronos.step', clock_timestamp()::text, true)");
    }
    if (unfinish) {
        lua_getfield(L, mig, "unfinish");
        lua_getfield(L, b->env, "op");
        lua_call(L, 1, 0);
    }
    int watch = !m->transactional && up != KR_STEP_FINISH;
    if (watch) kr_resume_watch(L, r, b->env);
    lua_getfield(L, mig, up == KR_STEP_FINISH ? "finish" : up ? "up" : "down");
    lua_getfield(L, b->env, "op");
    lua_call(L, 1, 0);
    /* the version row last: in a transactional step, after the guard of the step's mark, so
     * that SQL which ended the transaction (COMMIT, ROLLBACK, even followed by BEGIN) records
     * nothing (the guard comes first: the version table may have gone with a ROLLBACK) */
    if (m->transactional) kr_segment_emit(L, b, "SELECT " KR_TX_GUARD("kronos.step", "timestamptz"));
    if (up == KR_STEP_FINISH)
        kr_segment_emit(L, b, "UPDATE %s SET finished_at = clock_timestamp() WHERE revision = %s", b->vt, rev);
    else if (!up)
        kr_segment_emit(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, rev);
    else
        kr_segment_insert_version(L, b, m, m->transactional);
    if (watch) kr_resume_done(L, r, b->env); /* a kill before this leaves a finished step's mark */
    kr_batch_close(L, r, b->env);
    if (up == KR_STEP_FINISH)
        b->finished[i] = 1;
    else
        b->p.applied[i] = (unsigned char)up;
    lua_pushstring(L, m->rev);
    lua_rawseti(L, b->results, (int)lua_rawlen(L, b->results) + 1);
    r->cur_file = r->cur_rev = NULL;
    lua_settop(L, top);
    kr_progress_ran(L, b, m->rev);
    double ms = kr_clock_ms() - t0;
    kr_progress_log(L, b, m, up, ms);
    kr_progress_step(L, b, m, up, "step_done", ms);
    if (!m->transactional) kr_progress_committed(L, b); /* no transaction: durable at once */
}
