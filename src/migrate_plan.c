/* Targets and plans: what a target string names (Alembic 1.8's grammar and meaning), the set of
 * revisions a run aims at, and the steps still to run towards it. Pure graph work: no SQL.
 *
 * A target is  [branch@]symbol  or a relative  [branch@][symbol](+|-)N.  symbol: a revision id
 * (or a unique prefix), a branch label, head, heads or base; branch: a branch label or a
 * revision id, which restricts symbol (and the walk of a relative target) to that lineage.
 * Lineage: a revision's ancestors and descendants through down_revision. See the README's
 * target table for the meaning of each form per command. */
#include <string.h>

#include "migrate.h"

#define BASE (-1) /* a resolved symbol that names no revision */

void kr_plan_init(lua_State *L, kr_plan *p, int list_idx, int cmd)
{
    memset(p, 0, sizeof *p);
    p->cmd = cmd;
    kr_graph_build(L, list_idx, &p->g);
    p->applied = kr_newset(L, &p->g);
    p->target = kr_newset(L, &p->g);
    p->steps = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)p->g.n + 1));
    p->heads = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)p->g.n + 1));
    p->tmp = kr_newset(L, &p->g);
    p->tmp2 = kr_newset(L, &p->g);
}

/* ---- the graph as sets ------------------------------------------------------------------- */

static int parent_in(const kr_graph *g, int i, const unsigned char *set, int deps)
{
    const kr_mig *m = &g->m[i];
    for (int q = m->par0; q < m->par0 + m->npar; q++)
        if (set[g->par[q]]) return 1;
    for (int q = m->dep0; deps && q < m->dep0 + m->ndep; q++)
        if (set[g->dep[q]]) return 1;
    return 0;
}

/* Adds to set every descendant of its members (through depends_on too when deps). */
static void add_descendants(const kr_graph *g, unsigned char *set, int deps)
{
    for (int k = 0; k < g->n; k++)
        if (!set[g->order[k]] && parent_in(g, g->order[k], set, deps)) set[g->order[k]] = 1;
}

/* Adds to set every ancestor of its members through down_revision only. */
static void add_ancestors_nodeps(const kr_graph *g, unsigned char *set)
{
    for (int k = g->n - 1; k >= 0; k--) {
        const kr_mig *m = &g->m[g->order[k]];
        if (!set[g->order[k]]) continue;
        for (int q = m->par0; q < m->par0 + m->npar; q++) set[g->par[q]] = 1;
    }
}

/* Whether a and b share a lineage: b is a, an ancestor or a descendant of a (down_revision,
 * or depends_on too when deps). */
static int shares_lineage(kr_plan *p, int a, int b, int deps)
{
    const kr_graph *g = &p->g;
    memset(p->tmp2, 0, (size_t)g->n);
    p->tmp2[a] = 1;
    if (deps) kr_graph_close(g, p->tmp2); else add_ancestors_nodeps(g, p->tmp2);
    if (p->tmp2[b]) return 1;
    memset(p->tmp2, 0, (size_t)g->n);
    p->tmp2[a] = 1;
    add_descendants(g, p->tmp2, deps);
    return p->tmp2[b];
}

/* The database's current heads (applied revisions no applied revision builds on) into p->heads. */
static int current_heads(kr_plan *p)
{
    return kr_applied_heads(&p->g, p->applied, p->heads);
}

/* The heads by down_revision (Alembic's "heads"); restricted to branch's lineage when branch >= 0. */
static int branch_heads(kr_plan *p, int branch, int *out)
{
    int n = 0;
    for (int k = 0; k < p->g.n; k++) {
        int i = p->g.order[k];
        if (p->g.m[i].nchild == 0 && (branch < 0 || shares_lineage(p, i, branch, 0))) out[n++] = i;
    }
    return n;
}

/* Where a branch stands when none of the database's current heads is on it, as Alembic finds
 * it: the applied revisions in branch's lineage that no other applied revision builds on, the
 * others counted among the branch's own (upgrade: through down_revision and depends_on) or among
 * all applied revisions (downgrade: through down_revision only). Into out; returns the count. */
