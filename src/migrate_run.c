/* core.migrate.run: upgrade, downgrade, stamp and finish over the revision graph, online (on a
 * connection) or offline (returning the SQL). migrate_plan.c decides what to run; this file
 * reads the arguments and options, loops over segments (migrate_segment.c) until nothing is
 * left to run, and turns a failure into one error naming the migration and what was kept.
 * The files it builds on, and the state they share (kr_runner), are in migrate_run.h. */
#include <stdio.h>
#include <string.h>

#include "migrate_run.h"
#include "option.h"

/* The stack of run_body: its arguments, then the tables it makes (recorded in kr_runner). */
enum { SLOT_RUN = 1, SLOT_CMD, SLOT_LIST, SLOT_OPTS, SLOT_CONN, SLOT_DDL, SLOT_PROGRESS, SLOT_ENV, SLOT_RESULTS };

/* The stack of kr_migrate_run: its arguments (cmd .. ddl), then the run and the progress it
 * makes outside run_body's protected call, which receives them as SLOT_RUN, SLOT_CMD ..
 * SLOT_DDL (the arguments in the same order), SLOT_PROGRESS. */
enum { ENTRY_CMD = 1, ENTRY_LIST, ENTRY_OPTS, ENTRY_CONN, ENTRY_DDL, ENTRY_RUN, ENTRY_PROGRESS };
_Static_assert(ENTRY_DDL - ENTRY_CMD == SLOT_DDL - SLOT_CMD, "run_body takes kr_migrate_run's arguments in order");

/* ---- the run ------------------------------------------------------------------------------ */

/* stamp: the version table is made to say the target (kr_plan_resolve decides which revisions)
 * in one transactional segment that runs no migration: rows outside the target go, rows of the
 * target that are missing come, so a crash leaves either the old state or the new one. The run's
 * results are the applied heads afterwards. */
static void run_stamp(lua_State *L, kr_runner *b, const char *spec)
{
    kr_graph *g = &b->p.g;
    kr_segment_begin(L, b);
    kr_plan_resolve(L, &b->p, spec);
    if (b->p.purge) {
        /* Alembic's stamp --purge: the version table is emptied first, whatever it held */
        kr_segment_emit(L, b, "DELETE FROM %s", b->vt);
        memset(b->p.applied, 0, (size_t)g->n + 1);
    } else {
        /* revisions no file provides say nothing this stamp can keep: an explicit stamp replaces them */
        lua_getfield(L, b->env, "unknown");
        for (int k = 1; k <= (int)lua_rawlen(L, -1); k++) {
            lua_rawgeti(L, -1, k);
            kr_push_literal(L, lua_tostring(L, -1));
            kr_segment_emit(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, lua_tostring(L, -1));
            lua_pop(L, 2);
        }
        lua_pop(L, 1);
    }
    for (int k = g->n - 1; k >= 0; k--) {
        int i = g->order[k];
        if (!b->p.applied[i] || b->p.target[i]) continue;
        kr_push_literal(L, g->m[i].rev);
        kr_segment_emit(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, lua_tostring(L, -1));
        lua_pop(L, 1);
        b->p.applied[i] = 0;
    }
    for (int k = 0; k < g->n; k++) {
        int i = g->order[k];
        if (b->p.applied[i] || !b->p.target[i]) continue;
        kr_segment_insert_version(L, b, &g->m[i], 0);
        b->p.applied[i] = 1;
    }
    kr_segment_commit(L, b);
    int *heads = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g->n + 1));
    int nh = kr_applied_heads(g, b->p.applied, heads);
    for (int k = 0; k < nh; k++) {
        lua_pushstring(L, g->m[heads[k]].rev);
        lua_rawseti(L, b->results, k + 1);
    }
    lua_pop(L, 1);
}

/* The finishes left: applied (or, offline, in the target's closure), with a finish function, not
 * finished; in graph order. Fills b->p.steps and returns the count. */
static int finish_steps(kr_runner *b)
{
    const kr_graph *g = &b->p.g;
    int n = 0;
    for (int k = 0; k < g->n; k++) {
        int i = g->order[k];
        if (b->p.applied[i] && b->finishes[i] && !b->finished[i]) b->p.steps[n++] = i;
    }
    return n;
}

/* The steps left to run from the state just read (fills b->p.steps, returns the count). */
static int steps_left(kr_runner *b)
{
    return b->p.cmd == KR_CMD_FINISH ? finish_steps(b) : kr_plan_steps(&b->p);
}

/* upgrade, downgrade and finish: segments until nothing is left. Each segment reads the state
 * under the lock, so several processes running at once share the work and each step runs once:
 * the transactional steps in a row go in one transaction (one each with
 * transaction_per_migration); a non-transactional step gets a session-locked segment of its own,
 * in which an interrupted predecessor may be resumed; any segment first deals with the mark of
 * an interrupted step (kr_resume_check). The target
 * is resolved once, from the first state read, so that what other processes apply meanwhile
 * does not move it. */
