/* Index and constraint builders: create_index, drop_index, create_unique_constraint,
 * create_check_constraint, create_foreign_key, create_primary_key, drop_constraint. */
#include <stdio.h>
#include <string.h>

#include "ddl_lua.h"
#include "utf8.h"

/* The name argument at 1: given, or NULL when nil (a conventional one is made). */
static const char *optional_name(lua_State *L, size_t *len)
{
    if (lua_isnoneornil(L, 1)) return NULL;
    return kr_ddl_checkname(L, 1, 1, "name", len);
}

/* ---- indexes ---- */

static const char *const create_index_keys[] = {
    "schema", "unique", "where", "using", "concurrently", "if_not_exists", NULL
};

/* An index method is a plain name (btree, gin, an extension's); lowercased, then quoted. */
static void add_method(kr_sql *b, const char *s, size_t len, int arg)
{
    char m[KR_DDL_NAMEMAX + 1];
    int ok = len > 0 && len <= KR_DDL_NAMEMAX && !(s[0] >= '0' && s[0] <= '9');
    for (size_t i = 0; ok && i < len; i++) {
        char c = kr_utf8_lower(s[i]);
        ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        m[i] = c;
    }
    if (!ok) kr_error_arg(b->L, arg, "opts.using: index method name (btree, hash, gin, gist, brin, ...) expected, got \"%s\"", s);
    kr_sql_adds(b, " USING ");
    kr_sql_ident(b, m, len);
}

static void add_index_target(kr_sql *b, int idx, int arg, const char *path)
{
    size_t len;
    const char *expr = kr_ddl_tosql(b->L, idx, &len);
    if (expr != NULL) {
        kr_sql_add(b, "(", 1);
        kr_sql_add(b, expr, len);
        kr_sql_add(b, ")", 1);
        return;
    }
    const char *name = kr_ddl_checkname(b->L, idx, arg, path, &len);
    kr_sql_ident(b, name, len);
}

/* {"email", desc = true, nulls = "last", opclass = "text_pattern_ops"} */
static void add_index_item_table(kr_sql *b, int idx, int arg, const char *path)
{
    lua_State *L = b->L;
    char sub[96];
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        int ok = lua_type(L, -1) == LUA_TSTRING
                 ? (strcmp(lua_tostring(L, -1), "desc") == 0 || strcmp(lua_tostring(L, -1), "nulls") == 0 ||
                    strcmp(lua_tostring(L, -1), "opclass") == 0)
                 : (kr_isinteger(L, -1) && kr_tointeger(L, -1) == 1);
        if (!ok) {
            const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
            kr_error_arg(L, arg, "%s: unknown key \"%s\" (expected [1], desc, nulls, opclass)", path, k);
        }
    }
    lua_rawgeti(L, idx, 1);
    if (lua_isnil(L, -1)) kr_error_arg(L, arg, "%s[1]: column name or ddl.sql() expected", path);
    snprintf(sub, sizeof sub, "%s[1]", path);
    add_index_target(b, lua_gettop(L), arg, sub);
    lua_pop(L, 1);
    size_t len;
    const char *opclass = kr_ddl_optname(L, idx, arg, path, "opclass", &len);
    if (opclass != NULL) {
        kr_sql_add(b, " ", 1);
        kr_sql_ident(b, opclass, len);
    }
    if (kr_option_bool(L, idx, arg, path, "desc", 0)) kr_sql_adds(b, " DESC");
    const char *nulls = kr_option_string(L, idx, arg, path, "nulls", &len);
    if (nulls != NULL) {
        if (kr_utf8_ieq(nulls, len, "first")) kr_sql_adds(b, " NULLS FIRST");
        else if (kr_utf8_ieq(nulls, len, "last")) kr_sql_adds(b, " NULLS LAST");
        else kr_error_arg(L, arg, "%s.nulls: expected \"first\" or \"last\"", path);
    }
}

/* Appends (item, ...); returns 1 when every item names a column (a default name is possible). */
static int add_index_items(kr_sql *b, int idx, int arg)
{
    lua_State *L = b->L;
    int n = kr_ddl_checkarray(L, idx, arg, "columns"), named = 1;
    kr_sql_add(b, "(", 1);
    for (int i = 1; i <= n; i++) {
        char path[32];
        snprintf(path, sizeof path, "columns[%d]", i);
        if (i > 1) kr_sql_add(b, ", ", 2);
        lua_rawgeti(L, idx, i);
        int item = lua_gettop(L);
        if (lua_type(L, item) == LUA_TTABLE && kr_ddl_tosql(L, item, NULL) == NULL) {
            add_index_item_table(b, item, arg, path);
            lua_rawgeti(L, item, 1);
            named = named && lua_type(L, -1) == LUA_TSTRING;
            lua_pop(L, 1);
        } else {
            named = named && lua_type(L, item) == LUA_TSTRING;
            add_index_target(b, item, arg, path);
        }
        lua_pop(L, 1);
    }
    kr_sql_add(b, ")", 1);
    return named;
}