static int branch_tips(kr_plan *p, int branch, int upgrade, int *out)
{
    const kr_graph *g = &p->g;
    unsigned char *on = p->tmp;
    for (int i = 0; i < g->n; i++) on[i] = p->applied[i] && shares_lineage(p, i, branch, 0);
    int n = 0, deps = upgrade;
    for (int i = 0; i < g->n; i++) {
        if (!on[i]) continue;
        int covered = 0;
        for (int j = 0; j < g->n && !covered; j++) {
            if (!(upgrade ? on[j] : p->applied[j]) || j == i) continue;
            for (int q = g->m[j].par0; q < g->m[j].par0 + g->m[j].npar; q++) covered |= g->par[q] == i;
            for (int q = g->m[j].dep0; deps && q < g->m[j].dep0 + g->m[j].ndep; q++) covered |= g->dep[q] == i;
        }
        if (!covered) out[n++] = i;
    }
    return n;
}

/* ---- names ------------------------------------------------------------------------------- */

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

_Noreturn static void raise_heads(lua_State *L, const kr_graph *g, const int *heads, int nh, const char *spec)
{
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    for (int k = 0; k < nh; k++) {
        lua_pushfstring(L, "%s %s (%s)", k ? "," : "", g->m[heads[k]].rev, g->m[heads[k]].file);
        luaL_addvalue(&buf);
    }
    luaL_pushresult(&buf);
    kr_migrate_raise(L, "multiple_heads", NULL, "'%s' is ambiguous: there are %d heads:%s; give a revision, use 'heads', "
                     "a branch label (label@head), or add a merge migration", spec, nh, lua_tostring(L, -1));
}

/* A branch name: a branch label, else a revision id or unique prefix. */
static int branch_of(lua_State *L, const kr_graph *g, const char *name)
{
    int i = kr_graph_label(g, name);
    return i >= 0 ? i : kr_graph_lookup(L, g, name);
}

/* One revision (or BASE) from an absolute symbol, within branch's lineage when branch >= 0. */
static int resolve_symbol(lua_State *L, kr_plan *p, int branch, const char *sym)
{
    kr_graph *g = &p->g;
    if (strcmp(sym, "base") == 0) return BASE;
    if (strcmp(sym, "head") == 0 || strcmp(sym, "heads") == 0) {
        int *h = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)g->n + 1));
        int nh = branch_heads(p, branch, h);
        if (strcmp(sym, "heads") == 0 && branch < 0) {
            nh = 0;
            for (int i = 0; i < g->n; i++)
                if (g->m[i].nchild == 0 && g->m[i].nuser == 0) h[nh++] = i;
        }
        if (nh > 1) raise_heads(L, g, h, nh, sym);
        int r = nh == 1 ? h[0] : BASE;
        lua_pop(L, 1);
        return r;
    }
    int i = kr_graph_label(g, sym);
    if (i < 0) i = kr_graph_lookup(L, g, sym);
    if (branch >= 0 && !shares_lineage(p, i, branch, 0))
        kr_migrate_raise(L, "bad_target", NULL, "revision '%s' is not a member of branch '%s'", g->m[i].rev, g->m[branch].rev);
    return i;
}

/* Walks n steps up (children by down_revision, within branch's lineage when branch >= 0; from
 * BASE: the bases) or down (the down_revision; a base steps to BASE). Raises when the walk is
 * ambiguous (a branch or a merge point) or runs past the end of the graph. */
