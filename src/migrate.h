/* Internal API of the migration engine (migrate*.c). */
#ifndef KRONOS_MIGRATE_H
#define KRONOS_MIGRATE_H

#include "kronos.h"

/* One migration file. The strings belong to Lua values the caller keeps on the stack. */
typedef struct kr_mig {
    const char *rev;
    const char *file;
    const char *message;     /* "" when the file has none */
    const char *checksum;    /* SHA-256 hex of the file */
    int transactional;
    int has_down;
    int par0, npar;          /* parents: g->par[par0 .. par0 + npar) */
    int nchild;
    int slot;                /* index of its entry in the Lua list (1-based) */
} kr_mig;

typedef struct kr_graph {
    int n;
    kr_mig *m;
    int *par;                /* parent indices of every migration, concatenated */
    int *order;              /* a topological order: parents first, ties by file name */
    int *pos;                /* pos[i] = the place of i in order */
} kr_graph;

/* migrate_graph.c. Every function raises a kronos error object on failure; the arrays live in
 * userdata pushed onto the stack (left there), so nothing leaks when Lua raises. */
void kr_graph_build(lua_State *L, int list_idx, kr_graph *g);
int kr_graph_find(const kr_graph *g, const char *rev);                   /* exact id, or -1 */
int kr_graph_lookup(lua_State *L, const kr_graph *g, const char *spec);  /* id or unique prefix; raises */
unsigned char *kr_newset(lua_State *L, const kr_graph *g);               /* zeroed, left on the stack */
void kr_graph_close(const kr_graph *g, unsigned char *set);              /* adds every ancestor */
int kr_graph_heads(const kr_graph *g, int *out);                         /* returns the count */
int kr_applied_heads(const kr_graph *g, const unsigned char *applied, int *out);
_Noreturn void kr_raise(lua_State *L, const char *code, const char *file, const char *fmt, ...);

/* migrate_sql.c: SQL text of the version table and the lock (also used offline, so no libpq). */
void kr_push_ident(lua_State *L, const char *name);     /* "quoted" identifier */
void kr_push_literal(lua_State *L, const char *value);  /* 'quoted' literal, E'' when it holds \ */
long long kr_lock_key(const char *version_table);
int kr_sql_batchable(const char *sql);                  /* safe to join with ";\n" to others */
const char *kr_sql_terminator(const char *sql);         /* ";" or "\n;" after it in a script */

#endif
