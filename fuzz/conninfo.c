// fuzz-link: src/*.c -llua5.4 -lpq
/* libFuzzer target: kronos.connect's conninfo handling (src/session.c) with hostile strings.
 * Input: byte 0 picks how the password travels, then "password\0rest". Every attempt is
 * pinned to a Unix socket in a directory that does not exist, so nothing leaves the process;
 * inputs that name another host, a host address or a service file are skipped.
 * Properties: no crash or leak; connect returns nil and an error whose message holds no
 * password (the one given, the one libpq parses out of the string, PGPASSWORD). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "fuzz.h"
#include "kronos.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int luaopen_kronos_core(lua_State *L);

/* Nothing from the environment may point libpq elsewhere or carry another password. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const vars[] = {"DATABASE_URL", "PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE",
                                       "PGPASSWORD", "PGPASSFILE", "PGHOST", "PGSSLMODE", NULL};
    for (int i = 0; vars[i]; i++) unsetenv(vars[i]);
    setenv("PGCONNECT_TIMEOUT", "2", 1);
    return 0;
}

#define NOWHERE "/nonexistent/kronos-fuzz"

/* A string that could send libpq elsewhere than NOWHERE (or read a service file) is skipped. */
static int stays_local(const char *conninfo, int host_pinned)
{
    if (strstr(conninfo, "hostaddr") || strstr(conninfo, "service") || strstr(conninfo, "passfile")) return 0;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (err) PQfreemem(err);
    if (opts == NULL) return 1; /* libpq will refuse it before any connection */
    int ok = 1;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (!host_pinned && strcmp(o->keyword, "host") == 0 && o->val && strcmp(o->val, NOWHERE) != 0) ok = 0;
    PQconninfoFree(opts);
    return ok;
}

/* Fixed text that a message may hold whatever the password: kronos's own sentences and the
 * socket path. A secret found only inside them is no leak, so they are blanked out first. */
static void blank_fixed_text(char *msg)
{
    static const char *const fixed[] = {NOWHERE "/.s.PGSQL.5432",
        "invalid connection string (libpq's message is not shown: the string holds a password)", NULL};
    for (int i = 0; fixed[i]; i++)
        for (char *hit; (hit = strstr(msg, fixed[i])) != NULL;) memset(hit, '\n', strlen(fixed[i]));
}

/* Short secrets ("a") are everywhere in English; a secret is checked from 8 bytes on. */
static int checkable(const char *secret)
{
    return secret && strlen(secret) >= 8 && !strchr(secret, '*') && !strchr(secret, '\n');
}

/* Every password libpq itself would take out of the string. */
static void check_parsed_passwords(const char *conninfo, const char *msg)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (err) PQfreemem(err);
    if (opts == NULL) return;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && checkable(o->val))
            CHECK(strstr(msg, o->val) == NULL);
    PQconninfoFree(opts);
}

static char *connect_error(lua_State *L)
{
    int ok = lua_pcall(L, 1, 2, 0);
    if (ok != 0) return NULL; /* raised: misuse (e.g. too many keywords), not a connection */
    CHECK(lua_isnil(L, -2)); /* nothing listens at NOWHERE */
    CHECK(lua_istable(L, -1));
    lua_getfield(L, -1, "message");
    CHECK(lua_type(L, -1) == LUA_TSTRING);
    char *msg = strdup(lua_tostring(L, -1));
    if (msg == NULL) abort();
    blank_fixed_text(msg);
    return msg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 4096) return 0;
    char *buf = malloc(size);
    if (buf == NULL) abort();
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    const char *password = buf;                         /* up to the first NUL */
    size_t plen = strlen(password);
    const char *rest = plen + 1 < size - 1 ? buf + plen + 1 : "";
    int mode = data[0] % 4;

    lua_State *L = luaL_newstate();
    if (L == NULL) abort();
    luaopen_kronos_core(L);
    lua_getfield(L, -1, "connect");
    luaL_Buffer b;
    const char *conninfo = NULL;
    switch (mode) {
    case 0: /* keyword string: password=<raw> <rest> host=NOWHERE */
    case 1: /* URI: postgresql://user:<raw>@/db?<rest>&host=NOWHERE */
        luaL_buffinit(L, &b);
        luaL_addstring(&b, mode == 0 ? "password=" : "postgresql://user:");
        luaL_addstring(&b, password);
        luaL_addstring(&b, mode == 0 ? " " : "@/db?");
        luaL_addstring(&b, rest);
        luaL_addstring(&b, mode == 0 ? " host=" NOWHERE : "&host=" NOWHERE);
        luaL_pushresult(&b);
        conninfo = lua_tostring(L, -1);
        break;
    case 2: /* a table: {url = <rest>, password = <raw>, host = NOWHERE} */
        lua_createtable(L, 0, 3);
        lua_pushstring(L, rest);
        lua_setfield(L, -2, "url");
        lua_pushstring(L, password);
        lua_setfield(L, -2, "password");
        lua_pushliteral(L, NOWHERE);
        lua_setfield(L, -2, "host");
        conninfo = rest;
        break;
    default: /* PGPASSWORD=<raw>, the string <rest> host=NOWHERE */
        if (*password) setenv("PGPASSWORD", password, 1);
        lua_pushfstring(L, "%s host=" NOWHERE, rest);
        conninfo = lua_tostring(L, -1);
    }
    if (stays_local(conninfo, mode == 2)) {
        char *msg = connect_error(L);
        if (msg) {
            if (checkable(password)) CHECK(strstr(msg, password) == NULL);
            check_parsed_passwords(conninfo, msg);
            free(msg);
        }
    }
    unsetenv("PGPASSWORD");
    lua_close(L);
    free(buf);
    return 0;
}
