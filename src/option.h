/* The one reader of option tables: a table of named settings given as one argument
 * (ddl.create_index(..., opts), users:list{...}). Every misuse raises a "bad_argument" error
 * object (kr_error_arg) naming the Lua function, the argument and the option's path
 * ("bad argument #4 to 'create_index' (opts.unique: boolean expected, got string)"); an unknown
 * key names the closest valid one. Tables are read raw: options are plain data. */
#ifndef KRONOS_OPTION_H
#define KRONOS_OPTION_H

#include "kronos.h"

/* The options table at arg (nil or none: returns 0) holding only string keys among allowed
 * (NULL-ended); returns its absolute index. path names it in errors ("opts"). */
int kr_option_check(lua_State *L, int arg, const char *path, const char *const *allowed);
/* The same for a table inside an argument (a column spec): idx must be a table. */
void kr_option_checkfields(lua_State *L, int idx, int arg, const char *path, const char *const *allowed);
/* Pushes t[key] (raw) and returns its type; t == 0 (no table) pushes nil. */
int kr_option_field(lua_State *L, int tidx, const char *key);
/* A boolean option, def when absent. */
int kr_option_bool(lua_State *L, int tidx, int arg, const char *path, const char *key, int def);
/* A string option, NULL when absent; the string stays referenced by the table. */
const char *kr_option_string(lua_State *L, int tidx, int arg, const char *path, const char *key, size_t *len);
/* An option of Lua type `type` (LUA_TFUNCTION for a callback, LUA_TTABLE), pushed (nil when
 * absent); returns 1 when present. */
int kr_option_typed(lua_State *L, int tidx, int arg, const char *path, const char *key, int type);
/* An integer option within [min, max], def when absent. */
long long kr_option_integer(lua_State *L, int tidx, int arg, const char *path, const char *key,
                            long long min, long long max, long long def);

#endif
