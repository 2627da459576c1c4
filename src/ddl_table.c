/* Table and column builders: create_table, drop_table, rename_table, add_column,
 * drop_column, alter_column. */
#include <stdio.h>
#include <string.h>

#include "ddl_lua.h"

static const char *const column_keys[] = {
    "name", "type", "primary_key", "nullable", "unique", "index", "server_default", "check", NULL
};

/* What a column spec asks for beyond its definition; names point into the spec table. */
struct column {
    const char *name;
    size_t len;
    int primary_key, unique, index;
    int check;   /* has a check condition (re-read from the spec when rendered) */
};

static int column_check(lua_State *L, int col_idx)
{
    kr_option_field(L, col_idx, "check");
    int has = !lua_isnil(L, -1);
    lua_pop(L, 1);
    return has;
}

/* Appends '"name" type [DEFAULT v] [NOT NULL]' for the column spec at col_idx. */
static void add_column_def(kr_sql *b, int col_idx, int arg, const char *path, struct column *c)
{
    lua_State *L = b->L;
    char sub[128];
    kr_option_checkfields(L, col_idx, arg, path, column_keys);
    c->name = kr_ddl_optname(L, col_idx, arg, path, "name", &c->len);
    if (c->name == NULL) kr_error_arg(L, arg, "%s.name: required", path);
    c->primary_key = kr_option_bool(L, col_idx, arg, path, "primary_key", 0);
    c->unique = kr_option_bool(L, col_idx, arg, path, "unique", 0);
    c->index = kr_option_bool(L, col_idx, arg, path, "index", 0);
    int nullable = kr_option_bool(L, col_idx, arg, path, "nullable", -1);
    if (c->primary_key && nullable == 1)
        kr_error_arg(L, arg, "%s.nullable: a primary key column cannot be nullable", path);

    kr_sql_ident(b, c->name, c->len);
    kr_sql_add(b, " ", 1);
    kr_option_field(L, col_idx, "type");
    if (lua_isnil(L, -1)) kr_error_arg(L, arg, "%s.type: required", path);
    snprintf(sub, sizeof sub, "%s.type", path);
    kr_ddl_addtype(b, -1, arg, sub);
    lua_pop(L, 1);

    kr_option_field(L, col_idx, "server_default");
    if (!lua_isnil(L, -1)) {
        snprintf(sub, sizeof sub, "%s.server_default", path);
        kr_sql_adds(b, " DEFAULT ");
        kr_ddl_addvalue(b, -1, arg, sub);
    }
    lua_pop(L, 1);
    if (c->primary_key || nullable == 0) kr_sql_adds(b, " NOT NULL");

    c->check = column_check(L, col_idx);
    if (c->check) {
        size_t len;
        kr_option_field(L, col_idx, "check");
        snprintf(sub, sizeof sub, "%s.check", path);
        kr_ddl_checksqltext(L, -1, arg, sub, &len);
        lua_pop(L, 1);
    }
}

/* A unique column that is also indexed gets a unique index instead of a constraint,
 * as SQLAlchemy does for Column(unique=True, index=True). */
static int wants_unique_constraint(const struct column *c)
{
    return c->unique && !c->index;
}

/* 'CONSTRAINT "<prefix>_<table>[_<column>]" ' */
static void add_named(kr_sql *b, const char *prefix, const char *table, size_t tlen, const char *column)
{
    const char *name = kr_ddl_pushname(b->L, prefix, table, tlen, 0, 0, column);
    kr_ddl_clause_name(b, name, strlen(name));
    lua_pop(b->L, 1);
}

/* The column spec's check (checked by add_column_def) as CHECK (...). */
static void add_check_body(kr_sql *b, int col_idx)
{
    size_t len;
    kr_option_field(b->L, col_idx, "check");
    const char *cond = kr_ddl_tosql(b->L, -1, &len);
    if (cond == NULL) cond = lua_tolstring(b->L, -1, &len);
    kr_ddl_clause_check(b, cond, len);
    lua_pop(b->L, 1);
}

/* A one-column key: pushes the array {column} that kr_ddl_clause_key takes. */
static int push_single(lua_State *L, const char *column, size_t len)
{
    lua_createtable(L, 1, 0);
    lua_pushlstring(L, column, len);
    lua_rawseti(L, -2, 1);
    return lua_gettop(L);
}

