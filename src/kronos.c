/* kronos.core: assembles the parts of the module, and the connection class's one method table
 * from the files that implement its methods (none of them registers methods on the class). */
#include "kronos.h"

int luaopen_kronos_core(lua_State *L);

/* Every method of a connection, and the file that implements it (the prefix of its name). */
static const luaL_Reg conn_methods[] = {
    {"exec", kr_exec},
    {"exec_arrays", kr_exec_arrays},
    {"exec_columns", kr_exec_columns},
    {"script", kr_exec_script},
    {"rows", kr_stream_rows},
    {"transaction", kr_transaction},
    {"prepare", kr_statement_prepare},
    {"pipeline", kr_pipeline_run},
    {"copy_from", kr_copy_from},
    {"copy_to", kr_copy_to},
    {"on_notice", kr_notice_on},
    {"notifications", kr_notify_take},
    {"wait_for_notification", kr_notify_wait},
    {"set_decode", kr_decode_set},
    {"set_encode", kr_params_set_encode},
    {"close", kr_session_close},
    {"reset", kr_session_reset},
    {"status", kr_session_status},
    {"backend_pid", kr_session_backend_pid},
    {"server_version", kr_session_server_version},
    {"in_transaction", kr_session_in_transaction},
    {"escape_identifier", kr_session_escape_identifier},
    {"escape_literal", kr_session_escape_literal},
    {NULL, NULL},
};

static const luaL_Reg conn_meta[] = {
    {"__gc", kr_session_gc},
    {"__close", kr_session_gc},
    {"__tostring", kr_session_tostring},
    {NULL, NULL},
};

/* The module table: each part adds its functions and registers its classes; the connection
 * class and kronos.connect are registered here. */
int luaopen_kronos_core(lua_State *L)
{
    lua_newtable(L);
    kr_open_error(L);
    kr_open_params(L);
    kr_open_uuid(L);
    kr_open_conn(L);
    kr_newclass(L, KR_CONN_CLASS, conn_methods, conn_meta);
    lua_pushcfunction(L, kr_session_connect);
    lua_setfield(L, -2, "connect");
    kr_open_stream(L);
    kr_open_statement(L);
    kr_open_copy(L);
    kr_open_pipeline(L);
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
