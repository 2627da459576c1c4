/* The migration engine: plans and runs upgrade, downgrade and stamp over the revision graph,
 * online (on a connection) or offline (returning the SQL). kronos.core.migrate holds the entry
 * points; lua/kronos/migrate.lua only loads the files and assembles the API.
 *
 * A run is a sequence of segments. A transactional segment is
 *   BEGIN; SET LOCAL lock_timeout; SELECT pg_advisory_xact_lock(key); [SET LOCAL statement_timeout;]
 *   CREATE TABLE IF NOT EXISTS <version table>; (read the version) ; steps ... ; COMMIT
 * so the lock, the DDL and the version rows commit or vanish together, and no session state
 * outlives the transaction (transaction poolers keep working). A migration with
 * transactional = false gets a segment of its own under a session advisory lock.
 *
 * Round trips: online, the opening of a transactional segment (BEGIN .. the version read) and
 * each transactional migration (its version row, its DDL, its execution time) are collected
 * and sent as one multi-statement query each. The server runs exactly the statements of the
 * offline SQL, in the same order and transaction; only the number of round trips changes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>

#include "migrate.h"
#include "sha256.h"
#include "lint.h"

enum { CMD_UPGRADE, CMD_DOWNGRADE, CMD_STAMP };

/* What outlives one body call: the driver reads it to clean up after an error, and the op
 * closures given to migrations read it to reach the connection. */
typedef struct run {
    kr_conn *c;              /* NULL offline */
    int offline;
    int active;              /* op closures refuse to work outside their run */
    int intx;                /* our BEGIN is open */
    int session_lock;        /* pg_advisory_lock is held */
    int has_echo;
    int up;                  /* direction of the step running */
    int batching;            /* statements are collected into env[ENV_PENDING], sent by flush() */
    int npending;
    const char *cur_file;    /* the migration running, for errors (a string the list holds) */
    const char *cur_rev;
    char xlock_sql[80];      /* the statements of the two kinds of lock, for this version table */
    char slock_sql[80];
    char unlock_sql[80];
} run;

typedef struct body {
    run *r;
    kr_graph g;
    int cmd, each, allow_changed;
    const char *vt;          /* quoted version table */
    const char *vtname;
    const char *lock_timeout, *stmt_timeout;   /* quoted literals or NULL */
    const char *lock_timeout_text;
    unsigned char *applied, *target, *seen;
    int *plan;
    int resolved;
    int env, results, opts, list;
} body;

#define ENV_OUT 1      /* env[1] = offline statements; env.echo, env.ddl, env.log, env.db by name */
#define ENV_PENDING 2  /* env[2] = statements collected for the next round trip (online) */

/* ---- emitting SQL ---------------------------------------------------------------------- */