static int walk(lua_State *L, kr_plan *p, int from, int n, int branch, const char *spec)
{
    const kr_graph *g = &p->g;
    int i = from, at_base = from == BASE;
    for (int step = 0; step < (n < 0 ? -n : n); step++) {
        int next = BASE, count = 0;
        if (n < 0) {
            if (at_base) kr_migrate_raise(L, "bad_target", NULL, "'%s' walks below base", spec);
            count = g->m[i].npar;
            if (count == 1) next = g->par[g->m[i].par0];
            if (count == 0) { /* a base steps down to base */
                at_base = 1;
                i = BASE;
                continue;
            }
        } else {
            for (int j = 0; j < g->n; j++) {
                int is_child = at_base ? g->m[j].npar == 0 : 0;
                for (int q = g->m[j].par0; !at_base && q < g->m[j].par0 + g->m[j].npar; q++)
                    if (g->par[q] == i) is_child = 1;
                if (is_child && (branch < 0 || shares_lineage(p, j, branch, 0))) {
                    next = j;
                    count++;
                }
            }
            if (count == 0)
                kr_migrate_raise(L, "bad_target", NULL, "'%s' walks past the heads: there are not %d revisions to go up", spec, n);
        }
        if (count > 1)
            kr_migrate_raise(L, "bad_target", NULL, "'%s' is an ambiguous walk: %s is a %s point", spec,
                             at_base ? "base" : g->m[i].rev, n < 0 ? "merge" : "branch");
        i = next;
        at_base = 0;
    }
    return i;
}

/* A target split into its parts: [branch@]symbol[(+|-)N]. */
typedef struct spec {
    const char *text;
    int branch;              /* the branch's revision, or -1 */
    const char *branch_name;
    const char *symbol;      /* "" for a relative target without one */
    int relative, n;         /* n: the signed count */
} spec;

static void parse(lua_State *L, kr_plan *p, const char *text, spec *s)
{
    memset(s, 0, sizeof *s);
    s->text = text;
    s->branch = -1;
    const char *at = strchr(text, '@');
    const char *rest = text;
    if (at) {
        lua_pushlstring(L, text, (size_t)(at - text));
        s->branch_name = lua_tostring(L, -1); /* left on the stack */
        s->branch = branch_of(L, &p->g, s->branch_name);
        rest = at + 1;
    }
    s->symbol = rest;
    if (kr_graph_find(&p->g, rest) >= 0 || kr_graph_label(&p->g, rest) >= 0) return; /* a name wins over arithmetic */
    const char *plus = strrchr(rest, '+'), *minus = strrchr(rest, '-');
    const char *rel = plus && (!minus || plus > minus) ? plus : minus;
    if (rel == NULL || count_of(rel + 1) < 0) return;
    s->relative = 1;
    s->n = *rel == '+' ? count_of(rel + 1) : -count_of(rel + 1);
    lua_pushlstring(L, rest, (size_t)(rel - rest));
    s->symbol = lua_tostring(L, -1); /* left on the stack */
}

/* ---- what each command aims at ----------------------------------------------------------- */

/* upgrade: target = everything the target needs (it, its ancestors, its dependencies). */
static void resolve_upgrade(lua_State *L, kr_plan *p, const spec *s)
{
    kr_graph *g = &p->g;
    unsigned char *t = p->target;
    memset(t, 0, (size_t)g->n + 1);
    if (!s->relative) {
        if (strcmp(s->symbol, "heads") == 0) {
            for (int i = 0; i < g->n; i++)
                t[i] = (s->branch < 0) ? g->m[i].nchild == 0 && g->m[i].nuser == 0
                                       : g->m[i].nchild == 0 && shares_lineage(p, i, s->branch, 0);
        } else {
            int x = resolve_symbol(L, p, s->branch, s->symbol);
            if (x != BASE) t[x] = 1;
        }
    } else if (s->n < 0) {
        if (*s->symbol == '\0') kr_migrate_raise(L, "bad_target", NULL, "upgrade target '%s' goes down: use downgrade", s->text);
        int x = walk(L, p, resolve_symbol(L, p, s->branch, s->symbol), s->n, -1, s->text);
        if (x == BASE) /* as Alembic, which has no upgrade to base */
            kr_migrate_raise(L, "bad_target", NULL, "upgrade target '%s' is base: use downgrade", s->text);
        t[x] = 1;
    } else if (*s->symbol) {
        int x = walk(L, p, resolve_symbol(L, p, -1, s->symbol), s->n, s->branch, s->text);
        if (x != BASE) t[x] = 1;
    } else {
        /* +N counts from the database's current heads (on the branch, when one is named) */
        int nh = current_heads(p), start = BASE, nstart = 0;
        for (int k = 0; k < nh; k++)
            if (s->branch < 0 || shares_lineage(p, p->heads[k], s->branch, 0)) {
                start = p->heads[k];
                nstart++;
            }
        if (nstart == 0 && s->branch >= 0) {
            /* no current head on the branch: start from the branch's applied tips, or base */
            nstart = branch_tips(p, s->branch, 1, p->heads);
            start = nstart > 0 ? p->heads[0] : BASE;
        }
        if (nstart > 1)
            kr_migrate_raise(L, "bad_target", NULL, "upgrade '%s' is ambiguous: the database is at several heads; "
                             "give a branch (label@+N) or a revision (rev+N)", s->text);
        int x = walk(L, p, start, s->n, s->branch, s->text);
        if (x != BASE) t[x] = 1;
    }
    kr_graph_close(g, t);
}

