/* Argument checking and SQL assembly shared by the DDL builders. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ddl_lua.h"
#include "convert.h"

/* ---- the buffer ---- */

void kr_sql_init(lua_State *L, kr_sql *b)
{
    b->L = L;
    b->cap = 256;
    b->n = 0;
    b->p = (char *)lua_newuserdata(L, b->cap);
    b->slot = lua_gettop(L);
}

/* Room for len more bytes. */
static char *reserve(kr_sql *b, size_t len)
{
    if (len > b->cap - b->n) {
        size_t cap = b->cap * 2;
        if (cap - b->n < len) cap = b->n + len;
        char *p = (char *)lua_newuserdata(b->L, cap);
        memcpy(p, b->p, b->n);
        lua_replace(b->L, b->slot);
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->n;
}

void kr_sql_add(kr_sql *b, const char *s, size_t len)
{
    memcpy(reserve(b, len), s, len);
    b->n += len;
}

void kr_sql_adds(kr_sql *b, const char *s)
{
    kr_sql_add(b, s, strlen(s));
}

void kr_sql_ident(kr_sql *b, const char *name, size_t len)
{
    char q[KR_DDL_QUOTEDMAX + 1];
    int n = kr_ddl_quote_ident(name, len, q, sizeof q);
    if (n < 0) kr_error_raise(b->L, "internal", "kronos.ddl: unchecked name (%s)", kr_ddl_strerror(n));
    kr_sql_add(b, q, (size_t)n);
}

void kr_sql_qualified(kr_sql *b, const char *schema, const char *name, size_t len)
{
    if (schema != NULL) {
        kr_sql_ident(b, schema, strlen(schema));
        kr_sql_add(b, ".", 1);
    }
    kr_sql_ident(b, name, len);
}

void kr_sql_alter_table(kr_sql *b, const char *schema, const char *table, size_t tlen)
{
    kr_sql_adds(b, "ALTER TABLE ");
    kr_sql_qualified(b, schema, table, tlen);
}

void kr_ddl_emit(kr_sql *b, int list_idx)
{
    list_idx = lua_absindex(b->L, list_idx);
    lua_pushlstring(b->L, b->p, b->n);
    lua_rawseti(b->L, list_idx, (int)lua_rawlen(b->L, list_idx) + 1);
    b->n = 0;
}

/* ---- errors and argument checking ---- */

const char *kr_ddl_checkname(lua_State *L, int idx, int arg, const char *path, size_t *len)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        kr_error_arg(L, arg, "%s: name (string) expected, got %s", path, luaL_typename(L, idx));
    const char *s = lua_tolstring(L, idx, len);
    char q[KR_DDL_QUOTEDMAX + 1];
    int rc = kr_ddl_quote_ident(s, *len, q, sizeof q);
    if (rc < 0) kr_error_arg(L, arg, "%s: %s", path, kr_ddl_strerror(rc));
    return s;
}

static void subpath(char *out, size_t outsz, const char *path, const char *key)
{
    snprintf(out, outsz, "%s.%s", path, key);
}

const char *kr_ddl_optname(lua_State *L, int tidx, int arg, const char *path, const char *key, size_t *len)
{
    const char *s = NULL;
    if (tidx == 0) return NULL;
    if (kr_option_field(L, tidx, key) != LUA_TNIL) {
        char sub[128];
        subpath(sub, sizeof sub, path, key);
        s = kr_ddl_checkname(L, -1, arg, sub, len);
    }
    lua_pop(L, 1);
    return s;
}

int kr_ddl_checkarray(lua_State *L, int idx, int arg, const char *path)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE || kr_ddl_tosql(L, idx, NULL) != NULL)
        kr_error_arg(L, arg, "%s: array expected, got %s", path, luaL_typename(L, idx));
    int n = (int)lua_rawlen(L, idx), count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
    }
    if (n == 0) kr_error_arg(L, arg, "%s: must not be empty", path);
    if (count != n) kr_error_arg(L, arg, "%s: array expected (it has non-sequence keys)", path);
    return n;
}

/* ---- raw SQL ---- */

const char *kr_ddl_tosql(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) != LUA_TTABLE || !kr_testclass(L, idx, KR_DDL_SQL_CLASS)) return NULL;
    kr_option_field(L, idx, "sql");
    size_t l = 0;
    const char *s = lua_tolstring(L, -1, &l);
    lua_pop(L, 1);  /* the marker holds the string */
    if (len) *len = l;
    return s;
}

static int blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') return 0;
    return 1;
}

const char *kr_ddl_checksqltext(lua_State *L, int idx, int arg, const char *path, size_t *len)
{
    const char *s = kr_ddl_tosql(L, idx, len);
    if (s == NULL) {
        if (lua_type(L, idx) != LUA_TSTRING)
            kr_error_arg(L, arg, "%s: SQL text (string or ddl.sql()) expected, got %s", path, luaL_typename(L, idx));
        s = lua_tolstring(L, idx, len);
    }
    if (s == NULL || blank(s, *len)) kr_error_arg(L, arg, "%s: SQL text must not be empty", path);
    if (memchr(s, '\0', *len) != NULL) kr_error_arg(L, arg, "%s: SQL text must not contain a NUL byte", path);
    return s;
}

/* ---- types, values, name lists ---- */