static void append(lua_State *L, int env, int slot, const char *sql)
{
    lua_rawgeti(L, env, slot);
    lua_pushstring(L, sql);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* Sends the collected statements as one query. Leaves the boxed result of the last one on the
 * stack and returns it, or pushes the error object and returns NULL. */
static PGresult *flush_result(lua_State *L, run *r, int env)
{
    if (r->c->pg == NULL) kr_raise(L, "connection", NULL, "the connection was closed during the migration");
    lua_rawgeti(L, env, ENV_PENDING);
    int t = lua_gettop(L);
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int i = 1; i <= r->npending; i++) {
        if (i > 1) luaL_addstring(&buf, ";\n");
        lua_rawgeti(L, t, i);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    lua_newtable(L);
    lua_rawseti(L, env, ENV_PENDING);
    r->npending = 0;
    PGresult *res = kr_execscript(L, r->c, lua_tostring(L, -1));
    lua_remove(L, t);
    lua_remove(L, t); /* the query text */
    return res;
}

/* Sends what was collected; raises on SQL errors. */
static void flush(lua_State *L, run *r, int env)
{
    if (r->npending == 0) return;
    if (flush_result(L, r, env) == NULL) lua_error(L);
    kr_clearbox((PGresult **)lua_touserdata(L, -1));
    lua_pop(L, 1);
}

/* Tells opts.echo every statement the run executes (the specs compare it with the offline SQL). */
static void echo(lua_State *L, run *r, int env, const char *sql)
{
    if (!r->has_echo) return;
    lua_getfield(L, env, "echo");
    lua_pushstring(L, sql);
    lua_call(L, 1, 0);
}

/* Runs one statement (online) or appends it to the output (offline); raises on SQL errors.
 * While batching, a statement that can share a query is collected instead. */
static void emit(lua_State *L, run *r, int env, const char *sql)
{
    echo(L, r, env, sql);
    if (r->offline) {
        append(L, env, ENV_OUT, sql);
        return;
    }
    int alone = !r->batching || !kr_sql_batchable(sql);
    if (alone) flush(L, r, env); /* what came before runs first */
    append(L, env, ENV_PENDING, sql);
    r->npending++;
    if (alone) flush(L, r, env);
}

static void emitf(lua_State *L, body *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *sql = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    emit(L, b->r, b->env, sql);
    lua_pop(L, 1);
}

/* An SQL comment line for the offline output; a line break (\n or \r) would end the comment and
 * turn the rest of a message into SQL, so control characters become spaces. */
static void comment(lua_State *L, body *b, const char *text)
{
    if (!b->r->offline) return;
    lua_rawgeti(L, b->env, ENV_OUT);
    lua_createtable(L, 1, 0);
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (const char *p = text; *p; p++) luaL_addchar(&buf, (unsigned char)*p < 32 ? ' ' : *p);
    luaL_pushresult(&buf);
    lua_rawseti(L, -2, 1);
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

_Noreturn static void lock_failed(lua_State *L, body *b);

/* The lock statement, with "another process is migrating" when lock_timeout runs out. */
static void take_lock(lua_State *L, body *b, const char *sql)
{
    run *r = b->r;
    if (r->offline || r->c->pg == NULL || r->batching) {
        emit(L, r, b->env, sql);
        return;
    }
    echo(L, r, b->env, sql);
    PGresult *res = kr_execscript(L, r->c, sql);
    if (res == NULL) lock_failed(L, b);
    kr_clearbox((PGresult **)lua_touserdata(L, -1));
    lua_pop(L, 1);
}

/* The error at -1 came from a query that took the lock: a lock_timeout there means another
 * migrator. Raises. */
_Noreturn static void lock_failed(lua_State *L, body *b)
{
    lua_getfield(L, -1, "sqlstate");
    int timed_out = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "55P03") == 0;
    lua_pop(L, 1);
    if (!timed_out) lua_error(L);
    kr_error_new(L, "migration_locked",
                lua_pushfstring(L, "another process is migrating: the migration lock on %s was not granted within lock_timeout %s",
                                b->vtname, b->lock_timeout_text));
    kr_error_setfield(L, "sqlstate", "55P03");
    lua_error(L);
    abort(); /* lua_error does not return */
}

static void create_version_table(lua_State *L, body *b)
{
    emitf(L, b, "CREATE TABLE IF NOT EXISTS %s (revision text NOT NULL PRIMARY KEY, message text NOT NULL DEFAULT '', "
                "checksum text, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), execution_ms integer)", b->vt);
}

/* ---- the version table ----------------------------------------------------------------- */

/* Reads the applied revisions (online; offline the simulated state stands). Raises for a
 * revision no file provides, and for a changed file when the caller asks. */
static void read_state(lua_State *L, body *b)
{
    run *r = b->r;
    if (r->offline) return;
    lua_pushfstring(L, "SELECT revision, checksum FROM %s", b->vt);
    PGresult *res;
    if (r->batching) {
        /* the read ends the collected opening (BEGIN, lock, version table): one round trip */
        append(L, b->env, ENV_PENDING, lua_tostring(L, -1));
        r->npending++;
        res = flush_result(L, r, b->env);
        r->batching = 0;
        if (res == NULL) lock_failed(L, b);
    } else {
        res = kr_execscript(L, r->c, lua_tostring(L, -1));
    }
    if (res == NULL) lua_error(L);
    memset(b->applied, 0, (size_t)b->g.n + 1);
    for (int row = 0; row < PQntuples(res); row++) {
        const char *rev = PQgetvalue(res, row, 0);
        int i = kr_graph_find(&b->g, rev);
        if (i < 0)
            kr_raise(L, "unknown_revision", NULL, "the database is at revision '%s', which no migration file provides", rev);
        b->applied[i] = 1;
        if (b->cmd == CMD_UPGRADE && !b->allow_changed && !PQgetisnull(res, row, 1) &&
            strcmp(PQgetvalue(res, row, 1), b->g.m[i].checksum) != 0)
            kr_raise(L, "changed_migration", b->g.m[i].file,
                     "revision '%s' was applied from a different version of this file (checksum mismatch); "
                     "restore it, or pass allow_changed", rev);
    }
    kr_clearbox((PGresult **)lua_touserdata(L, -1));
    lua_pop(L, 2);
}

static void begin_tx(lua_State *L, body *b)
{
    b->r->batching = !b->r->offline; /* read_state sends it all */
    emitf(L, b, "BEGIN");
    b->r->intx = 1;
    if (b->r->c) b->r->c->txdepth = 1; /* conn:transaction() inside a migration makes savepoints */
    emitf(L, b, "SET LOCAL lock_timeout = %s", b->lock_timeout);
    take_lock(L, b, b->r->xlock_sql);
    if (b->stmt_timeout) emitf(L, b, "SET LOCAL statement_timeout = %s", b->stmt_timeout);
    create_version_table(L, b);
    read_state(L, b);
}

static void commit_tx(lua_State *L, body *b)
{
    emitf(L, b, "COMMIT");
    b->r->intx = 0;
    if (b->r->c) b->r->c->txdepth = 0;
}

static void begin_session(lua_State *L, body *b)
{
    b->r->session_lock = 1; /* from here on a failure resets the session (unlocking is harmless) */
    emitf(L, b, "SET lock_timeout = %s", b->lock_timeout);
    take_lock(L, b, b->r->slock_sql);
    if (b->stmt_timeout) emitf(L, b, "SET statement_timeout = %s", b->stmt_timeout);
    create_version_table(L, b);
    read_state(L, b);
}

static void end_session(lua_State *L, body *b)
{
    emit(L, b->r, b->env, b->r->unlock_sql);
    b->r->session_lock = 0;
    emitf(L, b, "RESET lock_timeout");
    if (b->stmt_timeout) emitf(L, b, "RESET statement_timeout");
}

/* ---- op: the DDL helpers given to migrations --------------------------------------------- */

static run *op_run(lua_State *L)
{
    run *r = (run *)lua_touserdata(L, lua_upvalueindex(1));
    if (!r->active) luaL_error(L, "op was used outside of its migration's up/down function");
    /* op:name(...) works as well as op.name(...) */
    lua_getfield(L, lua_upvalueindex(2), "op");
    if (lua_gettop(L) > 1 && lua_rawequal(L, 1, -1)) lua_remove(L, 1);
    lua_pop(L, 1);
    return r;
}

/* op.execute(sql): raw SQL, several statements allowed. */
static int op_execute(lua_State *L)
{
    run *r = op_run(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 1, &len);
    if (strlen(sql) != len) luaL_argerror(L, 1, "SQL contains a NUL byte");
    /* a trailing ';' would double in the offline output */
    while (len > 0 && (sql[len - 1] == ';' || sql[len - 1] == ' ' || sql[len - 1] == '\n' ||
                       sql[len - 1] == '\t' || sql[len - 1] == '\r'))
        len--;
    if (len == 0) return 0;
    lua_pushlstring(L, sql, len);
    emit(L, r, lua_upvalueindex(2), lua_tostring(L, -1));
    return 0;
}

/* op.<builder>(...): core.ddl.<builder>(...) returns the statements; each one runs. */
static int op_builder(lua_State *L)
{
    run *r = op_run(L);
    int n = lua_gettop(L);
    kr_lint_strip_safe(L, n); /* safe = true is advice for the DDL check, not an option of the builder */
    lua_pushvalue(L, lua_upvalueindex(3));
    lua_insert(L, 1);
    lua_call(L, n, 1);
    const char *name = lua_tostring(L, lua_upvalueindex(4));
    if (lua_type(L, -1) == LUA_TSTRING) {
        emit(L, r, lua_upvalueindex(2), lua_tostring(L, -1));
        return 0;
    }
    if (!lua_istable(L, -1)) luaL_error(L, "ddl.%s returned %s, not an array of statements", name, luaL_typename(L, -1));
    int t = lua_gettop(L);
    for (int i = 1; i <= (int)lua_rawlen(L, t); i++) {
        lua_rawgeti(L, t, i);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "ddl.%s returned a non-string statement", name);
        emit(L, r, lua_upvalueindex(2), lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return 0;
}

/* The builders are looked up in core.ddl on first use; pure helpers pass through unchanged. */
static int op_index(lua_State *L)
{
    const char *key = luaL_checkstring(L, 2);
    if (strcmp(key, "db") == 0) {
        /* The migration reaches the connection itself: what op collected must have run first,
         * and from here on this migration's statements run one by one, in the order given. */
        run *r = (run *)lua_touserdata(L, lua_upvalueindex(1));
        if (r->active && r->batching) {
            flush(L, r, lua_upvalueindex(2));
            r->batching = 0;
        }
        lua_getfield(L, lua_upvalueindex(2), "db");
        return 1;
    }
    lua_getfield(L, lua_upvalueindex(2), "ddl");
    if (!lua_istable(L, -1)) return luaL_error(L, "op.%s: the DDL helpers (kronos.core.ddl) are not available", key);
    lua_getfield(L, -1, key);
    if (!lua_isfunction(L, -1)) return luaL_error(L, "op.%s: no such DDL helper", key);
    if (strcmp(key, "sql") == 0 || strcmp(key, "quote_ident") == 0 || strcmp(key, "quote_literal") == 0) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, -3);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, op_builder, 4);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* Builds env.op for the run userdata at run_idx. */
static void make_op(lua_State *L, int run_idx, int env, int conn_idx)
{
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, run_idx);
    lua_pushvalue(L, env);
    lua_pushcclosure(L, op_execute, 2);
    lua_setfield(L, -2, "execute");
    lua_pushboolean(L, ((run *)lua_touserdata(L, run_idx))->offline);
    lua_setfield(L, -2, "offline");
    lua_pushvalue(L, conn_idx); /* op.db: served by op_index */
    lua_setfield(L, env, "db");
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, run_idx);
    lua_pushvalue(L, env);
    lua_pushcclosure(L, op_index, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    lua_setfield(L, env, "op");
}

