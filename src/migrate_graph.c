/* The revision graph of a migrations directory: validation, order, lookups. */
#include <stdarg.h>
#include <string.h>

#include "migrate.h"

/* Raises an error object of kronos's one family: {code, message, file}, the message starting
 * with the file when there is one, so that a graph error tells which file to fix. */
_Noreturn void kr_migrate_raise(lua_State *L, const char *code, const char *file, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    if (file)
        kr_error_push(L, code, "%s: %s", file, msg);
    else
        kr_error_push(L, code, "%s", msg);
    kr_error_setfield(L, "file", file);
    kr_error_throw(L);
}

static const char *entry_file(lua_State *L, int entry)
{
    lua_getfield(L, entry, "file");
    const char *file = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the entry table keeps the string alive */
    return file ? file : "?";
}

static const char *opt_string(lua_State *L, int t, const char *key, const char *file, int required)
{
    lua_getfield(L, t, key);
    int type = lua_type(L, -1);
    const char *s = type == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    if (type == LUA_TNIL && !required) return NULL;
    if (s == NULL || (required && *s == '\0'))
        kr_migrate_raise(L, "bad_migration", file, "field '%s' must be a %sstring", key, required ? "non-empty " : "");
    return s;
}

/* The length of field `key` of migration table t: nil (0), a string (1) or an array of strings. */
static int id_list_count(lua_State *L, int t, const char *key, const char *file)
{
    lua_getfield(L, t, key);
    int n = 0, type = lua_type(L, -1);
    if (type == LUA_TSTRING) n = 1;
    else if (type == LUA_TTABLE) {
        n = (int)lua_rawlen(L, -1);
        for (int k = 1; k <= n; k++) {
            lua_rawgeti(L, -1, k);
            if (lua_type(L, -1) != LUA_TSTRING)
                kr_migrate_raise(L, "bad_migration", file, "%s must be nil, a string or a list of strings", key);
            lua_pop(L, 1);
        }
    } else if (type != LUA_TNIL)
        kr_migrate_raise(L, "bad_migration", file, "%s must be nil, a string or a list of strings", key);
    lua_pop(L, 1);
    return n;
}

/* Pushes element k (1-based) of field `key` of migration table t, a string or a list. */
static const char *id_list_get(lua_State *L, int t, const char *key, int k)
{
    lua_getfield(L, t, key);
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, k);
        lua_remove(L, -2);
    }
    return lua_tostring(L, -1);
}

/* Checks the table a file returned and fills what can be read without the other files. */
static void read_entry(lua_State *L, int list, int i, kr_mig *m)
{
    lua_rawgeti(L, list, i + 1);
    int entry = lua_gettop(L);
    if (!lua_istable(L, entry)) kr_migrate_raise(L, "bad_migration", NULL, "migration list entry %d is not a table", i + 1);
    const char *file = entry_file(L, entry);
    lua_getfield(L, entry, "migration");
    int t = lua_gettop(L);
    if (!lua_istable(L, t))
        kr_migrate_raise(L, "bad_migration", file, "the file must return a migration table, it returned %s", luaL_typename(L, t));
    memset(m, 0, sizeof *m);
    m->slot = i + 1;
    m->file = file;
    m->rev = opt_string(L, t, "revision", file, 1);
    for (const char *p = m->rev; *p; p++)
        if (*p == ':' || *p == '+' || *p == '@' || *p == ' ' || (unsigned char)*p < 32)
            kr_migrate_raise(L, "bad_migration", file, "revision '%s' may not contain ':', '+', '@', spaces or control characters", m->rev);
    if (strcmp(m->rev, "base") == 0 || strcmp(m->rev, "head") == 0 || strcmp(m->rev, "heads") == 0)
        kr_migrate_raise(L, "bad_migration", file, "'%s' is a reserved word, not a revision id", m->rev);
    m->message = opt_string(L, t, "message", file, 0);
    if (m->message == NULL) m->message = "";
    lua_getfield(L, entry, "checksum");
    m->checksum = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    if (m->checksum == NULL) m->checksum = "";
    lua_getfield(L, t, "up");
    if (!lua_isfunction(L, -1)) kr_migrate_raise(L, "bad_migration", file, "field 'up' must be a function");
    lua_getfield(L, t, "down");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1)) kr_migrate_raise(L, "bad_migration", file, "field 'down' must be a function");
    m->has_down = lua_isfunction(L, -1);
    lua_getfield(L, t, "transactional");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
        kr_migrate_raise(L, "bad_migration", file, "field 'transactional' must be a boolean");
    m->transactional = lua_isnil(L, -1) || lua_toboolean(L, -1);
    m->npar = id_list_count(L, t, "down_revision", file);
    m->ndep = id_list_count(L, t, "depends_on", file);
    m->nlab = id_list_count(L, t, "branch_labels", file);
    lua_settop(L, entry - 1);
}