int kr_ddl_create_index(lua_State *L)
{
    size_t nlen = 0, tlen, slen, len;
    kr_checkstack(L, 20);
    const char *name = optional_name(L, &nlen);
    const char *table = kr_ddl_checkname(L, 2, 2, "table", &tlen);
    int opts = kr_option_check(L, 4, "opts", create_index_keys);
    const char *schema = kr_ddl_optname(L, opts, 4, "opts", "schema", &slen);
    int unique = kr_option_bool(L, opts, 4, "opts", "unique", 0);
    int concurrently = kr_option_bool(L, opts, 4, "opts", "concurrently", 0);
    int if_not_exists = kr_option_bool(L, opts, 4, "opts", "if_not_exists", 0);
    const char *method = kr_option_string(L, opts, 4, "opts", "using", &len);
    const char *where = NULL;
    size_t wlen = 0;
    if (opts) {
        kr_option_field(L, opts, "where");
        if (!lua_isnil(L, -1)) where = kr_ddl_checksqltext(L, -1, 4, "opts.where", &wlen);
        lua_pop(L, 1);
    }

    lua_newtable(L);
    int list = lua_gettop(L);
    kr_sql items, b;
    kr_sql_init(L, &items);
    int named = add_index_items(&items, 3, 3);
    if (name == NULL) {
        if (!named) kr_error_arg(L, 1, "name: required when the index has an expression");
        name = kr_ddl_pushname(L, "ix", table, tlen, 3, 0, NULL);
        nlen = strlen(name);
    }
    kr_sql_init(L, &b);
    kr_ddl_clause_index(&b, unique, concurrently, if_not_exists, name, nlen);
    kr_sql_qualified(&b, schema, table, tlen);
    if (method != NULL) add_method(&b, method, len, 4);
    kr_sql_add(&b, " ", 1);
    kr_sql_add(&b, items.p, items.n);
    if (where != NULL) {
        kr_sql_adds(&b, " WHERE ");
        kr_sql_add(&b, where, wlen);
    }
    kr_ddl_emit(&b, list);
    lua_settop(L, list);
    return 1;
}

static const char *const drop_index_keys[] = {"schema", "concurrently", "if_exists", "cascade", NULL};

int kr_ddl_drop_index(lua_State *L)
{
    size_t nlen, slen;
    const char *name = kr_ddl_checkname(L, 1, 1, "name", &nlen);
    int opts = kr_option_check(L, 2, "opts", drop_index_keys);
    const char *schema = kr_ddl_optname(L, opts, 2, "opts", "schema", &slen);
    int concurrently = kr_option_bool(L, opts, 2, "opts", "concurrently", 0);
    int if_exists = kr_option_bool(L, opts, 2, "opts", "if_exists", 0);
    int cascade = kr_option_bool(L, opts, 2, "opts", "cascade", 0);
    if (concurrently && cascade) kr_error_arg(L, 2, "opts.cascade: DROP INDEX CONCURRENTLY cannot cascade");
    lua_newtable(L);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_ddl_clause_drop(&b, concurrently ? "INDEX CONCURRENTLY" : "INDEX", if_exists, schema, name, nlen, cascade);
    kr_ddl_emit(&b, -2);
    lua_pop(L, 1);
    return 1;
}

/* ---- constraints ---- */

/* Starts 'ALTER TABLE t ADD CONSTRAINT "name" ' in b; the name is given or made. */
static void add_constraint_head(kr_sql *b, const char *schema, const char *table, size_t tlen,
                                const char *name, size_t nlen)
{
    kr_sql_alter_table(b, schema, table, tlen);
    kr_sql_adds(b, " ADD ");
    kr_ddl_clause_name(b, name, nlen);
}

static int finish(lua_State *L, kr_sql *b, int list)
{
    kr_ddl_emit(b, list);
    lua_settop(L, list);
    return 1;
}

static const char *const keyed_keys[] = {"schema", NULL};