/* ---- steps ------------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void log_step(lua_State *L, body *b, const kr_mig *m, int up, double ms)
{
    lua_getfield(L, b->env, "log");
    if (!lua_isfunction(L, -1) || b->r->offline) {
        lua_pop(L, 1);
        return;
    }
    lua_pushfstring(L, "%s %s %s (%d ms)", up ? "upgrade  " : "downgrade", m->rev, m->message, (int)(ms + 0.5));
    lua_createtable(L, 0, 5);
    lua_pushstring(L, up ? "upgrade" : "downgrade");
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

static void run_step(lua_State *L, body *b, int i, int up)
{
    kr_mig *m = &b->g.m[i];
    run *r = b->r;
    r->cur_file = m->file;
    r->cur_rev = m->rev;
    r->up = up;
    if (!up && !m->has_down) kr_raise(L, "bad_migration", m->file, "revision '%s' has no down function", m->rev);
    int top = lua_gettop(L);
    lua_pushfstring(L, "-- %s %s: %s", up ? "upgrade" : "downgrade", m->rev, m->message);
    comment(L, b, lua_tostring(L, -1));
    kr_push_literal(L, m->rev);
    const char *rev = lua_tostring(L, -1);
    double t0 = now_ms();
    r->batching = !r->offline && m->transactional; /* one round trip for the whole step */
    if (up && m->transactional) {
        kr_push_literal(L, m->message);
        kr_push_literal(L, m->checksum);
        emitf(L, b, "INSERT INTO %s (revision, message, checksum) VALUES (%s, %s, %s)", b->vt, rev,
              lua_tostring(L, -2), lua_tostring(L, -1));
    }
    lua_rawgeti(L, b->list, m->slot);
    lua_getfield(L, -1, "migration");
    lua_getfield(L, -1, up ? "up" : "down");
    lua_getfield(L, b->env, "op");
    lua_call(L, 1, 0);
    if (!up)
        emitf(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, rev);
    else if (m->transactional)
        emitf(L, b, "UPDATE %s SET execution_ms = (extract(epoch FROM clock_timestamp() - applied_at) * 1000)::integer "
                    "WHERE revision = %s", b->vt, rev);
    else {
        /* no transaction to share: the row is written once the DDL has succeeded */
        kr_push_literal(L, m->message);
        kr_push_literal(L, m->checksum);
        emitf(L, b, "INSERT INTO %s (revision, message, checksum) VALUES (%s, %s, %s)", b->vt, rev,
              lua_tostring(L, -2), lua_tostring(L, -1));
    }
    flush(L, r, b->env);
    r->batching = 0;
    b->applied[i] = (unsigned char)up;
    lua_pushstring(L, m->rev);
    lua_rawseti(L, b->results, (int)lua_rawlen(L, b->results) + 1);
    r->cur_file = r->cur_rev = NULL;
    lua_settop(L, top);
    log_step(L, b, m, up, now_ms() - t0);
}