/* CREATE [UNIQUE] INDEX [IF NOT EXISTS] "ix_<table>_<column>" ON table ("column") */
static void column_index(kr_sql *b, const char *schema, const char *table, size_t tlen,
                         const char *column, int unique, int if_not_exists)
{
    const char *name = kr_ddl_pushname(b->L, "ix", table, tlen, 0, 0, column);
    kr_ddl_clause_index(b, unique, 0, if_not_exists, name, strlen(name));
    lua_pop(b->L, 1);
    kr_sql_qualified(b, schema, table, tlen);
    kr_sql_adds(b, " (");
    kr_sql_ident(b, column, strlen(column));
    kr_sql_add(b, ")", 1);
}

/* ---- create_table ---- */

static const char *const create_table_keys[] = {"schema", "if_not_exists", "constraints", NULL};
static const char *const constraint_keys[] = {
    "kind", "name", "columns", "condition", "references", "referent_schema", "remote_columns",
    "ondelete", "onupdate", "deferrable", "initially", NULL
};

static void forbid(lua_State *L, int idx, int arg, const char *path, const char *kind, const char *const *keys)
{
    for (; *keys; keys++) {
        kr_option_field(L, idx, *keys);
        if (!lua_isnil(L, -1))
            kr_error_arg(L, arg, "%s.%s: not allowed for a %s constraint", path, *keys, kind);
        lua_pop(L, 1);
    }
}

static const char *const fk_only[] = {
    "references", "referent_schema", "remote_columns", "ondelete", "onupdate", "deferrable", "initially", NULL
};
static const char *const not_check[] = {"condition", NULL};

static int field(lua_State *L, int idx, const char *key, int arg, const char *path, int required)
{
    kr_option_field(L, idx, key);
    if (required && lua_isnil(L, -1)) kr_error_arg(L, arg, "%s.%s: required", path, key);
    return lua_gettop(L);
}

static const char *constraint_kind(lua_State *L, int idx, int arg, const char *path)
{
    size_t len;
    const char *kind = kr_option_string(L, idx, arg, path, "kind", &len);
    if (kind == NULL) kr_error_arg(L, arg, "%s.kind: required", path);
    return kind;
}

/* One entry of opts.constraints, as ', CONSTRAINT "name" <body>' */
static void add_table_constraint(kr_sql *b, int idx, const char *path, const char *table, size_t tlen,
                                 int has_column_pk)
{
    lua_State *L = b->L;
    const int arg = 3;
    char sub[160];
    size_t len, nlen;
    int top = lua_gettop(L);
    kr_option_checkfields(L, idx, arg, path, constraint_keys);
    const char *kind = constraint_kind(L, idx, arg, path);
    const char *name = kr_ddl_optname(L, idx, arg, path, "name", &nlen);
    kr_sql_adds(b, ",\n    ");
    if (strcmp(kind, "primary_key") == 0 || strcmp(kind, "unique") == 0) {
        int pk = kind[0] == 'p';
        if (pk && has_column_pk)
            kr_error_arg(L, arg, "%s: the columns already declare a primary key", path);
        forbid(L, idx, arg, path, kind, fk_only);
        forbid(L, idx, arg, path, kind, not_check);
        int cols = field(L, idx, "columns", arg, path, 1);
        snprintf(sub, sizeof sub, "%s.columns", path);
        kr_ddl_checknames(L, cols, arg, sub);
        if (name == NULL) name = kr_ddl_pushname(L, pk ? "pk" : "uq", table, tlen, pk ? 0 : cols, 0, NULL);
        kr_ddl_clause_name(b, name, strlen(name));
        kr_ddl_clause_key(b, pk ? "PRIMARY KEY" : "UNIQUE", cols, arg, sub);
    } else if (strcmp(kind, "check") == 0) {
        forbid(L, idx, arg, path, kind, fk_only);
        int cond = field(L, idx, "condition", arg, path, 1);
        int cols = field(L, idx, "columns", arg, path, 0);
        if (name == NULL) {
            if (lua_isnil(L, cols))
                kr_error_arg(L, arg, "%s.name: required for a check constraint (or columns, to name it ck_<table>_<columns>)", path);
            snprintf(sub, sizeof sub, "%s.columns", path);
            kr_ddl_checknames(L, cols, arg, sub);
            name = kr_ddl_pushname(L, "ck", table, tlen, cols, 0, NULL);
        }
        snprintf(sub, sizeof sub, "%s.condition", path);
        const char *text = kr_ddl_checksqltext(L, cond, arg, sub, &len);
        kr_ddl_clause_name(b, name, strlen(name));
        kr_ddl_clause_check(b, text, len);
    } else if (strcmp(kind, "foreign_key") == 0) {
        forbid(L, idx, arg, path, kind, not_check);
        int cols = field(L, idx, "columns", arg, path, 1);
        int remote = field(L, idx, "remote_columns", arg, path, 1);
        size_t rlen;
        const char *ref = kr_ddl_optname(L, idx, arg, path, "references", &rlen);
        if (ref == NULL) kr_error_arg(L, arg, "%s.references: required", path);
        size_t rslen;
        const char *ref_schema = kr_ddl_optname(L, idx, arg, path, "referent_schema", &rslen);
        char lpath[160], rpath[160];
        snprintf(lpath, sizeof lpath, "%s.columns", path);
        snprintf(rpath, sizeof rpath, "%s.remote_columns", path);
        kr_ddl_checknames(L, cols, arg, lpath);
        if (name == NULL) name = kr_ddl_pushname(L, "fk", table, tlen, cols, 1, ref);
        kr_ddl_clause_name(b, name, strlen(name));
        kr_ddl_arg local = {cols, arg, lpath}, rem = {remote, arg, rpath}, acts = {idx, arg, path};
        kr_ddl_clause_fk(b, local, rem, ref_schema, ref, rlen, acts);
    } else {
        kr_error_arg(L, arg, "%s.kind: expected primary_key, unique, check or foreign_key, got \"%s\"", path, kind);
    }
    lua_settop(L, top);
}

