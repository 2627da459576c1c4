/* Shared by the Lua bindings of the DDL generator (ddl*.c): a SQL text buffer owned by Lua,
 * argument checking that names the argument and field, and the statement list. */
#ifndef KRONOS_DDL_LUA_H
#define KRONOS_DDL_LUA_H

#include "kronos.h"
#include "ddl.h"
#include "option.h"

/* A growing text whose storage is a userdata at a fixed stack slot: a raise frees it. */
typedef struct kr_sql {
    lua_State *L;
    int slot;
    char *p;
    size_t n, cap;
} kr_sql;

void kr_sql_init(lua_State *L, kr_sql *b);            /* pushes the storage */
void kr_sql_add(kr_sql *b, const char *s, size_t len);
void kr_sql_adds(kr_sql *b, const char *s);
void kr_sql_ident(kr_sql *b, const char *name, size_t len);   /* name already checked */
void kr_sql_qualified(kr_sql *b, const char *schema, const char *name, size_t len);
void kr_sql_alter_table(kr_sql *b, const char *schema, const char *table, size_t tlen); /* "ALTER TABLE t" */

/* Checks the value at idx is a valid identifier; path names it in errors. */
const char *kr_ddl_checkname(lua_State *L, int idx, int arg, const char *path, size_t *len);
/* The field key of the table at tidx (0: none) as an identifier, NULL when absent (nil). The
 * other options are read with option.h's kr_option_* (the one option reader). */
const char *kr_ddl_optname(lua_State *L, int tidx, int arg, const char *path, const char *key, size_t *len);
/* A non-empty array (no other keys) at idx; returns its length. */
int kr_ddl_checkarray(lua_State *L, int idx, int arg, const char *path);

/* Raw SQL: the text of a ddl.sql() marker at idx, or NULL. */
const char *kr_ddl_tosql(lua_State *L, int idx, size_t *len);
/* A trusted SQL text (a string or a ddl.sql() marker, no NUL byte), e.g. a CHECK condition. */
const char *kr_ddl_checksqltext(lua_State *L, int idx, int arg, const char *path, size_t *len);

/* Appends the canonical type of the type name at idx (a ddl.sql() type passes through). */
void kr_ddl_addtype(kr_sql *b, int idx, int arg, const char *path);
/* Appends a DEFAULT value: string/number/boolean literal, kronos.null, or ddl.sql(). */
void kr_ddl_addvalue(kr_sql *b, int idx, int arg, const char *path);
/* Checks the non-empty array of names at idx; returns its length. */
int kr_ddl_checknames(lua_State *L, int idx, int arg, const char *path);
/* Appends ("a", "b") from the array of names at idx. */
void kr_ddl_addnames(kr_sql *b, int idx, int arg, const char *path);

/* Pushes a conventional name: prefix_table[_names...][_suffix], fitted into 63 bytes.
 * names_idx is an array of names (0 for none); only its first `limit` entries are used (0 = all). */
const char *kr_ddl_pushname(lua_State *L, const char *prefix, const char *table, size_t tlen,
                            int names_idx, int limit, const char *suffix);

/* Statement list: the text of b appended to the array at list_idx, and b emptied. */
void kr_ddl_emit(kr_sql *b, int list_idx);

/* Builders, one Lua function each (ddl_table.c, ddl_constraint.c). */
int kr_ddl_create_table(lua_State *L);
int kr_ddl_drop_table(lua_State *L);
int kr_ddl_rename_table(lua_State *L);
int kr_ddl_add_column(lua_State *L);
int kr_ddl_drop_column(lua_State *L);
int kr_ddl_alter_column(lua_State *L);
int kr_ddl_create_index(lua_State *L);
int kr_ddl_drop_index(lua_State *L);
int kr_ddl_create_unique_constraint(lua_State *L);
int kr_ddl_create_check_constraint(lua_State *L);
int kr_ddl_create_foreign_key(lua_State *L);
int kr_ddl_create_primary_key(lua_State *L);
int kr_ddl_drop_constraint(lua_State *L);

/* Where a value of a builder's arguments sits, for errors. */
typedef struct kr_ddl_arg {
    int idx;           /* stack index of the value (0: absent) */
    int arg;           /* the argument it belongs to, for errors */
    const char *path;  /* its name in errors: "local_cols", "opts.constraints[2].columns" */
} kr_ddl_arg;

/* ddl_clause.c: one renderer per clause, shared by ddl_table.c and ddl_constraint.c. */
/* 'CONSTRAINT "name" ' */
void kr_ddl_clause_name(kr_sql *b, const char *name, size_t len);
/* kind ("PRIMARY KEY", "UNIQUE") followed by ("a", "b") from the array of names at names_idx;
 * names_idx 0: a column constraint, no list. */
void kr_ddl_clause_key(kr_sql *b, const char *kind, int names_idx, int arg, const char *path);
/* CHECK (cond): cond is trusted SQL text, already checked. */
void kr_ddl_clause_check(kr_sql *b, const char *cond, size_t len);
/* FOREIGN KEY (local) REFERENCES ref (remote) [ON DELETE ..] [ON UPDATE ..] [DEFERRABLE ..];
 * the actions and deferral are read from the table `actions` (ondelete, onupdate, deferrable,
 * initially). */
void kr_ddl_clause_fk(kr_sql *b, kr_ddl_arg local, kr_ddl_arg remote, const char *ref_schema,
                      const char *ref_table, size_t ref_len, kr_ddl_arg actions);
/* 'CREATE [UNIQUE] INDEX [CONCURRENTLY] [IF NOT EXISTS] "name" ON ' */
void kr_ddl_clause_index(kr_sql *b, int unique, int concurrently, int if_not_exists, const char *name, size_t len);
/* DROP <what> [IF EXISTS] [schema.]name [CASCADE]: the one DROP builder. */
void kr_ddl_clause_drop(kr_sql *b, const char *what, int if_exists, const char *schema,
                        const char *name, size_t len, int cascade);
/* ALTER TABLE t DROP <what> [IF EXISTS] name [CASCADE], the builder of drop_column(table, column,
 * opts) and drop_constraint(name, table, opts): Alembic's argument orders, checked in order. */
int kr_ddl_drop_member(lua_State *L, const char *what, int table_arg, const char *name_label);

#endif
