/* kronos.core.migrate: the migration engine's entry points. The engine's files and their order
 * are listed in migrate.h; lua/kronos/migrate.lua loads the migration files and assembles the API. */
#include "migrate.h"

/* core.migrate.run: the run, given the op proxy's maker (see kr_op_maker). */
static int l_run(lua_State *L)
{
    return kr_migrate_run(L, kr_op_make);
}

void kr_open_migrate(lua_State *L)
{
    kr_migrate_files_open(L);
    static const luaL_Reg fns[] = {
        {"run", l_run},                {"status", kr_migrate_status},     {"repair", kr_migrate_repair},
        {"scan", kr_migrate_scan},     {"sha256", kr_migrate_sha256},     {"lock_key", kr_migrate_lock_key},
        {"terminator", kr_migrate_terminator}, {NULL, NULL},
    };
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "migrate");
}