int kr_ddl_create_table(lua_State *L)
{
    size_t tlen, slen;
    kr_checkstack(L, 40);
    const char *table = kr_ddl_checkname(L, 1, 1, "name", &tlen);
    int ncols = kr_ddl_checkarray(L, 2, 2, "columns");
    int opts = kr_option_check(L, 3, "opts", create_table_keys);
    const char *schema = kr_ddl_optname(L, opts, 3, "opts", "schema", &slen);
    int if_not_exists = kr_option_bool(L, opts, 3, "opts", "if_not_exists", 0);
    int constraints = 0, ncons = 0;
    if (opts) {
        kr_option_field(L, opts, "constraints");
        constraints = lua_gettop(L);
        if (lua_isnil(L, constraints)) constraints = 0;
        else ncons = kr_ddl_checkarray(L, constraints, 3, "opts.constraints");
    }

    lua_newtable(L);
    int list = lua_gettop(L);
    struct column *cols = (struct column *)lua_newuserdata(L, (size_t)ncols * sizeof *cols);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_sql_adds(&b, if_not_exists ? "CREATE TABLE IF NOT EXISTS " : "CREATE TABLE ");
    kr_sql_qualified(&b, schema, table, tlen);
    kr_sql_adds(&b, " (");
    int npk = 0;
    for (int i = 1; i <= ncols; i++) {
        char path[32];
        snprintf(path, sizeof path, "columns[%d]", i);
        lua_rawgeti(L, 2, i);
        kr_sql_adds(&b, i > 1 ? ",\n    " : "\n    ");
        add_column_def(&b, lua_gettop(L), 2, path, &cols[i - 1]);
        lua_pop(L, 1);
        npk += cols[i - 1].primary_key;
    }
    if (npk > 0) {
        lua_createtable(L, npk, 0);   /* the key's columns, as kr_ddl_clause_key takes them */
        for (int i = 0, k = 0; i < ncols; i++) {
            if (!cols[i].primary_key) continue;
            lua_pushlstring(L, cols[i].name, cols[i].len);
            lua_rawseti(L, -2, ++k);
        }
        kr_sql_adds(&b, ",\n    ");
        add_named(&b, "pk", table, tlen, NULL);
        kr_ddl_clause_key(&b, "PRIMARY KEY", lua_gettop(L), 2, "columns");
        lua_pop(L, 1);
    }
    for (int i = 0; i < ncols; i++) {
        if (!wants_unique_constraint(&cols[i])) continue;
        kr_sql_adds(&b, ",\n    ");
        add_named(&b, "uq", table, tlen, cols[i].name);
        kr_ddl_clause_key(&b, "UNIQUE", push_single(L, cols[i].name, cols[i].len), 2, "columns");
        lua_pop(L, 1);
    }
    for (int i = 0; i < ncols; i++) {
        if (!cols[i].check) continue;
        kr_sql_adds(&b, ",\n    ");
        add_named(&b, "ck", table, tlen, cols[i].name);
        lua_rawgeti(L, 2, i + 1);
        add_check_body(&b, lua_gettop(L));
        lua_pop(L, 1);
    }
    for (int i = 1; i <= ncons; i++) {
        char path[48];
        snprintf(path, sizeof path, "opts.constraints[%d]", i);
        lua_rawgeti(L, constraints, i);
        add_table_constraint(&b, lua_gettop(L), path, table, tlen, npk > 0);
        lua_pop(L, 1);
    }
    kr_sql_adds(&b, "\n)");
    kr_ddl_emit(&b, list);
    for (int i = 0; i < ncols; i++) {
        if (!cols[i].index) continue;
        column_index(&b, schema, table, tlen, cols[i].name, cols[i].unique, if_not_exists);
        kr_ddl_emit(&b, list);
    }
    lua_settop(L, list);
    return 1;
}

