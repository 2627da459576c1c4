/* Targets and plans: what a target string names, the set of revisions a run aims at, and the
 * steps still to run towards it. Pure graph work: no SQL, no connection. */
#include <string.h>

#include "migrate.h"

/* Builds the graph of the list at list_idx and the plan's sets (userdata left on the stack). */
void kr_plan_init(lua_State *L, kr_plan *p, int list_idx, int cmd)
{
    memset(p, 0, sizeof *p);
    p->cmd = cmd;
    kr_graph_build(L, list_idx, &p->g);
    p->applied = kr_newset(L, &p->g);
    p->target = kr_newset(L, &p->g);
    p->steps = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)p->g.n + 1));
}

/* "N" -> N; -1 for anything but digits (or more than a million). */
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
    if (nh == 0) kr_migrate_raise(L, "unknown_revision", NULL, "there are no migrations, so there is no head");
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int k = 0; k < nh; k++) {
        lua_pushfstring(L, "%s %s (%s)", k ? "," : "", g->m[heads[k]].rev, g->m[heads[k]].file);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    kr_migrate_raise(L, "multiple_heads", NULL, "'head' is ambiguous: there are %d heads:%s; give a revision, use 'heads', "
                     "or add a merge migration", nh, lua_tostring(L, -1));
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
            kr_migrate_raise(L, "bad_target", NULL, "revision '%s' has no %s", g->m[i].rev, dir < 0 ? "down_revision" : "child");
        if (count > 1)
            kr_migrate_raise(L, "bad_target", NULL, "revision '%s' is a %s point: the relative target is ambiguous",
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
void kr_plan_closure(lua_State *L, const kr_graph *g, const char *spec, unsigned char *set)
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

static int upgrade_steps(kr_plan *p)
{
    int n = 0;
    for (int k = 0; k < p->g.n; k++) {
        int i = p->g.order[k];
        if (p->target[i] && !p->applied[i]) p->steps[n++] = i;
    }
    return n;
}

static int downgrade_steps(kr_plan *p)
{
    int n = 0;
    for (int k = p->g.n - 1; k >= 0; k--) {
        int i = p->g.order[k];
        if (p->target[i] && p->applied[i]) p->steps[n++] = i;
    }
    return n;
}

int kr_plan_steps(kr_plan *p)
{
    return p->cmd == KR_CMD_UPGRADE ? upgrade_steps(p) : downgrade_steps(p);
}

/* Fixes the target once, from the state first read: upgrade -> the set to be applied,
 * downgrade -> the set to be removed, stamp -> the set to be recorded. */
void kr_plan_resolve(lua_State *L, kr_plan *p, const char *spec)
{
    kr_graph *g = &p->g;
    int count = (*spec == '+' || *spec == '-') ? count_of(spec + 1) : -2;
    if (count == -1) kr_migrate_raise(L, "bad_target", NULL, "bad relative target '%s': expected +N or -N", spec);
    if (p->cmd == KR_CMD_UPGRADE) {
        if (*spec == '-' && count >= 0) kr_migrate_raise(L, "bad_target", NULL, "upgrade target '%s' goes down: use downgrade", spec);
        if (*spec == '+') {
            kr_plan_closure(L, g, "heads", p->target);
            int n = upgrade_steps(p);
            if (n < count) kr_migrate_raise(L, "bad_target", NULL, "upgrade %s: only %d revision(s) are pending", spec, n);
            memcpy(p->target, p->applied, (size_t)g->n);
            for (int k = 0; k < count; k++) p->target[p->steps[k]] = 1;
        } else {
            kr_plan_closure(L, g, spec, p->target);
        }
    } else if (p->cmd == KR_CMD_DOWNGRADE) {
        if (*spec == '+' && count >= 0) kr_migrate_raise(L, "bad_target", NULL, "downgrade target '%s' goes up: use upgrade", spec);
        memset(p->target, 0, (size_t)g->n + 1);
        if (*spec == '-') {
            for (int i = 0; i < g->n; i++) p->target[i] = 1;
            int n = downgrade_steps(p);
            if (n < count) kr_migrate_raise(L, "bad_target", NULL, "downgrade %s: only %d revision(s) are applied", spec, n);
            memset(p->target, 0, (size_t)g->n + 1);
            for (int k = 0; k < count; k++) p->target[p->steps[k]] = 1;
        } else if (strcmp(spec, "base") == 0) {
            for (int i = 0; i < g->n; i++) p->target[i] = 1;
        } else if (strcmp(spec, "heads") != 0) {
            /* down to a revision: remove what descends from it, keep it and other branches */
            int x = lookup_target(L, g, spec);
            p->target[x] = 1;
            for (int k = g->pos[x] + 1; k < g->n; k++) {
                const kr_mig *m = &g->m[g->order[k]];
                for (int q = m->par0; q < m->par0 + m->npar; q++)
                    if (p->target[g->par[q]]) p->target[g->order[k]] = 1;
            }
            p->target[x] = 0;
        }
    } else {
        if (count >= 0) kr_migrate_raise(L, "bad_target", NULL, "stamp takes a revision, 'head', 'heads' or 'base', not '%s'", spec);
        kr_plan_closure(L, g, spec, p->target);
    }
    p->resolved = 1;
}
