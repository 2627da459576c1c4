/* Internal API of the migration engine (migrate*.c).
 *
 * Files, each depending only on those listed before it:
 *   migrate_sql.c     SQL text of the version table and the lock (no libpq: offline too)
 *   migrate_graph.c   the revision graph: validation, order, lookups
 *   migrate_plan.c    target strings -> the set of revisions a run aims at, and its steps
 *   migrate_clock.c .. migrate_run.c   the run (core.migrate.run), in the files and order that
 *                     migrate_run.h lists: batch, emit, resume, progress, lock, segment, step, run
 *   migrate_op.c      the op proxy given to migrations (DDL helpers, execute, db)
 *   migrate_status.c  core.migrate.status: heads, current, pending, history
 *   migrate_files.c   the loader's C side: scan a directory, SHA-256 of a file
 *   migrate.c         the module table kronos.core.migrate */
#ifndef KRONOS_MIGRATE_H
#define KRONOS_MIGRATE_H

#include "kronos.h"
#include "sqlscan.h"

/* One migration file. The strings belong to Lua values the caller keeps on the stack. */
typedef struct kr_mig {
    const char *rev;
    const char *file;
    const char *message;     /* "" when the file has none */
    const char *checksum;    /* SHA-256 hex of the file */
    int transactional;
    int has_down;
    int par0, npar;          /* parents: g->par[par0 .. par0 + npar) (down_revision) */
    int dep0, ndep;          /* dependencies: g->dep[dep0 .. dep0 + ndep) (depends_on) */
    int lab0, nlab;          /* branch labels: g->lab[lab0 .. lab0 + nlab) */
    int nuser;               /* migrations that depend on this one (depends_on) */
    int nchild;              /* migrations whose down_revision names this one */
    int slot;                /* index of its entry in the Lua list (1-based) */
} kr_mig;

typedef struct kr_graph {
    int n;
    kr_mig *m;
    int *par;                /* parent indices of every migration, concatenated */
    int *dep;                /* depends_on indices of every migration, concatenated */
    const char **lab;        /* branch labels of every migration, concatenated */
    int *order;              /* a topological order: parents and dependencies first, ties by file name */
    int *pos;                /* pos[i] = the place of i in order */
} kr_graph;

/* migrate_graph.c. Every function raises a kronos error object on failure; the arrays live in
 * userdata pushed onto the stack (left there), so nothing leaks when Lua raises. */
void kr_graph_build(lua_State *L, int list_idx, kr_graph *g);
int kr_graph_find(const kr_graph *g, const char *rev);                   /* exact id, or -1 */
int kr_graph_lookup(lua_State *L, const kr_graph *g, const char *spec);  /* id or unique prefix; raises */
int kr_graph_label(const kr_graph *g, const char *label);                /* the revision carrying it, or -1 */
unsigned char *kr_newset(lua_State *L, const kr_graph *g);               /* zeroed, left on the stack */
void kr_graph_close(const kr_graph *g, unsigned char *set);              /* adds every ancestor and dependency */
int kr_graph_heads(const kr_graph *g, int *out);                         /* returns the count */
int kr_applied_heads(const kr_graph *g, const unsigned char *applied, int *out);
/* Raises an error object {code, message, file}; the message starts with the file when there is one. */
_Noreturn void kr_migrate_raise(lua_State *L, const char *code, const char *file, const char *fmt, ...);

/* migrate_sql.c: SQL text of the version table and the lock (also used offline, so no libpq). */
void kr_push_literal(lua_State *L, const char *value);  /* 'quoted' literal, E'' when it holds \ */
long long kr_lock_key(const char *version_table);
int kr_migrate_terminator(lua_State *L);                /* core.migrate.terminator(sql) */
/* opts.version_table (default kronos_version), checked; pushes its quoted form and returns the name. */
const char *kr_version_table(lua_State *L, int opts);
int kr_migrate_lock_key(lua_State *L);                  /* core.migrate.lock_key(name) */

/* migrate_plan.c: what a run aims at. */
enum { KR_CMD_UPGRADE, KR_CMD_DOWNGRADE, KR_CMD_STAMP, KR_CMD_FINISH };
typedef struct kr_plan {
    kr_graph g;
    int cmd;
    unsigned char *applied;  /* the database's revisions (kept up to date as steps run) */
    unsigned char *target;   /* upgrade: to be applied; downgrade: to be removed; stamp: to be recorded */
    int *steps;              /* filled by kr_plan_steps */
    int *heads;              /* scratch: the database's current heads */
    unsigned char *tmp, *tmp2; /* scratch sets */
    int resolved;            /* the target is fixed once, from the state first read */
    int purge;               /* stamp: start from an empty version table (Alembic's stamp --purge) */
} kr_plan;
void kr_plan_init(lua_State *L, kr_plan *p, int list_idx, int cmd);     /* arrays left on the stack */
void kr_plan_closure(lua_State *L, kr_plan *p, const char *spec, unsigned char *set);
void kr_plan_resolve(lua_State *L, kr_plan *p, const char *spec);
int kr_plan_steps(kr_plan *p);                                          /* what is left, in run order */