/* ---- drop_table, rename_table ---- */

static const char *const drop_table_keys[] = {"schema", "if_exists", "cascade", NULL};

int kr_ddl_drop_table(lua_State *L)
{
    size_t tlen, slen;
    const char *table = kr_ddl_checkname(L, 1, 1, "name", &tlen);
    int opts = kr_option_check(L, 2, "opts", drop_table_keys);
    const char *schema = kr_ddl_optname(L, opts, 2, "opts", "schema", &slen);
    int if_exists = kr_option_bool(L, opts, 2, "opts", "if_exists", 0);
    int cascade = kr_option_bool(L, opts, 2, "opts", "cascade", 0);
    lua_newtable(L);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_ddl_clause_drop(&b, "TABLE", if_exists, schema, table, tlen, cascade);
    kr_ddl_emit(&b, -2);
    lua_pop(L, 1);
    return 1;
}

static const char *const schema_keys[] = {"schema", NULL};

int kr_ddl_rename_table(lua_State *L)
{
    size_t olen, nlen, slen;
    const char *old = kr_ddl_checkname(L, 1, 1, "old", &olen);
    const char *to = kr_ddl_checkname(L, 2, 2, "new", &nlen);
    int opts = kr_option_check(L, 3, "opts", schema_keys);
    const char *schema = kr_ddl_optname(L, opts, 3, "opts", "schema", &slen);
    lua_newtable(L);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_sql_alter_table(&b, schema, old, olen);
    kr_sql_adds(&b, " RENAME TO ");
    kr_sql_ident(&b, to, nlen);
    kr_ddl_emit(&b, -2);
    lua_pop(L, 1);
    return 1;
}

/* ---- add_column, drop_column, alter_column ---- */

static const char *const add_column_keys[] = {"schema", "if_not_exists", NULL};

/* The column's constraints go inline in ADD COLUMN, so the statement stays atomic. */
int kr_ddl_add_column(lua_State *L)
{
    size_t tlen, slen;
    kr_checkstack(L, 20);
    const char *table = kr_ddl_checkname(L, 1, 1, "table", &tlen);
    if (lua_type(L, 2) != LUA_TTABLE)
        kr_error_arg(L, 2, "column: column spec (table) expected, got %s", luaL_typename(L, 2));
    int opts = kr_option_check(L, 3, "opts", add_column_keys);
    const char *schema = kr_ddl_optname(L, opts, 3, "opts", "schema", &slen);
    int if_not_exists = kr_option_bool(L, opts, 3, "opts", "if_not_exists", 0);
    lua_newtable(L);
    int list = lua_gettop(L);
    kr_sql b;
    kr_sql_init(L, &b);
    struct column c;
    kr_sql_alter_table(&b, schema, table, tlen);
    kr_sql_adds(&b, if_not_exists ? " ADD COLUMN IF NOT EXISTS " : " ADD COLUMN ");
    add_column_def(&b, 2, 2, "column", &c);
    if (c.primary_key) {
        kr_sql_add(&b, " ", 1);
        add_named(&b, "pk", table, tlen, NULL);
        kr_ddl_clause_key(&b, "PRIMARY KEY", 0, 2, "column");
    }
    if (wants_unique_constraint(&c)) {
        kr_sql_add(&b, " ", 1);
        add_named(&b, "uq", table, tlen, c.name);
        kr_ddl_clause_key(&b, "UNIQUE", 0, 2, "column");
    }
    if (c.check) {
        kr_sql_add(&b, " ", 1);
        add_named(&b, "ck", table, tlen, c.name);
        add_check_body(&b, 2);
    }
    kr_ddl_emit(&b, list);
    if (c.index) {
        column_index(&b, schema, table, tlen, c.name, c.unique, if_not_exists);
        kr_ddl_emit(&b, list);
    }
    lua_settop(L, list);
    return 1;
}