/* create_unique_constraint and create_primary_key: (name|nil, table, columns, opts) */
static int keyed_constraint(lua_State *L, const char *prefix, const char *kind)
{
    size_t nlen = 0, tlen, slen;
    const char *name = optional_name(L, &nlen);
    const char *table = kr_ddl_checkname(L, 2, 2, "table", &tlen);
    kr_ddl_checknames(L, 3, 3, "columns");
    int opts = kr_option_check(L, 4, "opts", keyed_keys);
    const char *schema = kr_ddl_optname(L, opts, 4, "opts", "schema", &slen);
    lua_newtable(L);
    int list = lua_gettop(L);
    kr_sql b;
    kr_sql_init(L, &b);
    if (name == NULL) {
        name = kr_ddl_pushname(L, prefix, table, tlen, strcmp(prefix, "pk") == 0 ? 0 : 3, 0, NULL);
        nlen = strlen(name);
    }
    add_constraint_head(&b, schema, table, tlen, name, nlen);
    kr_ddl_clause_key(&b, kind, 3, 3, "columns");
    return finish(L, &b, list);
}

int kr_ddl_create_unique_constraint(lua_State *L)
{
    return keyed_constraint(L, "uq", "UNIQUE");
}

int kr_ddl_create_primary_key(lua_State *L)
{
    return keyed_constraint(L, "pk", "PRIMARY KEY");
}

static const char *const check_keys[] = {"schema", "column_hint", "not_valid", NULL};

int kr_ddl_create_check_constraint(lua_State *L)
{
    size_t nlen = 0, tlen, slen, clen, hlen;
    const char *name = optional_name(L, &nlen);
    const char *table = kr_ddl_checkname(L, 2, 2, "table", &tlen);
    const char *cond = kr_ddl_checksqltext(L, 3, 3, "condition", &clen);
    int opts = kr_option_check(L, 4, "opts", check_keys);
    const char *schema = kr_ddl_optname(L, opts, 4, "opts", "schema", &slen);
    const char *hint = kr_ddl_optname(L, opts, 4, "opts", "column_hint", &hlen);
    int not_valid = kr_option_bool(L, opts, 4, "opts", "not_valid", 0);
    if (name == NULL) {
        if (hint == NULL) kr_error_arg(L, 1, "name: required for a check constraint (or opts.column_hint, to name it ck_<table>_<column_hint>)");
        name = kr_ddl_pushname(L, "ck", table, tlen, 0, 0, hint);
        nlen = strlen(name);
    }
    lua_newtable(L);
    int list = lua_gettop(L);
    kr_sql b;
    kr_sql_init(L, &b);
    add_constraint_head(&b, schema, table, tlen, name, nlen);
    kr_ddl_clause_check(&b, cond, clen);
    if (not_valid) kr_sql_adds(&b, " NOT VALID");
    return finish(L, &b, list);
}

static const char *const fk_keys[] = {
    "schema", "referent_schema", "ondelete", "onupdate", "deferrable", "initially", "not_valid", NULL
};

/* (name|nil, source_table, referent_table, local_cols, remote_cols, opts) */
int kr_ddl_create_foreign_key(lua_State *L)
{
    size_t nlen = 0, tlen, rlen, slen, rslen;
    const char *name = optional_name(L, &nlen);
    const char *table = kr_ddl_checkname(L, 2, 2, "source_table", &tlen);
    const char *ref = kr_ddl_checkname(L, 3, 3, "referent_table", &rlen);
    kr_ddl_checkarray(L, 4, 4, "local_cols");
    kr_ddl_checkarray(L, 5, 5, "remote_cols");
    int opts = kr_option_check(L, 6, "opts", fk_keys);
    const char *schema = kr_ddl_optname(L, opts, 6, "opts", "schema", &slen);
    const char *ref_schema = kr_ddl_optname(L, opts, 6, "opts", "referent_schema", &rslen);
    int not_valid = kr_option_bool(L, opts, 6, "opts", "not_valid", 0);
    lua_newtable(L);
    int list = lua_gettop(L);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_sql body;   /* rendered first: it validates the column names the default name uses */
    kr_sql_init(L, &body);
    kr_ddl_arg local = {4, 4, "local_cols"}, remote = {5, 5, "remote_cols"}, acts = {opts, 6, "opts"};
    kr_ddl_clause_fk(&body, local, remote, ref_schema, ref, rlen, acts);
    if (name == NULL) {
        name = kr_ddl_pushname(L, "fk", table, tlen, 4, 1, ref);
        nlen = strlen(name);
    }
    add_constraint_head(&b, schema, table, tlen, name, nlen);
    kr_sql_add(&b, body.p, body.n);
    if (not_valid) kr_sql_adds(&b, " NOT VALID");
    return finish(L, &b, list);
}

int kr_ddl_drop_constraint(lua_State *L)
{
    return kr_ddl_drop_member(L, "CONSTRAINT", 2, "name");
}
