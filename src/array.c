#include "kronos.h"
int kr_array_decodes(kr_conn *c, Oid type) { (void)c; (void)type; return 0; }
void kr_array_push(lua_State *L, kr_conn *c, Oid type, const char *s, size_t len) { (void)c; (void)type; lua_pushlstring(L, s, len); }
void kr_open_array(lua_State *L) { (void)L; }
const char *kr_array_literal(lua_State *L, kr_conn *c, int idx, int pos, size_t *len) { (void)c; (void)idx; (void)pos; lua_pushliteral(L, "{}"); return lua_tolstring(L, -1, len); }
const char *kr_json_encode(lua_State *L, kr_conn *c, int idx, int pos, size_t *len) { (void)c; (void)idx; (void)pos; lua_pushliteral(L, "null"); return lua_tolstring(L, -1, len); }