static int find_parent(lua_State *L, const kr_graph *g, int i, const char *rev, const char *field)
{
    int p = kr_graph_find(g, rev);
    if (p < 0) kr_migrate_raise(L, "unknown_revision", g->m[i].file, "%s '%s' is not the revision of any migration file", field, rev);
    if (p == i) kr_migrate_raise(L, "cycle", g->m[i].file, "revision '%s' is its own %s", rev, field);
    return p;
}

/* Resolves each migration's down_revision (into g->par) and depends_on (into g->dep), and
 * collects its branch_labels (into g->lab). */
static void link_parents(lua_State *L, int list, kr_graph *g)
{
    int k = 0, d = 0, l = 0;
    for (int i = 0; i < g->n; i++) {
        kr_mig *m = &g->m[i];
        m->par0 = k;
        m->dep0 = d;
        m->lab0 = l;
        lua_rawgeti(L, list, m->slot);
        lua_getfield(L, -1, "migration");
        int t = lua_gettop(L);
        for (int j = 1; j <= m->npar; j++) {
            int p = find_parent(L, g, i, id_list_get(L, t, "down_revision", j), "down_revision");
            for (int q = m->par0; q < k; q++)
                if (g->par[q] == p) kr_migrate_raise(L, "bad_migration", m->file, "down_revision lists '%s' twice", g->m[p].rev);
            g->par[k++] = p;
            lua_pop(L, 1);
        }
        for (int j = 1; j <= m->ndep; j++) {
            /* depends_on names a revision, or a branch label (resolved below, once every label is known) */
            const char *rev = id_list_get(L, t, "depends_on", j);
            g->dep[d++] = kr_graph_find(g, rev);
            lua_pop(L, 1);
        }
        int nlab = id_list_count(L, t, "branch_labels", m->file);
        for (int j = 1; j <= nlab; j++) {
            const char *label = id_list_get(L, t, "branch_labels", j);
            lua_pop(L, 1); /* the migration table keeps it */
            if (*label == '\0' || strchr(label, '@') || strchr(label, ':') || strchr(label, ' '))
                kr_migrate_raise(L, "bad_migration", m->file, "branch label '%s' must be non-empty, without '@', ':' or spaces", label);
            if (kr_graph_find(g, label) >= 0 || kr_graph_label(g, label) >= 0 || strcmp(label, "base") == 0 ||
                strcmp(label, "head") == 0 || strcmp(label, "heads") == 0)
                kr_migrate_raise(L, "bad_migration", m->file, "branch label '%s' is already a revision, a label or a reserved word", label);
            g->lab[l++] = label;
            m->nlab = l - m->lab0; /* kr_graph_label sees the labels read so far */
        }
        m->nlab = l - m->lab0;
        lua_settop(L, t - 2);
        for (int q = m->par0; q < k; q++) g->m[g->par[q]].nchild++;
    }
    for (int i = 0; i < g->n; i++) {
        kr_mig *m = &g->m[i];
        lua_rawgeti(L, list, m->slot);
        lua_getfield(L, -1, "migration");
        int t = lua_gettop(L);
        for (int j = 0; j < m->ndep; j++) {
            int *dep = &g->dep[m->dep0 + j];
            if (*dep < 0) {
                const char *name = id_list_get(L, t, "depends_on", j + 1);
                *dep = kr_graph_label(g, name);
                if (*dep < 0) *dep = find_parent(L, g, i, name, "depends_on");
                lua_pop(L, 1);
            }
            if (*dep == i) kr_migrate_raise(L, "cycle", m->file, "revision '%s' depends on itself", m->rev);
            g->m[*dep].nuser++;
        }
        lua_settop(L, t - 2);
    }
}

int kr_graph_label(const kr_graph *g, const char *label)
{
    for (int i = 0; i < g->n; i++)
        for (int j = g->m[i].lab0; j < g->m[i].lab0 + g->m[i].nlab; j++)
            if (strcmp(g->lab[j], label) == 0) return i;
    return -1;
}

/* Kahn's algorithm, taking the first ready migration in file-name order at each step. */
static void sort_graph(lua_State *L, kr_graph *g)
{
    int *indeg = (int *)lua_newuserdata(L, sizeof(int) * (size_t)(g->n + 1));
    for (int i = 0; i < g->n; i++) indeg[i] = g->m[i].npar + g->m[i].ndep;
    for (int k = 0; k < g->n; k++) {
        int pick = -1;
        for (int i = 0; i < g->n && pick < 0; i++)
            if (indeg[i] == 0) pick = i;
        if (pick < 0) {
            for (int i = 0; i < g->n; i++)
                if (indeg[i] > 0)
                    kr_migrate_raise(L, "cycle", g->m[i].file, "revision '%s' is part of a cycle of down_revisions", g->m[i].rev);
        }
        indeg[pick] = -1;
        g->order[k] = pick;
        g->pos[pick] = k;
        for (int i = 0; i < g->n; i++) {
            for (int q = g->m[i].par0; q < g->m[i].par0 + g->m[i].npar; q++)
                if (g->par[q] == pick) indeg[i]--;
            for (int q = g->m[i].dep0; q < g->m[i].dep0 + g->m[i].ndep; q++)
                if (g->dep[q] == pick) indeg[i]--;
        }
    }
    lua_pop(L, 1);
}