/* downgrade: target = the applied revisions to remove. */
static void resolve_downgrade(lua_State *L, kr_plan *p, const spec *s)
{
    kr_graph *g = &p->g;
    int branch = s->branch, x;
    if (s->relative && s->n > 0) {
        if (*s->symbol == '\0') kr_migrate_raise(L, "bad_target", NULL, "downgrade target '%s' goes up: use upgrade", s->text);
        x = walk(L, p, resolve_symbol(L, p, -1, s->symbol), s->n, branch, s->text);
    } else if (s->relative && *s->symbol) {
        x = walk(L, p, resolve_symbol(L, p, branch, s->symbol), s->n, -1, s->text);
    } else if (s->relative) {
        /* -N walks down from the database's current head (on the branch, when one is named) */
        int nh = current_heads(p), start = BASE, nstart = 0;
        for (int k = 0; k < nh; k++)
            if (branch < 0 || shares_lineage(p, p->heads[k], branch, 0)) {
                start = p->heads[k];
                nstart++;
            }
        if (nstart == 0 && branch >= 0) {
            /* no current head on the branch: walk down from the branch's applied tip */
            nstart = branch_tips(p, branch, 0, p->heads);
            if (nstart > 0) start = p->heads[0];
        }
        if (nstart == 0)
            kr_migrate_raise(L, "bad_target", NULL, "downgrade '%s': no applied revision %s", s->text,
                             branch < 0 ? "to go down from" : "on that branch");
        if (nstart > 1)
            kr_migrate_raise(L, "bad_target", NULL, "downgrade '%s' is ambiguous: the database is at several heads; "
                             "give a branch (label@-N) or a revision (rev-N)", s->text);
        x = walk(L, p, start, s->n, -1, s->text);
        if (branch < 0) branch = start; /* keep to the head walked down from */
    } else {
        x = resolve_symbol(L, p, -1, s->symbol); /* as Alembic: the branch limits what goes, not x */
    }
    /* what goes: the revisions above x (every one, from base), limited to the branch's when several */
    unsigned char *roots = p->tmp;
    memset(roots, 0, (size_t)g->n + 1);
    int nroots = 0;
    for (int i = 0; i < g->n; i++) {
        int root = x == BASE ? g->m[i].npar == 0 : 0;
        for (int q = g->m[i].par0; x != BASE && q < g->m[i].par0 + g->m[i].npar; q++)
            if (g->par[q] == x) root = 1;
        roots[i] = (unsigned char)root;
        nroots += root;
    }
    if (branch >= 0 && nroots > 1) {
        unsigned char *anc = (unsigned char *)lua_newuserdata(L, (size_t)g->n + 1);
        memset(anc, 0, (size_t)g->n + 1);
        anc[branch] = 1;
        add_ancestors_nodeps(g, anc);
        nroots = 0;
        for (int i = 0; i < g->n; i++) nroots += roots[i] = roots[i] && anc[i];
        lua_pop(L, 1);
        if (nroots == 0) kr_migrate_raise(L, "bad_target", NULL, "'%s' is not a valid downgrade target from the current heads", s->text);
    }
    add_descendants(g, roots, 1);
    int any = 0;
    for (int i = 0; i < g->n; i++) any |= p->target[i] = roots[i] && p->applied[i];
    if (x != BASE && !any) {
        int nh = current_heads(p), is_head = 0;
        for (int k = 0; k < nh; k++) is_head |= p->heads[k] == x;
        if (!is_head)
            kr_migrate_raise(L, "bad_target", NULL, "destination '%s' is not a valid downgrade target from the current head(s): "
                             "revision '%s' is not applied", s->text, g->m[x].rev);
    }
}

