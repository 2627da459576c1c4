/* Non-transactional steps: the marker, the watch of their statements, and the resume.
 *
 * A transactional = false step runs statement by statement outside any transaction, so a kill
 * (SIGKILL, pg_terminate_backend) can leave part of it done and no version row. Before it runs,
 * a marker is set, and it is cleared once its version row is written:
 *   COMMENT ON TABLE <version table> IS 'kronos: running upgrade of <rev>'
 * (a comment changes no row that any reader counts, and needs no table of its own). The marker
 * says "(raw SQL)" once the step ran op.execute or read op.db, "(DDL kronos cannot resume)" once
 * it ran a helper's statement other than CREATE/DROP INDEX CONCURRENTLY: such work cannot be
 * redone safely, so the next run stops with interrupted_migration and the exact commands that
 * resolve it. A generated index step is resumed: an INVALID index it left is dropped and built
 * again, a valid one kept, and a drop that already happened is not repeated, so the next run
 * never fails with "already exists". Every command the stop prints is checked against the
 * planner itself (exact_command): run as printed, it moves only the interrupted revision.
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

/* What a watched step has run, in the order a marker can only go up (watch.ran): only index
 * builds and drops kronos can resume, DDL of another helper (each statement atomic, but which of
 * them ran is not known), raw SQL (op.execute, op.db: anything at all). MARK is the suffix the
 * marker carries, which kr_resume_check reads back, and RAN what its message says. */
enum { RAN_INDEX = 0, RAN_DDL = 1, RAN_RAW = 2 };
static const char *const MARK[] = {"", " (DDL kronos cannot resume)", " (raw SQL)"};
static const char *const RAN[] = {"", "kronos-generated DDL other than CREATE/DROP INDEX CONCURRENTLY", "raw SQL"};

/* The marker of the running step (r->up, r->cur_rev); ran (RAN_*) says what it did beyond what
 * kronos can redo. Its text is what kr_resume_check parses: "kronos: running <direction> of
 * <rev><MARK[ran]>". */
static void running_marker(lua_State *L, kr_run *r, int env, int ran)
{
    lua_pushfstring(L, "kronos: running %s of %s%s", r->up ? "upgrade" : "downgrade", r->cur_rev, MARK[ran]);
    set_marker(L, r, env, lua_tostring(L, -1));
    lua_pop(L, 1);
}

/* Before a non-transactional step's up or down: the marker says it runs, so that a kill from
 * here on is seen by the next run, and the step's statements are watched (kr_resume_statement). */
