/* The loader's C side: the *.lua files of a migrations directory, and their checksums. */
#include <stdlib.h>
#include <string.h>
#include <dirent.h>

#include "migrate.h"
#include "sha256.h"

typedef struct dirbox { DIR *d; } dirbox;

static int dir_gc(lua_State *L)
{
    dirbox *db = (dirbox *)lua_touserdata(L, 1);
    if (db->d) closedir(db->d);
    db->d = NULL;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* core.migrate.scan(dir) -> the *.lua file names in dir, sorted | nil, err */
int kr_migrate_scan(lua_State *L)
{
    size_t dlen;
    const char *dir = kr_checktext(L, 1, &dlen, "the directory");
    dirbox *db = (dirbox *)lua_newuserdata(L, sizeof(dirbox));
    db->d = NULL;
    luaL_setmetatable(L, KR_MIGRATE_DIR_CLASS);
    db->d = opendir(dir);
    if (db->d == NULL) return kr_error_return(L, "no_migrations", "cannot read the migrations directory %s", dir);
    lua_newtable(L);
    int names = lua_gettop(L), n = 0;
    struct dirent *e;
    while ((e = readdir(db->d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, names, ++n);
    }
    closedir(db->d);
    db->d = NULL;
    const char **v = (const char **)lua_newuserdata(L, sizeof(char *) * ((size_t)n + 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, names, i + 1);
        v[i] = lua_tostring(L, -1);
        lua_pop(L, 1); /* names keeps it */
    }
    qsort(v, (size_t)n, sizeof v[0], cmp_names);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* core.migrate.sha256(s) -> hex digest (the checksum of a migration file) */
int kr_migrate_sha256(lua_State *L)
{
    size_t len;
    const char *s = kr_checkbytes(L, 1, &len);
    char hex[65];
    kr_sha256_hex(s, len, hex);
    lua_pushstring(L, hex);
    return 1;
}

void kr_migrate_files_open(lua_State *L)
{
    static const luaL_Reg dir_meta[] = {{"__gc", dir_gc}, {NULL, NULL}};
    kr_newclass(L, KR_MIGRATE_DIR_CLASS, NULL, dir_meta);
}