/* stamp: target = the applied set afterwards. Each destination replaces the current heads of
 * its own lineage (those it descends from, or those above it); other branches stay. */
static void resolve_stamp(lua_State *L, kr_plan *p, const spec *s)
{
    kr_graph *g = &p->g;
    if (s->relative) kr_migrate_raise(L, "bad_target", NULL, "stamp takes a revision, a label, 'head', 'heads' or 'base', not '%s'", s->text);
    unsigned char *dest = p->tmp;
    memset(dest, 0, (size_t)g->n + 1);
    if (strcmp(s->symbol, "heads") == 0) {
        for (int i = 0; i < g->n; i++)
            dest[i] = s->branch < 0 ? g->m[i].nchild == 0 && g->m[i].nuser == 0
                                    : g->m[i].nchild == 0 && shares_lineage(p, i, s->branch, 0);
    } else {
        int x = resolve_symbol(L, p, s->branch, s->symbol);
        if (x != BASE) dest[x] = 1;
    }
    /* the heads after the stamp, as a set */
    unsigned char *heads = p->target;
    memset(heads, 0, (size_t)g->n + 1);
    int nh = p->purge ? 0 : current_heads(p);
    for (int k = 0; k < nh; k++) heads[p->heads[k]] = 1;
    int any = 0;
    for (int d = 0; d < g->n; d++) {
        if (!dest[d]) continue;
        any = 1;
        for (int h = 0; h < g->n; h++)
            if (heads[h] && shares_lineage(p, h, d, 1)) heads[h] = 0;
        heads[d] = 1;
    }
    if (!any) {
        /* base: the branch's heads go (every head without a branch), depends_on included as in
         * Alembic: a head that depends on the branch cannot stay once the branch is at base */
        for (int h = 0; h < g->n; h++)
            if (heads[h] && (s->branch < 0 || shares_lineage(p, h, s->branch, 1))) heads[h] = 0;
    }
    kr_graph_close(g, heads); /* now the applied set */
}

/* Every revision that the spec names, with its ancestors, into set (an offline run's start). */
void kr_plan_closure(lua_State *L, kr_plan *p, const char *text, unsigned char *set)
{
    spec s;
    int top = lua_gettop(L);
    parse(L, p, text, &s);
    memset(set, 0, (size_t)p->g.n + 1);
    if (s.relative) kr_migrate_raise(L, "bad_target", NULL, "the start of a range is a revision, 'heads' or 'base', not '%s'", text);
    if (strcmp(s.symbol, "heads") == 0) {
        for (int i = 0; i < p->g.n; i++) set[i] = p->g.m[i].nchild == 0;
    } else {
        int x = resolve_symbol(L, p, s.branch, s.symbol);
        if (x != BASE) set[x] = 1;
    }
    kr_graph_close(&p->g, set);
    lua_settop(L, top);
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
 * downgrade -> the set to be removed, stamp -> the set recorded afterwards. */
void kr_plan_resolve(lua_State *L, kr_plan *p, const char *text)
{
    spec s;
    int top = lua_gettop(L);
    parse(L, p, text, &s);
    if (p->cmd == KR_CMD_UPGRADE)
        resolve_upgrade(L, p, &s);
    else if (p->cmd == KR_CMD_DOWNGRADE)
        resolve_downgrade(L, p, &s);
    else
        resolve_stamp(L, p, &s);
    lua_settop(L, top);
    p->resolved = 1;
}