int kr_ddl_drop_column(lua_State *L)
{
    return kr_ddl_drop_member(L, "COLUMN", 1, "column");
}

static const char *const alter_column_keys[] = {
    "schema", "type", "using", "nullable", "server_default", "new_name", NULL
};

static void alter_action(kr_sql *b, const char **sep, const char *column, size_t clen, const char *action)
{
    kr_sql_adds(b, *sep);
    kr_sql_adds(b, "ALTER COLUMN ");
    kr_sql_ident(b, column, clen);
    kr_sql_adds(b, action);
    *sep = ", ";
}

/* One ALTER TABLE with every change (the server orders them), then RENAME COLUMN last, since
 * the changes name the column by its old name. */
int kr_ddl_alter_column(lua_State *L)
{
    size_t tlen, clen, slen, nlen, ulen;
    const char *table = kr_ddl_checkname(L, 1, 1, "table", &tlen);
    const char *column = kr_ddl_checkname(L, 2, 2, "column", &clen);
    int opts = kr_option_check(L, 3, "opts", alter_column_keys);
    if (opts == 0) kr_error_arg(L, 3, "opts: required (type, using, nullable, server_default or new_name)");
    const char *schema = kr_ddl_optname(L, opts, 3, "opts", "schema", &slen);
    const char *new_name = kr_ddl_optname(L, opts, 3, "opts", "new_name", &nlen);
    int nullable = kr_option_bool(L, opts, 3, "opts", "nullable", -1);
    kr_option_field(L, opts, "type");
    int type = lua_gettop(L);
    kr_option_field(L, opts, "server_default");
    int def = lua_gettop(L);
    kr_option_field(L, opts, "using");
    const char *using = NULL;
    if (!lua_isnil(L, -1)) {
        using = kr_ddl_checksqltext(L, -1, 3, "opts.using", &ulen);
        if (lua_isnil(L, type)) kr_error_arg(L, 3, "opts.using: only with opts.type");
    }
    int changes = !lua_isnil(L, type) + !lua_isnil(L, def) + (nullable != -1);
    if (changes == 0 && new_name == NULL)
        kr_error_arg(L, 3, "opts: nothing to alter (type, nullable, server_default or new_name)");

    lua_newtable(L);
    int list = lua_gettop(L);
    kr_sql b;
    kr_sql_init(L, &b);
    if (changes > 0) {
        int drop_default = !lua_isnil(L, def) && lua_type(L, def) == LUA_TBOOLEAN && !lua_toboolean(L, def);
        int set_default = !lua_isnil(L, def) && !drop_default;
        const char *sep = " ";
        kr_sql_alter_table(&b, schema, table, tlen);
        /* a new type converts the old default, which may not cast: a default being replaced goes
         * first (the server runs DROP DEFAULT before TYPE and SET DEFAULT after, whatever the order) */
        if (drop_default || (set_default && !lua_isnil(L, type))) {
            alter_action(&b, &sep, column, clen, " DROP DEFAULT");
        }
        if (!lua_isnil(L, type)) {
            alter_action(&b, &sep, column, clen, " TYPE ");
            kr_ddl_addtype(&b, type, 3, "opts.type");
            if (using != NULL) {
                kr_sql_adds(&b, " USING ");
                kr_sql_add(&b, using, ulen);
            }
        }
        if (set_default) {
            alter_action(&b, &sep, column, clen, " SET DEFAULT ");
            kr_ddl_addvalue(&b, def, 3, "opts.server_default");
        }
        if (nullable != -1) alter_action(&b, &sep, column, clen, nullable ? " DROP NOT NULL" : " SET NOT NULL");
        kr_ddl_emit(&b, list);
    }
    if (new_name != NULL) {
        kr_sql_alter_table(&b, schema, table, tlen);
        kr_sql_adds(&b, " RENAME COLUMN ");
        kr_sql_ident(&b, column, clen);
        kr_sql_adds(&b, " TO ");
        kr_sql_ident(&b, new_name, nlen);
        kr_ddl_emit(&b, list);
    }
    lua_settop(L, list);
    return 1;
}
