/* What a run tells while it runs (EVENTS.md: opts.on_event, opts.log), and what it reports when
 * it fails: err.kept, the revisions this run committed, and err.rolled_back, those its open
 * transaction held. The progress table, {kept = {...}, open = {...}}, is made by
 * kr_migrate_run, outside the protected call, so that it survives a failure to be read. */
#include <string.h>

#include "migrate_run.h"

#define PROGRESS_KEPT "kept"        /* revisions committed by this run */
#define PROGRESS_OPEN "open"        /* revisions run in the open transaction, not committed yet */

/* Pushes an empty progress table. */
void kr_progress_new(lua_State *L)
{
    lua_createtable(L, 0, 2);
    lua_newtable(L);
    lua_setfield(L, -2, PROGRESS_KEPT);
    lua_newtable(L);
    lua_setfield(L, -2, PROGRESS_OPEN);
}

/* Starts an event table {type = type} at the top of the stack, for kr_progress_fire. */
void kr_progress_event(lua_State *L, const char *type)
{
    lua_createtable(L, 0, 6);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
}

/* Hands the event table at -1 to opts.on_event and pops it. Online runs only: offline nothing
 * happens that an event could report. */
void kr_progress_fire(lua_State *L, kr_runner *b)
{
    if (!b->has_events || b->r->offline) {
        lua_pop(L, 1);
        return;
    }
    lua_getfield(L, b->opts, "on_event");
    lua_insert(L, -2);
    lua_call(L, 1, 0);
}

/* Appends value to the list at index list. */
static void list_append(lua_State *L, int list, const char *value)
{
    lua_pushstring(L, value);
    lua_rawseti(L, list, (int)lua_rawlen(L, list) + 1);
}

/* Records a step that ran in the open transaction (or, non-transactional, committed by itself:
 * the caller then calls kr_progress_committed at once). */
void kr_progress_ran(lua_State *L, kr_runner *b, const char *rev)
{
    lua_getfield(L, b->progress, PROGRESS_OPEN);
    list_append(L, lua_gettop(L), rev);
    lua_pop(L, 1);
}

/* The open transaction committed: its steps are durable, so they move from open to kept. Fires
 * "commit" when it had any (a segment that ran nothing is no news). */
void kr_progress_committed(lua_State *L, kr_runner *b)
{
    lua_getfield(L, b->progress, PROGRESS_OPEN);
    int open = lua_gettop(L), n = (int)lua_rawlen(L, open);
    if (n > 0) {
        lua_getfield(L, b->progress, PROGRESS_KEPT);
        for (int k = 1; k <= n; k++) {
            lua_rawgeti(L, open, k);
            lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
        }
        lua_pop(L, 1);
        kr_progress_event(L, "commit");
        lua_pushvalue(L, open);
        lua_setfield(L, -2, "revisions");
        lua_newtable(L);
        lua_setfield(L, b->progress, PROGRESS_OPEN);
        kr_progress_fire(L, b);
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

/* Fires step_start (ms < 0: where the step starts, its message, whether it is transactional) or
 * step_done (its duration in ms). */
void kr_progress_step(lua_State *L, kr_runner *b, const kr_mig *m, int up, const char *type, double ms)
{
    if (!b->has_events || b->r->offline) return;
    kr_progress_event(L, type);
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
    kr_progress_fire(L, b);
}

/* Calls opts.log(line, {direction, revision, message, file, ms}) for a step done (online only):
 * the line for people, the table for programs. */
void kr_progress_log(lua_State *L, kr_runner *b, const kr_mig *m, int up, double ms)
{
    lua_getfield(L, b->env, "log");
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

/* Sets err.kept and err.rolled_back on the error object at -1 (not on a foreign error value):
 * what this run committed, and what its open transaction held (with the failing step when it
 * is transactional: its work went with the transaction); for transaction_ended, what the open
 * transaction held is err.ended instead, and err.rolled_back is empty. */
void kr_progress_report(lua_State *L, kr_run *r, int progress)
{
    if (!lua_istable(L, -1)) return;
    lua_getfield(L, progress, PROGRESS_KEPT);
    lua_setfield(L, -2, "kept");
    lua_getfield(L, progress, PROGRESS_OPEN);
    if (r->cur_rev && r->cur_transactional) list_append(L, lua_gettop(L), r->cur_rev);
    /* a migration's own COMMIT or ROLLBACK ended the transaction: what it held went with that
     * statement, committed or rolled back, which kronos cannot tell from here (err.ended) */
    lua_getfield(L, -2, "code");
    int ended = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "transaction_ended") == 0;
    lua_pop(L, 1);
    lua_setfield(L, -2, ended ? "ended" : "rolled_back");
    if (ended) {
        lua_newtable(L);
        lua_setfield(L, -2, "rolled_back");
    }
}
