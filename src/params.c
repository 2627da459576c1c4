/* Lua values -> libpq parameters. Values always travel as parameters, never as SQL text.
 *
 * The one encoding of a value (kr_param_text), which COPY writes too: nil and kronos.null are
 * NULL, booleans "true"/"false", numbers their exact text, strings as they are, kronos.bytea(s)
 * raw bytes. kronos.array{...} is sent as an array literal with every element double-quoted and
 * escaped (kr_pgarray_quote, so no element can be read as NULL, a delimiter or a nested array by
 * accident), each element encoded by this same rule; nested plain tables are sub-arrays; nil
 * (with t.n) and kronos.null are NULL. kronos.json(v) is v encoded by the connection's encoder
 * (conn:set_encode{json = cjson.encode}). */
#include <stdio.h>
#include <string.h>

#include "kronos.h"
#include "convert.h"
#include "option.h"
#include "pgarray.h"

/* Shortest text that reads back as the same double (as PostgreSQL's float8out does). */
static const char *push_double(lua_State *L, double d)
{
    char buf[KR_DOUBLE_MAX];
    lua_pushlstring(L, buf, kr_format_double(d, buf));
    return lua_tostring(L, -1);
}

static const char *push_integer(lua_State *L, long long v)
{
    char buf[24];
    snprintf(buf, sizeof buf, "%lld", v);
    lua_pushstring(L, buf);
    return lua_tostring(L, -1);
}

/* The raw bytes of kronos.bytea(s), or NULL when the value is not one. */
static const char *tobytea(lua_State *L, int idx, size_t *len)
{
    if (!lua_istable(L, idx) || !kr_testclass(L, idx, KR_BYTEA_CLASS)) return NULL;
    lua_rawgeti(L, idx, 1);
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* still referenced by the bytea table, which stays on the stack */
    return s;
}

/* Pushes s[0..len) as a double-quoted array element. */
static void push_quoted(lua_State *L, const char *s, size_t len)
{
    char *out = (char *)lua_newuserdata(L, 2 * len + 2);
    lua_pushlstring(L, out, kr_pgarray_quote(s, len, out));
    lua_remove(L, -2);
}

/* The elements of the table at t, their text pushed one by one into parts[np + 1 ...] (a table:
 * encoding an element pushes strings of its own, which a luaL_Buffer would not allow). */
static void literal(lua_State *L, kr_conn *c, int t, int parts, int *np, int pos, int depth)
{
    if (depth > KR_PGARRAY_MAXDEPTH) kr_error_arg(L, pos, "parameter $%d: kronos.array nested too deep", pos);
    kr_checkstack(L, 8);
    lua_getfield(L, t, "n");
    lua_Integer n = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, t);
    lua_pop(L, 1);
    lua_pushliteral(L, "{");
    lua_rawseti(L, parts, ++*np);
    for (lua_Integer i = 1; i <= n; i++) {
        if (i > 1) {
            lua_pushliteral(L, ",");
            lua_rawseti(L, parts, ++*np);
        }
        lua_rawgeti(L, t, i);
        int v = lua_gettop(L);
        if (lua_istable(L, v) && !lua_getmetatable(L, v)) { /* a plain table: a sub-array */
            literal(L, c, v, parts, np, pos, depth + 1);
        } else if (lua_istable(L, v) && kr_testclass(L, v, KR_ARRAY_CLASS)) {
            lua_rawgeti(L, v, 1);
            literal(L, c, lua_gettop(L), parts, np, pos, depth + 1);
        } else {
            lua_settop(L, v);
            const char *s;
            size_t len;
            int kind = kr_param_text(L, c, v, pos, &s, &len);
            if (kind == KR_VAL_NULL) {
                lua_pushliteral(L, "NULL");
            } else if (kind == KR_VAL_BYTEA) { /* bytea's hex input form, quoted */
                char *hex = (char *)lua_newuserdata(L, 2 * len + 2);
                hex[0] = '\\';
                hex[1] = 'x';
                kr_hex_digits(s, len, hex + 2);
                push_quoted(L, hex, 2 * len + 2);
            } else {
                push_quoted(L, s, len);
            }
            lua_rawseti(L, parts, ++*np);
        }
        lua_settop(L, v - 1);
    }
    lua_pushliteral(L, "}");
    lua_rawseti(L, parts, ++*np);
}

/* kronos.array{...} at idx -> its literal, pushed. */
static const char *array_literal(lua_State *L, kr_conn *c, int idx, int pos, size_t *len)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    int parts = lua_gettop(L), np = 0;
    lua_rawgeti(L, idx, 1);
    if (!lua_istable(L, -1)) kr_error_arg(L, idx, "parameter $%d: kronos.array holds no table", pos);
    literal(L, c, lua_gettop(L), parts, &np, pos, 1);
    lua_settop(L, parts);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= np; i++) {
        lua_rawgeti(L, parts, i);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_remove(L, parts); /* the literal stays, where the parts were */
    return lua_tolstring(L, -1, len);
}

/* kronos.json(v) at idx -> v encoded by c's encoder, pushed. */
static const char *json_text(lua_State *L, kr_conn *c, int idx, int pos, size_t *len)
{
    idx = lua_absindex(L, idx);
    if (c == NULL) kr_error_arg(L, idx, "parameter $%d: kronos.json needs a connection's encoder", pos);
    kr_conn_env(L, c);
    lua_getfield(L, -1, "json_encode");
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1))
        kr_error_arg(L, idx, "parameter $%d: kronos.json needs an encoder: conn:set_encode{json = cjson.encode}", pos);
    lua_rawgeti(L, idx, 1);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
        kr_error_arg(L, idx, "parameter $%d: the json encoder returned a %s, not a string", pos, luaL_typename(L, -1));
    const char *s = lua_tolstring(L, -1, len);
    if (strlen(s) != *len) kr_error_arg(L, idx, "parameter $%d: encoded JSON contains a NUL byte", pos);
    return s;
}