/* The state of one run (core.migrate.run) that the op proxy shares: migrate_run.h has the
 * runner's own. */
typedef struct kr_batch {
    int on;                  /* emit collects batchable statements instead of sending each */
    int n;                   /* statements collected, sent as one query by kr_batch_flush */
} kr_batch;

/* A transactional = false step runs outside any transaction, statement by statement, so a kill
 * can leave part of it done: while its up/down runs, the op's statements are watched
 * (migrate_resume.c). Changed only by kr_resume_*, except `generated`, which the op proxy sets
 * around the statements of its helpers. */
typedef struct kr_watch {
    int on;                  /* a non-transactional step's up/down is running: its statements are watched */
    int generated;           /* the statements come from an op.<helper> (kronos generated them) */
    int ran;                 /* what the step's marker says it ran that kronos cannot redo (migrate_resume.c's
                              * RAN_*: nothing, a helper's DDL other than an index build or drop, raw SQL or
                              * op.db); anything but nothing: no automatic resume */
    int resume;              /* re-running a generated step that a previous run left unfinished */
} kr_watch;

/* Makes the op proxy of a run (migrate_op.c's kr_op_make). migrate_run.c receives it as an
 * argument from migrate.c, so that it never names migrate_op.c, which calls into the run's
 * files: the object files depend one way (migrate -> migrate_op -> migrate_run ...). */
typedef void (*kr_op_maker)(lua_State *L, int run_idx, int env, int conn_idx, int opts);

typedef struct kr_run {
    kr_op_maker make_op;     /* kr_op_make, given by migrate.c */
    kr_conn *c;              /* NULL offline */
    int offline;
    int active;              /* op closures refuse to work outside their run */
    int intx;                /* our BEGIN is open */
    int session_lock;        /* pg_advisory_lock is held */
    int has_echo;
    int up;                  /* the step running: 1 up, 0 down, KR_STEP_FINISH its finish */
    kr_batch batch;          /* online round-trip batching; changed only by kr_batch_* */
    kr_watch watch;          /* the non-transactional step running; changed by kr_resume_* */
    const char *cur_file;    /* the migration running, for errors (a string the list holds) */
    const char *cur_rev;
    int cur_transactional;
    const char *db_noted;    /* offline: the step whose reading of op.db the output already notes */
    const char *vt;          /* the quoted version table */
    char xlock_sql[80];      /* the statements of the two kinds of lock, for this version table */
    char slock_sql[80];
    char unlock_sql[80];
} kr_run;

#define KR_STEP_FINISH 2 /* kr_run.up of a finish step (two-phase migrations, see migrate_run.c) */

/* The run's environment table: statements by number, values by name (echo, ddl, log, db, op). */
#define KR_ENV_OUT 1      /* env[1] = offline statements */
#define KR_ENV_PENDING 2  /* env[2] = statements collected for the next round trip (online) */

/* What the op proxy calls; the rest of the run's files are declared in migrate_run.h. */
void kr_batch_close(lua_State *L, kr_run *r, int env);               /* migrate_batch.c: sends what was collected */
void kr_emit_comment(lua_State *L, kr_run *r, int env, const char *text); /* migrate_emit.c: offline SQL comment */
void kr_resume_raw(lua_State *L, kr_run *r, int env);                /* migrate_resume.c: work kronos cannot redo */
void kr_step_emit(lua_State *L, kr_run *r, int env, const char *sql); /* migrate_step.c: a migration's statement */
int kr_migrate_run(lua_State *L, kr_op_maker make_op);               /* migrate_run.c: core.migrate.run */

/* migrate_op.c */
void kr_op_make(lua_State *L, int run_idx, int env, int conn_idx, int opts); /* sets env.op and env.db */

/* migrate_status.c */
int kr_migrate_status(lua_State *L);                              /* core.migrate.status */
int kr_migrate_repair(lua_State *L);                              /* core.migrate.repair */

/* migrate_files.c */
int kr_migrate_scan(lua_State *L);                                /* core.migrate.scan */
int kr_migrate_sha256(lua_State *L);                              /* core.migrate.sha256 */
void kr_migrate_files_open(lua_State *L);                         /* registers the dir class */

#endif