void kr_graph_build(lua_State *L, int list, kr_graph *g)
{
    list = lua_absindex(L, list);
    kr_checktable(L, list);
    g->n = (int)lua_rawlen(L, list);
    size_t n1 = (size_t)g->n + 1;
    g->m = (kr_mig *)lua_newuserdata(L, sizeof(kr_mig) * n1);
    int total = 0, ndep = 0, nlab = 0;
    for (int i = 0; i < g->n; i++) {
        read_entry(L, list, i, &g->m[i]);
        total += g->m[i].npar;
        ndep += g->m[i].ndep;
        nlab += g->m[i].nlab;
        g->m[i].nlab = 0; /* counted again as link_parents reads them */
    }
    for (int i = 0; i < g->n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(g->m[i].rev, g->m[j].rev) == 0)
                kr_migrate_raise(L, "duplicate_revision", g->m[i].file, "revision '%s' is also the revision of %s",
                         g->m[i].rev, g->m[j].file);
    g->par = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)total + 1));
    g->dep = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)ndep + 1));
    g->lab = (const char **)lua_newuserdata(L, sizeof(char *) * ((size_t)nlab + 1));
    g->order = (int *)lua_newuserdata(L, sizeof(int) * n1);
    g->pos = (int *)lua_newuserdata(L, sizeof(int) * n1);
    link_parents(L, list, g);
    sort_graph(L, g);
}

int kr_graph_find(const kr_graph *g, const char *rev)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->m[i].rev, rev) == 0) return i;
    return -1;
}

int kr_graph_lookup(lua_State *L, const kr_graph *g, const char *spec)
{
    int exact = kr_graph_find(g, spec);
    if (exact >= 0) return exact;
    size_t len = strlen(spec);
    int found = -1, count = 0;
    for (int i = 0; i < g->n && len > 0; i++)
        if (strncmp(g->m[i].rev, spec, len) == 0) {
            found = i;
            count++;
        }
    if (count == 0) kr_migrate_raise(L, "unknown_revision", NULL, "no migration has revision '%s'", spec);
    if (count > 1) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 0; i < g->n; i++)
            if (strncmp(g->m[i].rev, spec, len) == 0) {
                luaL_addstring(&b, " ");
                luaL_addstring(&b, g->m[i].rev);
            }
        luaL_pushresult(&b);
        kr_migrate_raise(L, "ambiguous_revision", NULL, "'%s' is a prefix of several revisions:%s", spec, lua_tostring(L, -1));
    }
    return found;
}

unsigned char *kr_newset(lua_State *L, const kr_graph *g)
{
    unsigned char *s = (unsigned char *)lua_newuserdata(L, (size_t)g->n + 1);
    memset(s, 0, (size_t)g->n + 1);
    return s;
}

void kr_graph_close(const kr_graph *g, unsigned char *set)
{
    for (int k = g->n - 1; k >= 0; k--) {
        const kr_mig *m = &g->m[g->order[k]];
        if (!set[g->order[k]]) continue;
        for (int q = m->par0; q < m->par0 + m->npar; q++) set[g->par[q]] = 1;
        for (int q = m->dep0; q < m->dep0 + m->ndep; q++) set[g->dep[q]] = 1;
    }
}

int kr_graph_heads(const kr_graph *g, int *out)
{
    int n = 0;
    for (int k = 0; k < g->n; k++)
        if (g->m[g->order[k]].nchild == 0) out[n++] = g->order[k];
    return n;
}

int kr_applied_heads(const kr_graph *g, const unsigned char *applied, int *out)
{
    int n = 0;
    for (int k = 0; k < g->n; k++) {
        int i = g->order[k], covered = 0;
        if (!applied[i]) continue;
        for (int j = 0; j < g->n && !covered; j++) {
            if (!applied[j]) continue;
            for (int q = g->m[j].par0; q < g->m[j].par0 + g->m[j].npar; q++)
                if (g->par[q] == i) covered = 1;
            for (int q = g->m[j].dep0; q < g->m[j].dep0 + g->m[j].ndep; q++)
                if (g->dep[q] == i) covered = 1;
        }
        if (!covered) out[n++] = i;
    }
    return n;
}