void kr_resume_watch(lua_State *L, kr_run *r, int env)
{
    r->watch.ran = RAN_INDEX;
    running_marker(L, r, env, RAN_INDEX);
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

/* The watched step does work kronos cannot redo, of kind ran (RAN_DDL, RAN_RAW): the marker says
 * so before that work runs, and only when it says less, so that an interrupted run is never
 * resumed automatically and its message names what the step did. Nothing outside a watched step. */
static void unresumable(lua_State *L, kr_run *r, int env, int ran)
{
    if (!r->watch.on || r->watch.ran >= ran) return;
    r->watch.ran = ran;
    running_marker(L, r, env, ran);
}

/* Raw SQL or op.db in the watched step (the op proxy's call): kronos cannot know what it did. */
void kr_resume_raw(lua_State *L, kr_run *r, int env)
{
    unresumable(L, r, env, RAN_RAW);
}

/* The index a generated CREATE/DROP INDEX CONCURRENTLY names, schema-qualified as written
 * ("s"."ix" or "ix"), pushed; 0 (nothing pushed) when sql is not one. Only the helpers' own
 * text is read (r->watch.generated), whose shape ddl.c fixes, so this is no SQL parser: anything
 * else answers 0, and the step cannot be resumed. */
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
 * run because the resumed step finds it done (a valid index, a drop that happened). A statement
 * not generated marks the step raw, a generated one other than an index build or drop marks it
 * DDL kronos cannot resume (which of several such statements ran is not known). Resuming, an
 * INVALID index is dropped first, so the build runs again instead of failing with "already
 * exists". */
int kr_resume_statement(lua_State *L, kr_run *r, int env, const char *sql)
{
    int create = 0;
    if (!r->watch.generated || !index_statement(L, sql, &create)) {
        unresumable(L, r, env, r->watch.generated ? RAN_DDL : RAN_RAW);
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

/* What exact_command asks the planner: does `kronos <cmd> <target>`, from the database's state
 * (p->applied), move revision x and nothing else? */
typedef struct probe {
    const kr_plan *p;        /* the run's plan: its graph and the state just read */
    int cmd;                 /* KR_CMD_UPGRADE, KR_CMD_DOWNGRADE or KR_CMD_STAMP */
    const char *target;
    int x;
    int up;                  /* x's direction: applied afterwards (1) or not (0) */
} probe;

/* probe_plan(list, probe) -> boolean, called protected: the command's plan is made by the
 * planner itself (a plan of its own over the same list and state, so the run's is untouched),
 * and the answer is whether it only moves x: an upgrade or downgrade whose only step is x, a
 * stamp whose applied set afterwards is the state with x alone changed. A target the planner
 * refuses raises, which is a no. */
static int probe_plan(lua_State *L)
{
    const probe *pr = (const probe *)lua_touserdata(L, 2);
    const kr_graph *g = &pr->p->g;
    kr_plan q;
    kr_plan_init(L, &q, 1, pr->cmd);
    for (int i = 0; i < g->n; i++) q.applied[kr_graph_find(&q.g, g->m[i].rev)] = pr->p->applied[i];
    kr_plan_resolve(L, &q, pr->target);
    int x = kr_graph_find(&q.g, g->m[pr->x].rev), exact = 1;
    if (pr->cmd == KR_CMD_STAMP)
        for (int i = 0; i < q.g.n; i++) exact &= q.target[i] == (i == x ? pr->up : q.applied[i]);
    else
        exact = kr_plan_steps(&q) == 1 && q.steps[0] == x;
    lua_pushboolean(L, exact);
    return 1;
}

/* The simplest target of `kronos <cmd>` that moves only revision x in direction up (x applied
 * afterwards, or not), pushed; NULL (nothing pushed) when none does. Tried in order: for an
 * upgrade or its stamp, x itself; going down, a parent of x (base for a root), then the same kept
 * to x's branch (x@parent, x@base), which leaves a sibling branch, the other parent's side of a
 * merge and the other roots alone where the plain form would take them (downgrade base, stamp
 * base wipe every branch). Each is checked by probe_plan, so that a command printed to resolve an
 * interrupted step never moves another revision, whatever the graph. */
static const char *exact_command(lua_State *L, kr_runner *b, int cmd, int x, int up)
{
    const kr_graph *g = &b->p.g;
    const kr_mig *m = &g->m[x];
    int forms = up ? 1 : 2, nsym = up || m->npar == 0 ? 1 : m->npar;
    for (int form = 0; form < forms; form++) {
        for (int k = 0; k < nsym; k++) {
            const char *sym = up ? m->rev : m->npar ? g->m[g->par[m->par0 + k]].rev : "base";
            if (form == 0) lua_pushstring(L, sym);
            else lua_pushfstring(L, "%s@%s", m->rev, sym);
            probe pr = {&b->p, cmd, lua_tostring(L, -1), x, up};
            lua_pushcfunction(L, probe_plan);
            lua_pushvalue(L, b->list);
            lua_pushlightuserdata(L, &pr);
            int exact = lua_pcall(L, 2, 1, 0) == 0 && lua_toboolean(L, -1);
            lua_pop(L, 1);
            if (exact) return lua_tostring(L, -1); /* the target stays on the stack */
            lua_pop(L, 1);
        }
    }
    return NULL;
}

/* How to record, after completing revision x's interrupted step by hand, exactly that x is
 * applied (up) or not, pushed: "run `kronos stamp <target>`" when a stamp does exactly that,
 * else the SQL that does, on x's version row alone (its literals through kr_push_literal), and
 * the mark cleared. Applied revisions are the version table's rows, so the SQL is exact. */
static void push_record(lua_State *L, kr_runner *b, int x, int up)
{
    const kr_mig *m = &b->p.g.m[x];
    const char *stamp = exact_command(L, b, KR_CMD_STAMP, x, up);
    if (stamp) {
        lua_pushfstring(L, "run `kronos stamp %s`", stamp);
        lua_remove(L, -2);
        return;
    }
    kr_push_literal(L, m->rev);
    if (up) {
        kr_push_literal(L, m->message);
        kr_push_literal(L, m->checksum);
        lua_pushfstring(L, "run the SQL: INSERT INTO %s (revision, message, checksum) VALUES (%s, %s, %s); "
                        "COMMENT ON TABLE %s IS NULL", b->vt, lua_tostring(L, -3), lua_tostring(L, -2),
                        lua_tostring(L, -1), b->vt);
        lua_replace(L, -4);
        lua_pop(L, 2);
    } else {
        lua_pushfstring(L, "run the SQL: DELETE FROM %s WHERE revision = %s; COMMENT ON TABLE %s IS NULL", b->vt,
                        lua_tostring(L, -1), b->vt);
        lua_remove(L, -2);
    }
}

/* Before the first step of every segment (next: that step when it is non-transactional, else
 * -1; direction up): deals with the marker of an interrupted step, read under the segment's lock
 * so that no other run is midway. The step finished after all (its version row says so): the
 * marker is cleared. A generated index step that is next in the same direction: resumed
 * (r->watch.resume). Anything else raises interrupted_migration naming the step and the commands
 * that resolve it, never "already exists": in particular no other step runs on top of the half
 * done one (a transactional step after an interrupted downgrade would build on an index half
 * dropped). Each command printed moves that step's revision alone (exact_command): never
 * `downgrade base` or `stamp base` for a merge or one root of several, which would wipe every
 * branch. */
void kr_resume_check(lua_State *L, kr_runner *b, int next, int up)
{
    kr_run *r = b->r;
    if (r->offline || !read_marker(L, b)) return;
    char dir[16], rev[256];
    const char *text = lua_tostring(L, -1);
    int ran = strstr(text, MARK[RAN_RAW]) ? RAN_RAW : strstr(text, MARK[RAN_DDL]) ? RAN_DDL : RAN_INDEX;
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
    if (ran == RAN_INDEX && i == next && was_up == up) {
        r->watch.resume = 1;
        lua_pop(L, 1);
        return;
    }
    const char *resume = ran == RAN_INDEX ? exact_command(L, b, was_up ? KR_CMD_UPGRADE : KR_CMD_DOWNGRADE, i, was_up) : NULL;
    if (resume)
        kr_migrate_raise(L, "interrupted_migration", m->file,
                         "the %s of revision '%s' was interrupted; resume it first with `kronos %s %s`", dir, rev, dir, resume);
    if (ran == RAN_INDEX)
        lua_pushliteral(L, "no kronos command resumes it alone from the database's current state");
    else
        lua_pushfstring(L, "it is transactional = false and ran %s, so part of it may have run and kronos cannot redo it", RAN[ran]);
    push_record(L, b, i, was_up);
    kr_migrate_raise(L, "interrupted_migration", m->file,
                     "the %s of revision '%s' was interrupted: %s. Check what it did, then either complete it by hand and "
                     "%s, or undo it by hand and run the SQL: COMMENT ON TABLE %s IS NULL (the next %s runs it again)",
                     dir, rev, lua_tostring(L, -2), lua_tostring(L, -1), b->vt, dir);
}
