/* kronos.core: assembles the parts of the module. */
#include "kronos.h"

int luaopen_kronos_core(lua_State *L);

int luaopen_kronos_core(lua_State *L)
{
    lua_newtable(L);
    kr_open_error(L);
    kr_open_params(L);
    kr_open_uuid(L);
    kr_open_conn(L);
    kr_open_notify(L);
    kr_open_statement(L);
    kr_open_copy(L);
    kr_open_pipeline(L);
    kr_open_array(L);
    kr_open_ddl(L);
    kr_open_migrate(L);
    kr_open_lint(L);
    kr_open_catalog(L);
    kr_open_users(L);
    /* kronos.null is a NULL light userdata, the same value as cjson.null and ngx.null. */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    lua_pushliteral(L, "0.1.0"); /* the release; the rockspec of a checkout is scm-1 */
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
