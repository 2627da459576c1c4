/* SQL text for the version table and the migration lock. It is also produced offline (--sql),
 * so the quoting here needs no connection. */
#include <stdio.h>
#include <string.h>

#include "migrate.h"
#include "option.h"
#include "sha256.h"
#include "ddl.h"

/* Pushes s quoted by the one quoting kernel (ddl_text.c's kr_ddl_quote). */
static void push_quoted(lua_State *L, char quote, const char *s)
{
    size_t len = strlen(s), need = kr_ddl_quote(quote, s, len, NULL, 0);
    char small[256], *out = need < sizeof small ? small : (char *)lua_newuserdata(L, need + 1);
    kr_ddl_quote(quote, s, len, out, need + 1);
    lua_pushlstring(L, out, need);
    if (out != small) lua_remove(L, -2);
}

static void push_ident(lua_State *L, const char *name)
{
    push_quoted(L, '"', name);
}

void kr_push_literal(lua_State *L, const char *value)
{
    push_quoted(L, '\'', value);
}

/* The advisory lock key: the first 8 bytes of SHA-256("kronos:" .. table name), big-endian,
 * as a signed bigint. Stable across PostgreSQL versions, unlike hashtext(). */
long long kr_lock_key(const char *version_table)
{
    size_t len = strlen(version_table);
    char buf[512];
    unsigned char d[32];
    if (len > sizeof buf - 8) len = sizeof buf - 8; /* names are at most 63 bytes; longer ones are rejected earlier */
    memcpy(buf, "kronos:", 7);
    memcpy(buf + 7, version_table, len);
    kr_sha256(buf, len + 7, d);
    unsigned long long k = 0;
    for (int i = 0; i < 8; i++) k = k << 8 | d[i];
    /* two's complement without implementation-defined conversion */
    return k <= 0x7fffffffffffffffULL ? (long long)k : -(long long)(~k) - 1;
}

/* core.migrate.lock_key(name): the lock key as a decimal string (exact under LuaJIT too). */
int kr_migrate_lock_key(lua_State *L)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", kr_lock_key(kr_opttext(L, 1, "kronos_version", "the version table name")));
    lua_pushstring(L, buf);
    return 1;
}

/* The version table every run and status read uses: opts.version_table (the options table at
 * stack index opts, the caller's first argument), 1 to 63 bytes (what PostgreSQL keeps of an
 * identifier; a longer name would be truncated silently). Pushes it quoted; returns it raw. */
const char *kr_version_table(lua_State *L, int opts)
{
    size_t len = 0;
    const char *name = kr_option_string(L, opts, 1, "opts", "version_table", &len);
    if (name == NULL) {
        name = "kronos_version";
        len = strlen(name);
    }
    if (len == 0 || len > 63) kr_error_arg(L, 1, "opts.version_table: must be 1 to 63 bytes long, got %d", (int)len);
    push_ident(L, name);
    return name;
}

/* core.migrate.terminator(sql) -> what follows the statement in the offline script. */
int kr_migrate_terminator(lua_State *L)
{
    lua_pushstring(L, kr_sqlscan_terminator(kr_checksql(L, 1)));
    return 1;
}