/* ---- targets ----------------------------------------------------------------------------- */

static int count_of(const char *s)
{
    if (*s == '\0') return -1;
    long n = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || n > 1000000) return -1;
        n = n * 10 + (*s - '0');
    }
    return (int)n;
}

static int single_head(lua_State *L, const kr_graph *g)
{
    int *heads = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g->n + 1));
    int nh = kr_graph_heads(g, heads);
    if (nh == 1) {
        lua_pop(L, 1);
        return heads[0];
    }
    if (nh == 0) kr_raise(L, "unknown_revision", NULL, "there are no migrations, so there is no head");
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int k = 0; k < nh; k++) {
        lua_pushfstring(L, "%s %s (%s)", k ? "," : "", g->m[heads[k]].rev, g->m[heads[k]].file);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    kr_raise(L, "multiple_heads", NULL, "'head' is ambiguous: there are %d heads:%s; give a revision, use 'heads', "
             "or add a merge migration", nh, lua_tostring(L, -1));
    return -1;
}

/* Walks n steps to the only child (dir > 0) or the only parent (dir < 0). */
static int walk(lua_State *L, const kr_graph *g, int i, int n, int dir)
{
    for (int step = 0; step < n; step++) {
        int next = -1, count = 0;
        if (dir < 0) {
            count = g->m[i].npar;
            if (count == 1) next = g->par[g->m[i].par0];
        } else {
            for (int j = 0; j < g->n; j++)
                for (int q = g->m[j].par0; q < g->m[j].par0 + g->m[j].npar; q++)
                    if (g->par[q] == i) {
                        next = j;
                        count++;
                    }
        }
        if (count == 0)
            kr_raise(L, "bad_target", NULL, "revision '%s' has no %s", g->m[i].rev, dir < 0 ? "down_revision" : "child");
        if (count > 1)
            kr_raise(L, "bad_target", NULL, "revision '%s' is a %s point: the relative target is ambiguous",
                     g->m[i].rev, dir < 0 ? "merge" : "branch");
        i = next;
    }
    return i;
}

/* "rev+N" / "rev-N" when spec is not itself a revision; otherwise an id or a unique prefix. */
static int lookup_target(lua_State *L, const kr_graph *g, const char *spec)
{
    if (strcmp(spec, "head") == 0) return single_head(L, g);
    if (kr_graph_find(g, spec) >= 0) return kr_graph_find(g, spec);
    const char *plus = strrchr(spec, '+'), *minus = strrchr(spec, '-');
    const char *rel = plus && (!minus || plus > minus) ? plus : minus;
    if (rel && rel > spec && count_of(rel + 1) >= 0) {
        lua_pushlstring(L, spec, (size_t)(rel - spec));
        int base = lookup_target(L, g, lua_tostring(L, -1));
        lua_pop(L, 1);
        return walk(L, g, base, count_of(rel + 1), *rel == '+' ? 1 : -1);
    }
    return kr_graph_lookup(L, g, spec);
}

