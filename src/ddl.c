/* kronos.core.ddl: pure functions that turn migration operations into SQL statements.
 * Every builder validates its arguments, raises naming the argument on misuse, and returns
 * an array of statements (no trailing semicolons) in execution order; no connection needed. */
#include <string.h>

#include "ddl_lua.h"

/* ddl.sql(text): a marker meaning "this is SQL, not a literal or a name". */
static int l_sql(lua_State *L)
{
    size_t len;
    const char *s = kr_ddl_checksqltext(L, 1, 1, "text", &len);
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, s, len);
    lua_setfield(L, -2, "sql");
    luaL_setmetatable(L, KR_DDL_SQL_CLASS);
    return 1;
}

static int l_is_sql(lua_State *L)
{
    lua_pushboolean(L, kr_ddl_tosql(L, 1, NULL) != NULL);
    return 1;
}

static int sql_tostring(lua_State *L)
{
    size_t len;
    const char *s = kr_ddl_tosql(L, 1, &len);
    if (s == NULL) kr_error_arg(L, 1, "ddl.sql() expected");
    lua_pushlstring(L, s, len);
    return 1;
}

static int l_quote_ident(lua_State *L)
{
    size_t len;
    const char *s = kr_ddl_checkname(L, 1, 1, "name", &len);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_sql_ident(&b, s, len);
    lua_pushlstring(L, b.p, b.n);
    return 1;
}

/* A literal as a DEFAULT would render it; a ddl.sql() marker passes through. */
static int l_quote_literal(lua_State *L)
{
    if (lua_isnone(L, 1)) kr_error_arg(L, 1, "value expected");
    kr_sql b;
    kr_sql_init(L, &b);
    kr_ddl_addvalue(&b, 1, 1, "value");
    lua_pushlstring(L, b.p, b.n);
    return 1;
}

static int l_parse_type(lua_State *L)
{
    kr_sql b;
    kr_sql_init(L, &b);
    kr_ddl_addtype(&b, 1, 1, "type");
    lua_pushlstring(L, b.p, b.n);
    return 1;
}

/* ddl.name(prefix, table[, names][, suffix]): the conventional name the builders use. */
static int l_name(lua_State *L)
{
    size_t plen, tlen;
    const char *prefix = kr_ddl_checkname(L, 1, 1, "prefix", &plen);
    const char *table = kr_ddl_checkname(L, 2, 2, "table", &tlen);
    int names = 0;
    if (!lua_isnoneornil(L, 3)) {
        kr_ddl_checknames(L, 3, 3, "names");
        names = 3;
    }
    const char *suffix = NULL;
    if (!lua_isnoneornil(L, 4)) {
        size_t slen;
        suffix = kr_ddl_checkname(L, 4, 4, "suffix", &slen);
    }
    (void)plen;
    kr_ddl_pushname(L, prefix, table, tlen, names, 0, suffix);
    return 1;
}

/* ddl.execute(sql) -> { sql }: raw SQL passed through, checked only for NUL bytes. */
static int l_execute(lua_State *L)
{
    size_t len;
    const char *s = kr_ddl_checksqltext(L, 1, 1, "sql", &len);
    lua_createtable(L, 1, 0);
    lua_pushlstring(L, s, len);
    lua_rawseti(L, -2, 1);
    return 1;
}

static const luaL_Reg ddl_funcs[] = {
    {"sql", l_sql},
    {"is_sql", l_is_sql},
    {"quote_ident", l_quote_ident},
    {"quote_literal", l_quote_literal},
    {"parse_type", l_parse_type},
    {"name", l_name},
    {"execute", l_execute},
    {"create_table", kr_ddl_create_table},
    {"drop_table", kr_ddl_drop_table},
    {"rename_table", kr_ddl_rename_table},
    {"add_column", kr_ddl_add_column},
    {"drop_column", kr_ddl_drop_column},
    {"alter_column", kr_ddl_alter_column},
    {"create_index", kr_ddl_create_index},
    {"drop_index", kr_ddl_drop_index},
    {"create_unique_constraint", kr_ddl_create_unique_constraint},
    {"create_check_constraint", kr_ddl_create_check_constraint},
    {"create_foreign_key", kr_ddl_create_foreign_key},
    {"create_primary_key", kr_ddl_create_primary_key},
    {"drop_constraint", kr_ddl_drop_constraint},
    {NULL, NULL}
};

static const luaL_Reg sql_meta[] = {
    {"__tostring", sql_tostring},
    {NULL, NULL}
};

void kr_open_ddl(lua_State *L)
{
    kr_newclass(L, KR_DDL_SQL_CLASS, NULL, sql_meta);
    lua_newtable(L);
    luaL_setfuncs(L, ddl_funcs, 0);
    lua_setfield(L, -2, "ddl");
}
