/* The runner's private API: the files of core.migrate.run and the one state they share,
 * kr_runner, passed to each function (no globals; no stack slot known by number outside
 * migrate_run.c, which lays out the stack and records each place here).
 *
 * Files, each depending only on those listed before it (and on migrate.h's first files):
 *   migrate_clock.c    the monotonic clock, and sleeping between lock attempts
 *   migrate_batch.c    online round trips: statements collected and sent as one query
 *   migrate_emit.c     where a statement goes: opts.echo, the offline output, the batch
 *   migrate_resume.c   non-transactional steps: the marker, the watch of their statements, the resume
 *   migrate_progress.c opts.on_event, opts.log, and what the run kept or left open (err.kept)
 *   migrate_lock.c     the migration lock: polled without a snapshot, lock_timeout on the client
 *   migrate_segment.c  segments: a transaction or a session lock, the version table read under it
 *   migrate_step.c     one step: a migration's up, down or finish, and its version row
 *   migrate_run.c      core.migrate.run: arguments and options, the loop over segments, stamp
 * Lock retries (opts.retries, --retries) are Lua's: lua/kronos/deploy.lua runs the run again. */
#ifndef KRONOS_MIGRATE_RUN_H
#define KRONOS_MIGRATE_RUN_H

#include "migrate.h"

/* One run_body call: the plan, the options read once, and where its Lua values live. */
typedef struct kr_runner {
    kr_run *r;               /* the state shared with the op proxy */
    kr_plan p;
    int each;                /* opts.transaction_per_migration */
    int allow_changed;       /* opts.allow_changed */
    int has_events;          /* opts.on_event is a function */
    unsigned char *finished; /* finish and downgrade: migrations whose finish has run (finished_at set) */
    unsigned char *finishes; /* migrations that have a finish function */
    const char *vt;          /* quoted version table */
    const char *vtname;
    const char *lock_timeout, *stmt_timeout;   /* quoted literals or NULL */
    const char *lock_timeout_text;
    /* stack indices of run_body's values */
    int list;                /* the migration list */
    int opts;                /* the options table */
    int progress;            /* {kept = {...}, open = {...}} (kr_progress_new) */
    int env;                 /* the environment table (KR_ENV_*, echo, log, on_event, op, unknown, marker) */
    int results;             /* the revisions the run returns */
} kr_runner;

/* migrate_clock.c */
double kr_clock_ms(void);                                         /* monotonic milliseconds */
void kr_clock_sleep(double ms);

/* migrate_batch.c (online only) */
void kr_batch_open(kr_run *r);
void kr_batch_add(lua_State *L, kr_run *r, int env, const char *sql);
PGresult *kr_batch_query(lua_State *L, kr_run *r, int env, const char *sql);

/* migrate_emit.c */
void kr_emit(lua_State *L, kr_run *r, int env, const char *sql);  /* the run's own statements */
void kr_emit_echo(lua_State *L, kr_run *r, int env, const char *sql);

/* migrate_resume.c */
void kr_resume_watch(lua_State *L, kr_run *r, int env);
void kr_resume_done(lua_State *L, kr_run *r, int env);
int kr_resume_statement(lua_State *L, kr_run *r, int env, const char *sql);
void kr_resume_check(lua_State *L, kr_runner *b, int next, int up);

/* migrate_progress.c */
void kr_progress_new(lua_State *L);
void kr_progress_event(lua_State *L, const char *type);
void kr_progress_fire(lua_State *L, kr_runner *b);
void kr_progress_ran(lua_State *L, kr_runner *b, const char *rev);
void kr_progress_committed(lua_State *L, kr_runner *b);
void kr_progress_step(lua_State *L, kr_runner *b, const kr_mig *m, int up, const char *type, double ms);
void kr_progress_log(lua_State *L, kr_runner *b, const kr_mig *m, int up, double ms);
void kr_progress_report(lua_State *L, kr_run *r, int progress);

/* migrate_lock.c */
void kr_lock_take(lua_State *L, kr_runner *b, int session);
_Noreturn void kr_lock_failed(lua_State *L, kr_runner *b);

/* migrate_segment.c */
void kr_segment_emit(lua_State *L, kr_runner *b, const char *fmt, ...);
void kr_segment_insert_version(lua_State *L, kr_runner *b, const kr_mig *m, int marked);
void kr_segment_begin(lua_State *L, kr_runner *b);
void kr_segment_commit(lua_State *L, kr_runner *b);
void kr_segment_begin_session(lua_State *L, kr_runner *b);
void kr_segment_end_session(lua_State *L, kr_runner *b);

/* migrate_step.c */
void kr_step_run(lua_State *L, kr_runner *b, int i, int up);

#endif