/* Every revision that the spec names, with its ancestors, into set ("base" names none). */
static void closure_of(lua_State *L, const kr_graph *g, const char *spec, unsigned char *set)
{
    memset(set, 0, (size_t)g->n + 1);
    if (strcmp(spec, "base") == 0) return;
    if (strcmp(spec, "heads") == 0) {
        for (int i = 0; i < g->n; i++) set[i] = g->m[i].nchild == 0;
    } else {
        set[lookup_target(L, g, spec)] = 1;
    }
    kr_graph_close(g, set);
}

static int upgrade_plan(body *b)
{
    int n = 0;
    for (int k = 0; k < b->g.n; k++) {
        int i = b->g.order[k];
        if (b->target[i] && !b->applied[i]) b->plan[n++] = i;
    }
    return n;
}

static int downgrade_plan(body *b)
{
    int n = 0;
    for (int k = b->g.n - 1; k >= 0; k--) {
        int i = b->g.order[k];
        if (b->target[i] && b->applied[i]) b->plan[n++] = i;
    }
    return n;
}

/* Fixes the target once, from the state first read: upgrade -> the set to be applied,
 * downgrade -> the set to be removed, stamp -> the set to be recorded. */
static void resolve(lua_State *L, body *b, const char *spec)
{
    kr_graph *g = &b->g;
    int count = (*spec == '+' || *spec == '-') ? count_of(spec + 1) : -2;
    if (count == -1) kr_raise(L, "bad_target", NULL, "bad relative target '%s': expected +N or -N", spec);
    if (b->cmd == CMD_UPGRADE) {
        if (*spec == '-' && count >= 0) kr_raise(L, "bad_target", NULL, "upgrade target '%s' goes down: use downgrade", spec);
        if (*spec == '+') {
            closure_of(L, g, "heads", b->target);
            int n = upgrade_plan(b);
            if (n < count) kr_raise(L, "bad_target", NULL, "upgrade %s: only %d revision(s) are pending", spec, n);
            memcpy(b->target, b->applied, (size_t)g->n);
            for (int k = 0; k < count; k++) b->target[b->plan[k]] = 1;
        } else {
            closure_of(L, g, spec, b->target);
        }
    } else if (b->cmd == CMD_DOWNGRADE) {
        if (*spec == '+' && count >= 0) kr_raise(L, "bad_target", NULL, "downgrade target '%s' goes up: use upgrade", spec);
        memset(b->target, 0, (size_t)g->n + 1);
        if (*spec == '-') {
            for (int i = 0; i < g->n; i++) b->target[i] = 1;
            int n = downgrade_plan(b);
            if (n < count) kr_raise(L, "bad_target", NULL, "downgrade %s: only %d revision(s) are applied", spec, n);
            memset(b->target, 0, (size_t)g->n + 1);
            for (int k = 0; k < count; k++) b->target[b->plan[k]] = 1;
        } else if (strcmp(spec, "base") == 0) {
            for (int i = 0; i < g->n; i++) b->target[i] = 1;
        } else if (strcmp(spec, "heads") != 0) {
            /* down to a revision: remove what descends from it, keep it and other branches */
            int x = lookup_target(L, g, spec);
            b->target[x] = 1;
            for (int k = g->pos[x] + 1; k < g->n; k++) {
                const kr_mig *m = &g->m[g->order[k]];
                for (int q = m->par0; q < m->par0 + m->npar; q++)
                    if (b->target[g->par[q]]) b->target[g->order[k]] = 1;
            }
            b->target[x] = 0;
        }
    } else {
        if (count >= 0) kr_raise(L, "bad_target", NULL, "stamp takes a revision, 'head', 'heads' or 'base', not '%s'", spec);
        closure_of(L, g, spec, b->target);
    }
    b->resolved = 1;
}

/* ---- the run ------------------------------------------------------------------------------ */

static void run_stamp(lua_State *L, body *b, const char *spec)
{
    begin_tx(L, b);
    resolve(L, b, spec);
    for (int k = b->g.n - 1; k >= 0; k--) {
        int i = b->g.order[k];
        if (!b->applied[i] || b->target[i]) continue;
        kr_push_literal(L, b->g.m[i].rev);
        emitf(L, b, "DELETE FROM %s WHERE revision = %s", b->vt, lua_tostring(L, -1));
        lua_pop(L, 1);
        b->applied[i] = 0;
    }
    for (int k = 0; k < b->g.n; k++) {
        int i = b->g.order[k];
        if (b->applied[i] || !b->target[i]) continue;
        kr_push_literal(L, b->g.m[i].rev);
        kr_push_literal(L, b->g.m[i].message);
        kr_push_literal(L, b->g.m[i].checksum);
        emitf(L, b, "INSERT INTO %s (revision, message, checksum) VALUES (%s, %s, %s)", b->vt,
              lua_tostring(L, -3), lua_tostring(L, -2), lua_tostring(L, -1));
        lua_pop(L, 3);
        b->applied[i] = 1;
    }
    commit_tx(L, b);
    int *heads = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)b->g.n + 1));
    int nh = kr_applied_heads(&b->g, b->applied, heads);
    for (int k = 0; k < nh; k++) {
        lua_pushstring(L, b->g.m[heads[k]].rev);
        lua_rawseti(L, b->results, k + 1);
    }
    lua_pop(L, 1);
}

