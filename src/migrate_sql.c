/* SQL text for the version table and the migration lock. It is also produced offline (--sql),
 * so the quoting here needs no connection. */
#include <string.h>

#include "migrate.h"
#include "sha256.h"

void kr_push_ident(lua_State *L, const char *name)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, '"');
    for (const char *p = name; *p; p++) {
        if (*p == '"') luaL_addchar(&b, '"');
        luaL_addchar(&b, *p);
    }
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
}

/* E'...' with doubled backslashes reads the same whatever standard_conforming_strings says. */
void kr_push_literal(lua_State *L, const char *value)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (strchr(value, '\\')) luaL_addchar(&b, 'E');
    luaL_addchar(&b, '\'');
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\') luaL_addchar(&b, *p);
        luaL_addchar(&b, *p);
    }
    luaL_addchar(&b, '\'');
    luaL_pushresult(&b);
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