static void run_steps(lua_State *L, kr_runner *b, const char *spec)
{
    int up = b->p.cmd == KR_CMD_FINISH ? KR_STEP_FINISH : b->p.cmd == KR_CMD_UPGRADE;
    const kr_mig *m = b->p.g.m;
    const int *steps = b->p.steps;
    for (;;) {
        kr_segment_begin(L, b);
        if (!b->p.resolved && b->p.cmd != KR_CMD_FINISH) kr_plan_resolve(L, &b->p, spec);
        int n = steps_left(b);
        if (n == 0) {
            kr_segment_commit(L, b);
            return;
        }
        if (!m[steps[0]].transactional) {
            /* its own segment under a session lock; the state is read again under that lock */
            kr_segment_commit(L, b);
            kr_segment_begin_session(L, b);
            n = steps_left(b);
            int ran = n > 0 && !m[steps[0]].transactional;
            if (ran && up != KR_STEP_FINISH) kr_resume_check(L, b, steps[0], up);
            if (ran) kr_step_run(L, b, steps[0], up);
            kr_segment_end_session(L, b);
            /* another process may have changed the plan meanwhile: stop only when nothing is left */
            if (n == 0 || (n == 1 && ran)) return;
            continue;
        }
        if (up != KR_STEP_FINISH) kr_resume_check(L, b, -1, up); /* nothing runs on top of a half-done step */
        int k = 0;
        while (k < n && m[steps[k]].transactional && (k == 0 || !b->each)) kr_step_run(L, b, steps[k++], up);
        kr_segment_commit(L, b);
        if (k == n) return;
    }
}

/* ---- options ------------------------------------------------------------------------------ */

/* The run's options are read by option.h's one reader. opts is argument #1 of the command the
 * user called (upgrade{...}); run_body is called from C, so Lua cannot name it, and the name is
 * set with kr_error_setfname(cmd) while the options are read.
 * opt_string: opts[key] as a string, dflt when absent; anything else is a bad_argument. */
static const char *opt_string(lua_State *L, const char *key, const char *dflt)
{
    const char *s = kr_option_string(L, SLOT_OPTS, 1, "opts", key, NULL);
    return s ? s : dflt; /* opts holds it */
}

/* opts[key] as a boolean (absent: false); anything but a boolean is a bad_argument. */
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

/* Reads the options every command shares, once, before anything runs (a misused option fails
 * the run with nothing done): the version table, the timeouts (lock_timeout 60s by default: a
 * wait for ever is a deploy that hangs), and the lock statements for this version table. */
static void read_options(lua_State *L, kr_runner *b)
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
    kr_runner b;
    memset(&b, 0, sizeof b);
    b.r = (kr_run *)lua_touserdata(L, SLOT_RUN);
    b.list = SLOT_LIST;
    b.opts = SLOT_OPTS;
    b.progress = SLOT_PROGRESS;
    b.env = SLOT_ENV;
    b.results = SLOT_RESULTS;
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
    kr_error_setfname(L, cmd); /* the options' errors name the command */
    kr_option_typed(L, SLOT_OPTS, 1, "opts", "log", LUA_TFUNCTION);
    lua_setfield(L, SLOT_ENV, "log");
    b.has_events = kr_option_typed(L, SLOT_OPTS, 1, "opts", "on_event", LUA_TFUNCTION);
    lua_setfield(L, SLOT_ENV, "on_event");
    b.r->has_echo = kr_option_typed(L, SLOT_OPTS, 1, "opts", "echo", LUA_TFUNCTION);
    lua_setfield(L, SLOT_ENV, "echo");
    opt_bool(L, "sql"); /* read as a truth value before the run (offline or not); a boolean */
    lua_newtable(L);
    lua_setfield(L, SLOT_ENV, "unknown");
    lua_newtable(L); /* SLOT_RESULTS */
    b.r->make_op(L, SLOT_RUN, SLOT_ENV, SLOT_CONN, SLOT_OPTS);
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
    if (!kr_testclass(L, -1, KR_ERROR_CLASS)) {
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

/* core.migrate.run(cmd, list, opts, conn|nil, ddl|nil) -> revisions, statements (offline) */
int kr_migrate_run(lua_State *L, kr_op_maker make_op)
{
    size_t cmdlen;
    const char *cmd = kr_checktext(L, ENTRY_CMD, &cmdlen, "the command");
    if (strcmp(cmd, "upgrade") != 0 && strcmp(cmd, "downgrade") != 0 && strcmp(cmd, "stamp") != 0 &&
        strcmp(cmd, "finish") != 0)
        kr_error_arg(L, ENTRY_CMD, "'upgrade', 'downgrade', 'stamp' or 'finish' expected");
    kr_checktable(L, ENTRY_LIST);
    kr_checktable(L, ENTRY_OPTS);
    lua_getfield(L, ENTRY_OPTS, "sql");
    int offline = lua_toboolean(L, -1);
    lua_pop(L, 1);
    kr_conn *c = offline ? NULL : kr_checkconn(L, ENTRY_CONN);
    lua_settop(L, ENTRY_DDL);
    if (c && (c->txdepth > 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE))
        kr_migrate_raise(L, "in_transaction", NULL, "the connection is inside a transaction; migrations manage their own");
    kr_run *r = (kr_run *)lua_newuserdata(L, sizeof(kr_run)); /* ENTRY_RUN */
    memset(r, 0, sizeof *r);
    r->make_op = make_op;
    r->c = c;
    r->offline = offline;
    kr_progress_new(L); /* ENTRY_PROGRESS: outside the protected call, so that a failure can still read it */
    lua_pushcfunction(L, run_body);
    lua_pushvalue(L, ENTRY_RUN);
    for (int i = ENTRY_CMD; i <= ENTRY_DDL; i++) lua_pushvalue(L, i);
    lua_pushvalue(L, ENTRY_PROGRESS);
    int status = lua_pcall(L, SLOT_PROGRESS, 2, 0); /* run_body's arguments: SLOT_RUN .. SLOT_PROGRESS */
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
    kr_progress_report(L, r, ENTRY_PROGRESS);
    return lua_error(L);
}