static int plan(body *b)
{
    return b->cmd == CMD_UPGRADE ? upgrade_plan(b) : downgrade_plan(b);
}

static void run_steps(lua_State *L, body *b, const char *spec)
{
    int up = b->cmd == CMD_UPGRADE;
    for (;;) {
        begin_tx(L, b);
        if (!b->resolved) resolve(L, b, spec);
        int n = plan(b);
        if (n == 0) {
            commit_tx(L, b);
            return;
        }
        if (!b->g.m[b->plan[0]].transactional) {
            /* its own segment under a session lock; the state is read again under that lock */
            commit_tx(L, b);
            begin_session(L, b);
            n = plan(b);
            int ran = n > 0 && !b->g.m[b->plan[0]].transactional;
            if (ran) run_step(L, b, b->plan[0], up);
            end_session(L, b);
            /* another process may have changed the plan meanwhile: stop only when nothing is left */
            if (n == 0 || (n == 1 && ran)) return;
            continue;
        }
        int k = 0;
        while (k < n && b->g.m[b->plan[k]].transactional && (k == 0 || !b->each)) run_step(L, b, b->plan[k++], up);
        commit_tx(L, b);
        if (k == n) return;
    }
}

static const char *opt_string(lua_State *L, int opts, const char *key, const char *dflt)
{
    lua_getfield(L, opts, key);
    int t = lua_type(L, -1);
    if (t == LUA_TNIL) {
        lua_pop(L, 1);
        return dflt;
    }
    if (t != LUA_TSTRING) luaL_error(L, "option '%s' must be a string", key);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* opts holds it */
    return s;
}

static int opt_bool(lua_State *L, int opts, const char *key)
{
    lua_getfield(L, opts, key);
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* A timeout: milliseconds as a number, or a PostgreSQL duration string such as "30s".
 * Pushes the quoted literal (or nothing and returns NULL when absent). */
static const char *opt_timeout(lua_State *L, int opts, const char *key, const char *dflt, const char **text)
{
    lua_getfield(L, opts, key);
    if (lua_type(L, -1) == LUA_TNUMBER) {
        lua_Number ms = lua_tonumber(L, -1);
        if (!(ms >= 0 && ms <= 2147483647.0)) luaL_error(L, "option '%s' must be between 0 and 2147483647 ms", key);
        lua_pushfstring(L, "%dms", (int)ms);
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
    } else if (lua_isnil(L, -1) && dflt) {
        lua_pushstring(L, dflt);
    } else if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    } else {
        luaL_error(L, "option '%s' must be milliseconds or a duration string", key);
    }
    lua_remove(L, -2);
    if (text) *text = lua_tostring(L, -1);
    kr_push_literal(L, lua_tostring(L, -1));
    return lua_tostring(L, -1); /* both strings stay on the body's stack */
}

static void read_options(lua_State *L, body *b, int opts)
{
    b->vtname = opt_string(L, opts, "version_table", "kronos_version");
    size_t len = strlen(b->vtname);
    if (len == 0 || len > 63) luaL_error(L, "option 'version_table' must be 1 to 63 bytes long");
    kr_push_ident(L, b->vtname);
    b->vt = lua_tostring(L, -1);
    b->lock_timeout = opt_timeout(L, opts, "lock_timeout", "60s", &b->lock_timeout_text);
    b->stmt_timeout = opt_timeout(L, opts, "statement_timeout", NULL, NULL);
    b->each = opt_bool(L, opts, "transaction_per_migration");
    b->allow_changed = opt_bool(L, opts, "allow_changed");
    long long key = kr_lock_key(b->vtname);
    snprintf(b->r->xlock_sql, sizeof b->r->xlock_sql, "SELECT pg_advisory_xact_lock(%lld)", key);
    snprintf(b->r->slock_sql, sizeof b->r->slock_sql, "SELECT pg_advisory_lock(%lld)", key);
    snprintf(b->r->unlock_sql, sizeof b->r->unlock_sql, "SELECT pg_advisory_unlock(%lld)", key);
}

