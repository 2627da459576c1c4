/* core.migrate.status: what the files and the version table say together (heads, current,
 * pending, changed, unknown, history). A read-only view: it takes no lock and creates nothing.
 * core.migrate.repair: records the checksums of changed applied files (Flyway's repair). */
#include <string.h>

#include "migrate.h"

/* The stack of kr_migrate_status and kr_migrate_repair: their arguments (list, opts, conn|nil),
 * then the version table's quoted name that kr_version_table pushes. */
enum { SLOT_LIST = 1, SLOT_OPTS, SLOT_CONN, SLOT_VT };

/* Sets field of the table at -1 to an array of the revisions idx[0 .. n), in that order: the
 * lists status returns (heads, current, pending, changed, finish_pending). */
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
 * nothing when the table does not exist yet; returns it or NULL.
 * Outside a transaction the rows are asked for at once, and "no such table" (42P01) means none:
 * one round trip, the whole of a no-op upgrade's work, instead of an existence probe first. Inside a transaction an error
 * would abort the caller's work, so the table's existence is asked first (to_regclass). */
static PGresult *read_versions(lua_State *L, kr_conn *c, const char *vt)
{
    int probe = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    if (probe) {
        kr_push_literal(L, vt);
        lua_pushfstring(L, "SELECT to_regclass(%s) IS NOT NULL", lua_tostring(L, -1));
        PGresult *res = kr_execscript(L, c, lua_tostring(L, -1));
        if (res == NULL) kr_error_throw(L);
        int exists = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        kr_dropbox(L, -1);
        lua_pop(L, 3);
        if (!exists) return NULL;
    }
    /* finished_at: added by the first finish run, so read in a way that works without it */
    lua_pushfstring(L, "SELECT revision, checksum, applied_at, execution_ms, (to_jsonb(v) ->> 'finished_at')::timestamptz "
                       "FROM %s v ORDER BY applied_at, revision", vt);
    PGresult *res = kr_execscript(L, c, lua_tostring(L, -1));
    if (res == NULL) {
        lua_getfield(L, -1, "sqlstate");
        const char *state = lua_tostring(L, -1);
        int absent = !probe && state && strcmp(state, "42P01") == 0;
        lua_pop(L, 1);
        if (!absent) kr_error_throw(L);
        lua_pop(L, 3);   /* nil, err, the statement */
        return NULL;
    }
    lua_remove(L, -2);
    return res;
}

/* core.migrate.status(list, opts, conn|nil) -> {heads, current, pending, changed, unknown,
 * finish_pending, history}. finish_pending: the applied migrations with a finish function whose
 * finish has not run (graph order); history marks them finish_pending and the others finished.
 * unknown: the revisions the version table holds that no file provides (after switching
 * branches, say); history lists them last with unknown = true. */
