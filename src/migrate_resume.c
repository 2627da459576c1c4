/* Non-transactional steps: the marker, the watch of their statements, and the resume.
 *
 * A transactional = false step runs statement by statement outside any transaction, so a kill
 * (SIGKILL, pg_terminate_backend) can leave part of it done and no version row. Before it runs,
 * a marker is set, and it is cleared once its version row is written:
 *   COMMENT ON TABLE <version table> IS 'kronos: running upgrade of <rev>'
 * (a comment changes no row that any reader counts, and needs no table of its own). The marker
 * says "(raw SQL)" once the step ran anything but a kronos-generated CREATE/DROP INDEX
 * CONCURRENTLY (op.execute, other helpers, op.db): such work cannot be redone safely, so the next
 * run stops with interrupted_migration and the exact commands that resolve it. A generated index
 * step is resumed: an INVALID index it left is dropped and built again, a valid one kept, and a
 * drop that already happened is not repeated, so the next run never fails with "already exists".
 *
 * The marker is read with the state in every segment (migrate_segment.c) and dealt with before
 * the segment's first step (kr_resume_check). The state is kr_run.watch; the op proxy only says
 * which statements its helpers generated. */
#include <stdio.h>
#include <string.h>

#include "migrate_run.h"

/* Sets the marker to text (NULL clears it). It goes through kr_emit, not the watch: the marker
 * is the run's bookkeeping, and the offline SQL carries it too, so a DBA's psql run of the
 * script leaves the same trace. */
static void set_marker(lua_State *L, kr_run *r, int env, const char *text)
{
    if (text) {
        kr_push_literal(L, text);
        lua_pushfstring(L, "COMMENT ON TABLE %s IS %s", r->vt, lua_tostring(L, -1));
    } else {
        lua_pushfstring(L, "COMMENT ON TABLE %s IS NULL", r->vt);
    }
    kr_emit(L, r, env, lua_tostring(L, -1));
    lua_pop(L, text ? 2 : 1);
}

/* The marker of the running step (r->up, r->cur_rev); raw says it did work kronos cannot redo.
 * Its text is what kr_resume_check parses: "kronos: running <direction> of <rev>[ (raw SQL)]". */
static void running_marker(lua_State *L, kr_run *r, int env, int raw)
{
    lua_pushfstring(L, "kronos: running %s of %s%s", r->up ? "upgrade" : "downgrade", r->cur_rev, raw ? " (raw SQL)" : "");
    set_marker(L, r, env, lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* Before a non-transactional step's up or down: the marker says it runs, so that a kill from
 * here on is seen by the next run, and the step's statements are watched (kr_resume_statement). */
void kr_resume_watch(lua_State *L, kr_run *r, int env)
{
    r->watch.raw = 0;
    running_marker(L, r, env, 0);
    r->watch.on = 1;
}

/* The step's work is done and its version row written (the caller's order: a kill before the
 * row leaves the marker, and the next run finds the row missing and resumes or stops; a kill
 * after it leaves a finished step's marker, which the next run clears). Ends the watch. */
void kr_resume_done(lua_State *L, kr_run *r, int env)
{
    r->watch.on = 0;
    r->watch.resume = 0;
    set_marker(L, r, env, NULL);
}

/* The watched step does work kronos cannot redo (raw SQL, a helper other than an index build,
 * op.db): the marker says so, once per step, so that an interrupted run is never resumed
 * automatically. Nothing outside a watched step. */
void kr_resume_raw(lua_State *L, kr_run *r, int env)
{
    if (!r->watch.on || r->watch.raw) return;
    r->watch.raw = 1;
    running_marker(L, r, env, 1);
}

/* The index a generated CREATE/DROP INDEX CONCURRENTLY names, schema-qualified as written
 * ("s"."ix" or "ix"), pushed; 0 (nothing pushed) when sql is not one. Only the helpers' own
 * text is read (r->watch.generated), whose shape ddl.c fixes, so this is no SQL parser: anything
 * else answers 0 and counts as raw SQL. */
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

/* 1 (valid), -1 (invalid: a build or a drop cut short) or 0 (absent) for the index named at -1
 * (pops it): what a resumed step finds of the statement the interrupted run was at. */
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

/* Watches one statement of a non-transactional step (r->watch.on); returns 0 when it must not
 * run because the resumed step finds it done (a valid index, a drop that happened). Anything
 * not generated marks the step raw. Resuming, an INVALID index is dropped first, so the build
 * runs again instead of failing with "already exists". */
int kr_resume_statement(lua_State *L, kr_run *r, int env, const char *sql)
{
    int create = 0;
    if (!r->watch.generated || !index_statement(L, sql, &create)) {
        kr_resume_raw(L, r, env);
        return 1;
    }
    if (!r->watch.resume || r->offline) {
        lua_pop(L, 1);
        return 1;
    }
    lua_pushvalue(L, -1);
    int state = index_state(L, r);
    if (create && state == -1) {
        lua_pushfstring(L, "DROP INDEX CONCURRENTLY %s", lua_tostring(L, -1));
        kr_emit(L, r, env, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return create ? state != 1 : state != 0;
}

/* The marker a previous run left, pushed, or nothing (returns 0): read_state read the version
 * table's comment with the state, under the segment's lock. Another comment (not starting
 * "kronos: running ") is the user's, and no marker. */
static int read_marker(lua_State *L, kr_runner *b)
{
    lua_getfield(L, b->env, "marker");
    if (lua_type(L, -1) == LUA_TSTRING && strncmp(lua_tostring(L, -1), "kronos: running ", 16) == 0) return 1;
    lua_pop(L, 1);
    return 0;
}

/* Before the first step of every segment (next: that step when it is non-transactional, else
 * -1; direction up): deals with the marker of an interrupted step, read under the segment's lock
 * so that no other run is midway. The step finished after all (its version row says so): the
 * marker is cleared. A generated index step that is next in the same direction: resumed
 * (r->watch.resume). Anything else raises interrupted_migration naming the step and the commands
 * that resolve it, never "already exists": in particular no other step runs on top of the half
 * done one (a transactional step after an interrupted downgrade would build on an index half
 * dropped). */
void kr_resume_check(lua_State *L, kr_runner *b, int next, int up)
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
        set_marker(L, r, b->env, NULL);
        lua_pop(L, 1);
        return;
    }
    const kr_mig *m = &b->p.g.m[i];
    if (!raw && i == next && was_up == up) {
        r->watch.resume = 1;
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