/* body(run, cmd, list, opts, conn, ddl) -> revisions [, statements] */
static int run_body(lua_State *L)
{
    body b;
    memset(&b, 0, sizeof b);
    b.r = (run *)lua_touserdata(L, 1);
    const char *cmd = lua_tostring(L, 2);
    b.cmd = strcmp(cmd, "upgrade") == 0 ? CMD_UPGRADE : strcmp(cmd, "downgrade") == 0 ? CMD_DOWNGRADE : CMD_STAMP;
    b.list = 3;
    b.opts = 4;
    lua_createtable(L, 2, 5); /* env: 7 */
    b.env = 7;
    lua_newtable(L);
    lua_rawseti(L, b.env, ENV_OUT);
    lua_newtable(L);
    lua_rawseti(L, b.env, ENV_PENDING);
    lua_pushvalue(L, 6);
    lua_setfield(L, b.env, "ddl");
    lua_getfield(L, b.opts, "log");
    lua_setfield(L, b.env, "log");
    lua_getfield(L, b.opts, "echo");
    b.r->has_echo = lua_isfunction(L, -1);
    lua_setfield(L, b.env, "echo");
    lua_newtable(L); /* results: 8 */
    b.results = 8;
    make_op(L, 1, b.env, 5);
    read_options(L, &b, b.opts);
    kr_graph_build(L, b.list, &b.g);
    b.applied = kr_newset(L, &b.g);
    b.target = kr_newset(L, &b.g);
    b.plan = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)b.g.n + 1));
    const char *spec = opt_string(L, b.opts, "target", b.cmd == CMD_UPGRADE ? "head" : b.cmd == CMD_DOWNGRADE ? "base" : "");
    if (*spec == '\0') kr_raise(L, "bad_target", NULL, "stamp needs a target");
    const char *colon = strchr(spec, ':');
    if (colon && !b.r->offline) kr_raise(L, "bad_target", NULL, "a from:to range ('%s') is for offline (sql) mode only", spec);
    if (colon) {
        /* offline from a given state */
        lua_pushlstring(L, spec, (size_t)(colon - spec));
        closure_of(L, &b.g, *lua_tostring(L, -1) ? lua_tostring(L, -1) : "base", b.applied);
        lua_pop(L, 1);
        spec = colon + 1;
        if (*spec == '\0') spec = b.cmd == CMD_UPGRADE ? "head" : "base";
    } else if (b.r->offline && b.cmd == CMD_DOWNGRADE) {
        kr_raise(L, "bad_target", NULL, "offline downgrade needs a from:to range, such as 'head:base'");
    }
    b.r->active = 1;
    if (b.cmd == CMD_STAMP)
        run_stamp(L, &b, spec);
    else
        run_steps(L, &b, spec);
    b.r->active = 0;
    lua_pushvalue(L, b.results);
    lua_rawgeti(L, b.env, ENV_OUT);
    return 2;
}

/* Wraps the error at the top of the stack with the migration that raised it. */
static void blame(lua_State *L, run *r)
{
    const char *dir = r->up ? "upgrade" : "downgrade";
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

/* core.migrate.run(cmd, list, opts, conn|nil, ddl|nil) -> revisions, statements (offline) */
static int l_run(lua_State *L)
{
    const char *cmd = luaL_checkstring(L, 1);
    if (strcmp(cmd, "upgrade") != 0 && strcmp(cmd, "downgrade") != 0 && strcmp(cmd, "stamp") != 0)
        luaL_argerror(L, 1, "'upgrade', 'downgrade' or 'stamp' expected");
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "sql");
    int offline = lua_toboolean(L, -1);
    lua_pop(L, 1);
    kr_conn *c = offline ? NULL : kr_checkconn(L, 4);
    lua_settop(L, 5);
    if (c && (c->txdepth > 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE))
        kr_raise(L, "in_transaction", NULL, "the connection is inside a transaction; migrations manage their own");
    run *r = (run *)lua_newuserdata(L, sizeof(run)); /* 6 */
    memset(r, 0, sizeof *r);
    r->c = c;
    r->offline = offline;
    lua_pushcfunction(L, run_body);
    lua_pushvalue(L, 6);
    for (int i = 1; i <= 5; i++) lua_pushvalue(L, i);
    int status = lua_pcall(L, 6, 2, 0);
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
    if (r->cur_file) blame(L, r);
    return lua_error(L);
}

/* ---- status: current, heads, history, check ------------------------------------------------ */

static void set_revs(lua_State *L, const kr_graph *g, const int *idx, int n, const char *field)
{
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        lua_pushstring(L, g->m[idx[k]].rev);
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, field);
}

/* Reads the version table without a lock (a read-only view). Leaves the boxed result, or
 * nothing when the table does not exist yet; returns it or NULL. */
static PGresult *read_versions(lua_State *L, kr_conn *c, const char *vt)
{
    kr_push_literal(L, vt);
    lua_pushfstring(L, "SELECT to_regclass(%s) IS NOT NULL", lua_tostring(L, -1));
    PGresult *res = kr_execscript(L, c, lua_tostring(L, -1));
    if (res == NULL) lua_error(L);
    int exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    kr_clearbox((PGresult **)lua_touserdata(L, -1));
    lua_pop(L, 3);
    if (!exists) return NULL;
    lua_pushfstring(L, "SELECT revision, checksum, applied_at, execution_ms FROM %s ORDER BY applied_at, revision", vt);
    res = kr_execscript(L, c, lua_tostring(L, -1));
    if (res == NULL) lua_error(L);
    lua_remove(L, -2);
    return res;
}