int kr_migrate_status(lua_State *L)
{
    kr_checktable(L, SLOT_LIST);
    kr_checktable(L, SLOT_OPTS);
    kr_conn *c = lua_isnoneornil(L, SLOT_CONN) ? NULL : kr_checkconn(L, SLOT_CONN);
    lua_settop(L, SLOT_CONN);
    kr_version_table(L, SLOT_OPTS);               /* SLOT_VT */
    kr_graph g;
    kr_graph_build(L, SLOT_LIST, &g);
    unsigned char *applied = kr_newset(L, &g), *changed = kr_newset(L, &g), *finished = kr_newset(L, &g);
    int *idx = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g.n + 1));
    int *rowof = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g.n + 1));
    lua_newtable(L);
    int out = lua_gettop(L);
    lua_newtable(L);
    int unknown = lua_gettop(L);
    PGresult *res = c ? read_versions(L, c, lua_tostring(L, SLOT_VT)) : NULL;
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
        finished[i] = !PQgetisnull(res, row, 4);
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
    n = 0;
    for (int k = 0; k < g.n; k++) {
        int i = g.order[k];
        lua_rawgeti(L, SLOT_LIST, g.m[i].slot);
        lua_getfield(L, -1, "migration");
        lua_getfield(L, -1, "finish");
        if (applied[i] && !finished[i] && lua_isfunction(L, -1)) idx[n++] = i;
        lua_pop(L, 3);
    }
    set_revs(L, &g, idx, n, "finish_pending");
    int nh = kr_applied_heads(&g, applied, idx);
    lua_createtable(L, g.n, 0);
    for (int k = 0; k < g.n; k++) {
        int i = g.order[k];
        const kr_mig *m = &g.m[i];
        lua_createtable(L, 0, 12);
        lua_pushstring(L, m->rev);
        lua_setfield(L, -2, "revision");
        lua_rawgeti(L, SLOT_LIST, m->slot);
        lua_getfield(L, -1, "migration");
        lua_getfield(L, -1, "down_revision");
        lua_setfield(L, -4, "down_revision");
        lua_getfield(L, -1, "finish");
        int has_finish = lua_isfunction(L, -1);
        lua_pop(L, 3);
        lua_pushboolean(L, has_finish);
        lua_setfield(L, -2, "finish");
        if (has_finish && applied[i]) {
            lua_pushboolean(L, finished[i]);
            lua_setfield(L, -2, "finished");
            lua_pushboolean(L, !finished[i]);
            lua_setfield(L, -2, "finish_pending");
        }
        lua_pushstring(L, m->message);
        lua_setfield(L, -2, "message");
        lua_pushstring(L, m->file);
        lua_setfield(L, -2, "file");
        lua_pushboolean(L, m->transactional);
        lua_setfield(L, -2, "transactional");
        lua_pushboolean(L, m->has_down);
        lua_setfield(L, -2, "has_down");
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
            if (!PQgetisnull(res, rowof[i], 4)) {
                kr_pushvalue(L, res, rowof[i], 4);
                lua_setfield(L, -2, "finished_at");
            }
        }
        lua_rawseti(L, -2, k + 1);
    }
    /* revisions the database records and no file provides: listed last, marked unknown */
    for (int row = 0, k = g.n; res && row < PQntuples(res); row++) {
        if (kr_graph_find(&g, PQgetvalue(res, row, 0)) >= 0) continue;
        lua_createtable(L, 0, 6);
        lua_pushstring(L, PQgetvalue(res, row, 0));
        lua_setfield(L, -2, "revision");
        lua_pushliteral(L, "");
        lua_setfield(L, -2, "message");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "applied");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "unknown");
        kr_pushvalue(L, res, row, 2);
        lua_setfield(L, -2, "applied_at");
        lua_rawseti(L, -2, ++k);
    }
    lua_setfield(L, -2, "history");
    if (res) kr_dropbox(L, resbox);
    return 1;
}


/* core.migrate.repair(list, opts, conn) -> the revisions whose recorded checksum was replaced by
 * their file's. Accepts an intended edit of an applied migration once, instead of allow_changed
 * on every run. Only rows that status calls changed are touched (a NULL checksum stays NULL).
 * Each UPDATE stands alone and is idempotent, and names the old checksum it replaces, so it
 * needs neither the migration lock nor a transaction: a row another process changed meanwhile
 * is left alone, and a failure half-way leaves rows that a second repair finishes. */
int kr_migrate_repair(lua_State *L)
{
    kr_checktable(L, SLOT_LIST);
    kr_checktable(L, SLOT_OPTS);
    kr_conn *c = kr_checkconn(L, SLOT_CONN);
    lua_settop(L, SLOT_CONN);
    kr_version_table(L, SLOT_OPTS);               /* SLOT_VT */
    kr_graph g;
    kr_graph_build(L, SLOT_LIST, &g);
    lua_pushfstring(L, "UPDATE %s SET checksum = $1 WHERE revision = $2 AND checksum = $3 RETURNING revision",
                    lua_tostring(L, SLOT_VT));
    int update = lua_gettop(L);
    lua_newtable(L);
    int out = lua_gettop(L);
    PGresult *res = read_versions(L, c, lua_tostring(L, SLOT_VT));
    for (int row = 0; res && row < PQntuples(res); row++) {
        int i = kr_graph_find(&g, PQgetvalue(res, row, 0));
        if (i < 0 || PQgetisnull(res, row, 1) || strcmp(PQgetvalue(res, row, 1), g.m[i].checksum) == 0) continue;
        const char *values[3] = {g.m[i].checksum, g.m[i].rev, PQgetvalue(res, row, 1)};
        kr_conn_ready(L, c);
        PGresult *up = kr_finish(L, c, PQexecParams(c->pg, lua_tostring(L, update), 3, NULL, values, NULL, NULL, 0));
        if (up == NULL) kr_error_throw(L);
        if (PQntuples(up) == 1) {
            lua_pushstring(L, g.m[i].rev);
            lua_rawseti(L, out, (int)lua_rawlen(L, out) + 1);
        }
        kr_dropbox(L, -1);
        lua_pop(L, 1);
    }
    if (res) kr_dropbox(L, -1);
    lua_pushvalue(L, out);
    return 1;
}