int kr_param_text(lua_State *L, kr_conn *c, int idx, int pos, const char **out, size_t *outlen)
{
    size_t len = 0;
    const char *s = NULL;
    int kind = KR_VAL_TEXT;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        kind = KR_VAL_NULL;
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL) kr_error_arg(L, idx, "parameter $%d: unsupported type userdata", pos);
        kind = KR_VAL_NULL; /* kronos.null, cjson.null, ngx.null */
        break;
    case LUA_TBOOLEAN:
        s = lua_toboolean(L, idx) ? "true" : "false";
        len = strlen(s);
        kind = KR_VAL_BOOL;
        break;
    case LUA_TNUMBER:
        s = kr_isinteger(L, idx) ? push_integer(L, kr_tointeger(L, idx)) : push_double(L, (double)lua_tonumber(L, idx));
        len = strlen(s);
        break;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        if (strlen(s) != len)
            kr_error_arg(L, idx, "parameter $%d contains a NUL byte (send binary data with kronos.bytea)", pos);
        break;
    case LUA_TTABLE:
        s = tobytea(L, idx, &len);
        if (s != NULL) {
            kind = KR_VAL_BYTEA;
            break;
        }
        if (kr_testclass(L, idx, KR_ARRAY_CLASS)) {
            s = array_literal(L, c, idx, pos, &len);
            break;
        }
        if (kr_testclass(L, idx, KR_JSON_CLASS)) {
            s = json_text(L, c, idx, pos, &len);
            break;
        }
        /* fall through */
    default:
        kr_error_arg(L, idx, "parameter $%d: unsupported type %s", pos, luaL_typename(L, idx));
    }
    if (len > 0x7fffffff) kr_error_arg(L, idx, "parameter $%d too large", pos);
    *out = s;
    *outlen = len;
    return kind;
}

void kr_checkparams_conn(lua_State *L, kr_conn *c, int first, int n, kr_params *p)
{
    if (n > 65535) kr_error_arg(L, first + 65535, "too many parameters (%d, at most 65535)", n);
    kr_checkstack(L, n + 4);
    p->n = n;
    if (n == 0) { /* most statements: nothing to allocate */
        p->values = NULL;
        p->lengths = p->formats = NULL;
        p->types = NULL;
        return;
    }
    size_t each = sizeof(char *) + 2 * sizeof(int) + sizeof(Oid);
    char *mem = lua_newuserdata(L, (size_t)n * each);
    p->values = (const char **)mem;
    p->lengths = (int *)(mem + (size_t)n * sizeof(char *));
    p->formats = p->lengths + n;
    p->types = (Oid *)(p->formats + n);
    for (int i = 0; i < n; i++) {
        const char *s;
        size_t len;
        int kind = kr_param_text(L, c, first + i, i + 1, &s, &len);
        p->formats[i] = kind == KR_VAL_BYTEA;
        p->types[i] = kind == KR_VAL_BYTEA ? BYTEAOID : kind == KR_VAL_BOOL ? BOOLOID : 0;
        p->values[i] = s;
        p->lengths[i] = (int)len;
    }
}

/* The encode options {json = fn} at t, read through option.c's reader (arg and path name the
 * table in a bad_argument), set on c; an absent json removes the encoder (see kronos.h). */
void kr_params_encode_options(lua_State *L, kr_conn *c, int t, int arg, const char *path)
{
    static const char *const keys[] = {"json", NULL};
    t = lua_absindex(L, t);
    kr_option_checkfields(L, t, arg, path, keys);
    kr_option_typed(L, t, arg, path, "json", LUA_TFUNCTION); /* pushed, or nil */
    kr_conn_env(L, c);
    lua_insert(L, -2);
    lua_setfield(L, -2, "json_encode");
    lua_pop(L, 1);
}

/* conn:set_encode{json = fn | nil} -> conn */
int kr_params_set_encode(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    kr_checktable(L, 2);
    kr_params_encode_options(L, c, 2, 2, "opts");
    lua_settop(L, 1);
    return 1;
}

/* The marker of a parameter type: {v} with metatable `class`. */
static int marker(lua_State *L, const char *class)
{
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    luaL_setmetatable(L, class);
    return 1;
}

/* kronos.bytea(s): marks a string to be sent as raw bytes. */
static int l_bytea(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) kr_error_arg(L, 1, "string expected, got %s", luaL_typename(L, 1));
    return marker(L, KR_BYTEA_CLASS);
}

/* kronos.array(t): t as an array parameter. */
static int l_array(lua_State *L)
{
    if (!lua_istable(L, 1)) kr_error_arg(L, 1, "table expected, got %s", luaL_typename(L, 1));
    return marker(L, KR_ARRAY_CLASS);
}

/* kronos.json(v): v as a json parameter, encoded by the connection's encoder. */
static int l_json(lua_State *L)
{
    lua_settop(L, 1);
    return marker(L, KR_JSON_CLASS);
}

/* The parameter marker classes and their constructors kronos.bytea, kronos.array, kronos.json. */
void kr_open_params(lua_State *L)
{
    static const luaL_Reg fns[] = {{"bytea", l_bytea}, {"array", l_array}, {"json", l_json}, {NULL, NULL}};
    kr_newclass(L, KR_BYTEA_CLASS, NULL, NULL);
    kr_newclass(L, KR_ARRAY_CLASS, NULL, NULL);
    kr_newclass(L, KR_JSON_CLASS, NULL, NULL);
    luaL_setfuncs(L, fns, 0);
}