void kr_ddl_addtype(kr_sql *b, int idx, int arg, const char *path)
{
    lua_State *L = b->L;
    size_t len;
    const char *raw = kr_ddl_tosql(L, idx, &len);
    if (raw != NULL) {   /* the author's own type (an enum, a domain, citext): trusted SQL */
        kr_sql_add(b, raw, len);
        return;
    }
    if (lua_type(L, idx) != LUA_TSTRING)
        kr_error_arg(L, arg, "%s: type name (string) or ddl.sql() expected, got %s", path, luaL_typename(L, idx));
    const char *s = lua_tolstring(L, idx, &len);
    char t[KR_DDL_TYPEMAX];
    int n = kr_ddl_parse_type(s, len, t, sizeof t);
    if (n == KR_DDL_ERANGE) kr_error_arg(L, arg, "%s: type modifier out of range in \"%s\"", path, s);
    if (n < 0)
        kr_error_arg(L, arg, "%s: unknown type \"%s\" (a type kronos does not list passes as raw SQL: op.sql(\"%s\"))",
                     path, s, s);
    kr_sql_add(b, t, (size_t)n);
}

static void addnumber(kr_sql *b, int idx, int arg, const char *path)
{
    char num[KR_DOUBLE_MAX];
    if (kr_isinteger(b->L, idx)) {
        snprintf(num, sizeof num, "%lld", kr_tointeger(b->L, idx));
    } else {
        double v = (double)lua_tonumber(b->L, idx);
        if (!isfinite(v)) kr_error_arg(b->L, arg, "%s: number must be finite", path);
        kr_format_double(v, num);   /* the one number formatter: as a parameter would send it */
    }
    kr_sql_adds(b, num);
}

void kr_ddl_addvalue(kr_sql *b, int idx, int arg, const char *path)
{
    lua_State *L = b->L;
    size_t len;
    const char *raw = kr_ddl_tosql(L, idx, &len);
    if (raw != NULL) {
        kr_sql_add(b, raw, len);
        return;
    }
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, idx, &len);
        long need = kr_ddl_quote_literal(s, len, NULL, 0);
        if (need < 0) kr_error_arg(L, arg, "%s: string %s", path, kr_ddl_strerror((int)need));
        char *out = reserve(b, (size_t)need + 1);
        kr_ddl_quote_literal(s, len, out, (size_t)need + 1);
        b->n += (size_t)need;
        return;
    }
    case LUA_TNUMBER:
        addnumber(b, idx, arg, path);
        return;
    case LUA_TBOOLEAN:
        kr_sql_adds(b, lua_toboolean(L, idx) ? "true" : "false");
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {   /* kronos.null */
            kr_sql_adds(b, "NULL");
            return;
        }
        break;
    default:
        break;
    }
    kr_error_arg(L, arg, "%s: literal (string, number, boolean, kronos.null) or ddl.sql() expected, got %s",
                 path, luaL_typename(L, idx));
}

/* Checks an array of names; with b, appends them as ("a", "b"). */
static int names(lua_State *L, kr_sql *b, int idx, int arg, const char *path)
{
    idx = lua_absindex(L, idx);
    int n = kr_ddl_checkarray(L, idx, arg, path);
    if (b) kr_sql_add(b, "(", 1);
    for (int i = 1; i <= n; i++) {
        char sub[128];
        size_t len;
        snprintf(sub, sizeof sub, "%s[%d]", path, i);
        lua_rawgeti(L, idx, i);
        const char *name = kr_ddl_checkname(L, -1, arg, sub, &len);
        if (b && i > 1) kr_sql_add(b, ", ", 2);
        if (b) kr_sql_ident(b, name, len);
        lua_pop(L, 1);
    }
    if (b) kr_sql_add(b, ")", 1);
    return n;
}

int kr_ddl_checknames(lua_State *L, int idx, int arg, const char *path)
{
    return names(L, NULL, idx, arg, path);
}

void kr_ddl_addnames(kr_sql *b, int idx, int arg, const char *path)
{
    names(b->L, b, idx, arg, path);
}

/* The name an entry of a names array contributes: a string, or the first element of a table
 * ({"email", desc = true}); NULL for anything else (a ddl.sql() expression). */
static const char *entry_name(lua_State *L, int idx, size_t *len)
{
    if (lua_type(L, idx) == LUA_TSTRING) return lua_tolstring(L, idx, len);
    if (lua_type(L, idx) == LUA_TTABLE && kr_ddl_tosql(L, idx, NULL) == NULL) {
        lua_rawgeti(L, idx, 1);
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, len) : NULL;
        lua_pop(L, 1);  /* the table holds it */
        return s;
    }
    return NULL;
}

const char *kr_ddl_pushname(lua_State *L, const char *prefix, const char *table, size_t tlen,
                            int names_idx, int limit, const char *suffix)
{
    kr_sql b;
    names_idx = names_idx ? lua_absindex(L, names_idx) : 0;
    kr_sql_init(L, &b);
    kr_sql_adds(&b, prefix);
    kr_sql_add(&b, "_", 1);
    kr_sql_add(&b, table, tlen);
    int n = names_idx ? (int)lua_rawlen(L, names_idx) : 0;
    if (limit > 0 && n > limit) n = limit;
    for (int i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, names_idx, i);
        const char *name = entry_name(L, -1, &len);
        if (name != NULL) {
            kr_sql_add(&b, "_", 1);
            kr_sql_add(&b, name, len);
        }
        lua_pop(L, 1);
    }
    if (suffix != NULL) {
        kr_sql_add(&b, "_", 1);
        kr_sql_adds(&b, suffix);
    }
    char out[KR_DDL_NAMEMAX + 1];
    int rc = kr_ddl_fit_name(b.p, b.n, out, sizeof out);
    lua_pop(L, 1);
    if (rc < 0) kr_error_raise(L, "internal", "kronos.ddl: cannot form a name (%s)", kr_ddl_strerror(rc));
    lua_pushlstring(L, out, (size_t)rc);
    return lua_tostring(L, -1);
}