/* core.migrate.status(list, opts, conn|nil) -> {heads, current, pending, changed, unknown, history} */
static int l_status(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    kr_conn *c = lua_isnoneornil(L, 3) ? NULL : kr_checkconn(L, 3);
    lua_settop(L, 3);
    const char *vtname = opt_string(L, 2, "version_table", "kronos_version");
    kr_push_ident(L, vtname);                     /* 4 */
    kr_graph g;
    kr_graph_build(L, 1, &g);
    unsigned char *applied = kr_newset(L, &g), *changed = kr_newset(L, &g);
    int *idx = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g.n + 1));
    int *rowof = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g.n + 1));
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_newtable(L);
    int unknown = lua_gettop(L);
    PGresult *res = c ? read_versions(L, c, lua_tostring(L, 4)) : NULL;
    int resbox = lua_gettop(L);
    for (int i = 0; i < g.n; i++) rowof[i] = -1;
    for (int row = 0; res && row < PQntuples(res); row++) {
        int i = kr_graph_find(&g, PQgetvalue(res, row, 0));
        if (i < 0) {
            lua_pushstring(L, PQgetvalue(res, row, 0));
            lua_rawseti(L, unknown, (int)lua_rawlen(L, unknown) + 1);
            continue;
        }
        applied[i] = 1;
        rowof[i] = row;
        changed[i] = !PQgetisnull(res, row, 1) && strcmp(PQgetvalue(res, row, 1), g.m[i].checksum) != 0;
    }
    lua_pushvalue(L, unknown);
    lua_setfield(L, out, "unknown");
    lua_pushvalue(L, out);
    set_revs(L, &g, idx, kr_graph_heads(&g, idx), "heads");
    set_revs(L, &g, idx, kr_applied_heads(&g, applied, idx), "current");
    int n = 0;
    for (int k = 0; k < g.n; k++)
        if (!applied[g.order[k]]) idx[n++] = g.order[k];
    set_revs(L, &g, idx, n, "pending");
    n = 0;
    for (int k = 0; k < g.n; k++)
        if (changed[g.order[k]]) idx[n++] = g.order[k];
    set_revs(L, &g, idx, n, "changed");
    int nh = kr_applied_heads(&g, applied, idx);
    lua_createtable(L, g.n, 0);
    for (int k = 0; k < g.n; k++) {
        int i = g.order[k];
        const kr_mig *m = &g.m[i];
        lua_createtable(L, 0, 12);
        lua_pushstring(L, m->rev);
        lua_setfield(L, -2, "revision");
        lua_rawgeti(L, 1, m->slot);
        lua_getfield(L, -1, "migration");
        lua_getfield(L, -1, "down_revision");
        lua_setfield(L, -4, "down_revision");
        lua_pop(L, 2);
        lua_pushstring(L, m->message);
        lua_setfield(L, -2, "message");
        lua_pushstring(L, m->file);
        lua_setfield(L, -2, "file");
        lua_pushboolean(L, m->transactional);
        lua_setfield(L, -2, "transactional");
        lua_pushboolean(L, m->nchild == 0);
        lua_setfield(L, -2, "head");
        int cur = 0;
        for (int h = 0; h < nh; h++) cur = cur || idx[h] == i;
        lua_pushboolean(L, cur);
        lua_setfield(L, -2, "current");
        lua_pushboolean(L, applied[i]);
        lua_setfield(L, -2, "applied");
        lua_pushboolean(L, changed[i]);
        lua_setfield(L, -2, "changed");
        if (rowof[i] >= 0) {
            kr_pushvalue(L, res, rowof[i], 2);
            lua_setfield(L, -2, "applied_at");
            if (!PQgetisnull(res, rowof[i], 3)) {
                kr_pushvalue(L, res, rowof[i], 3);
                lua_setfield(L, -2, "execution_ms");
            }
        }
        lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "history");
    if (res) kr_clearbox((PGresult **)lua_touserdata(L, resbox));
    return 1;
}

/* ---- files --------------------------------------------------------------------------------- */

typedef struct dirbox { DIR *d; } dirbox;

static int dir_gc(lua_State *L)
{
    dirbox *db = (dirbox *)lua_touserdata(L, 1);
    if (db->d) closedir(db->d);
    db->d = NULL;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* core.migrate.scan(dir) -> the *.lua file names in dir, sorted | nil, err */
static int l_scan(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    dirbox *db = (dirbox *)lua_newuserdata(L, sizeof(dirbox));
    db->d = NULL;
    luaL_setmetatable(L, "kronos.migrate.dir");
    db->d = opendir(dir);
    if (db->d == NULL) return kr_error_return(L, "no_migrations", "cannot read the migrations directory %s", dir);
    lua_newtable(L);
    int names = lua_gettop(L), n = 0;
    struct dirent *e;
    while ((e = readdir(db->d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, names, ++n);
    }
    closedir(db->d);
    db->d = NULL;
    const char **v = (const char **)lua_newuserdata(L, sizeof(char *) * ((size_t)n + 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, names, i + 1);
        v[i] = lua_tostring(L, -1);
        lua_pop(L, 1); /* names keeps it */
    }
    qsort(v, (size_t)n, sizeof v[0], cmp_names);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_sha256(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    char hex[65];
    kr_sha256_hex(s, len, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* The lock key as a decimal string (exact under LuaJIT too). */
static int l_lock_key(lua_State *L)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", kr_lock_key(luaL_optstring(L, 1, "kronos_version")));
    lua_pushstring(L, buf);
    return 1;
}

void kr_open_migrate(lua_State *L)
{
    static const luaL_Reg dir_meta[] = {{"__gc", dir_gc}, {NULL, NULL}};
    kr_newclass(L, "kronos.migrate.dir", NULL, dir_meta);
    static const luaL_Reg fns[] = {
        {"run", l_run},       {"status", l_status},     {"scan", l_scan},
        {"sha256", l_sha256}, {"lock_key", l_lock_key}, {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "migrate");
}
