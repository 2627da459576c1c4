/* Option tables (see option.h): one reader, one error style. */
#include <stdio.h>
#include <string.h>

#include "option.h"

int kr_option_field(lua_State *L, int tidx, const char *key)
{
    if (tidx == 0) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    tidx = lua_absindex(L, tidx);
    lua_pushstring(L, key);
    lua_rawget(L, tidx);
    return lua_type(L, -1);
}

/* Levenshtein distance between a and b, capped: keys are short, and only near misses matter. */
static size_t distance(const char *a, const char *b)
{
    enum { MAX = 40 };
    size_t la = strlen(a), lb = strlen(b), row[MAX + 1];
    if (la > MAX || lb > MAX) return MAX;
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* Raises "path: unknown key "k" (did you mean "c"?)" with the closest allowed key (at most two
 * edits, and fewer than the key has characters), else the list of allowed keys. */
static _Noreturn void unknown_key(lua_State *L, int arg, const char *path, const char *key,
                                  const char *const *allowed)
{
    const char *best = NULL;
    size_t bestd = 3;
    for (const char *const *a = allowed; *a; a++) {
        size_t d = distance(key, *a);
        if (d < bestd && d < strlen(key)) best = *a, bestd = d;
    }
    if (best) kr_error_arg(L, arg, "%s: unknown key \"%s\" (did you mean \"%s\"?)", path, key, best);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *const *a = allowed; *a; a++) {
        if (a != allowed) luaL_addstring(&b, ", ");
        luaL_addstring(&b, *a);
    }
    luaL_pushresult(&b);
    kr_error_arg(L, arg, "%s: unknown key \"%s\" (expected %s)", path, key, lua_tostring(L, -1));
}

void kr_option_checkfields(lua_State *L, int idx, int arg, const char *path, const char *const *allowed)
{
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE)
        kr_error_arg(L, arg, "%s: table expected, got %s", path, luaL_typename(L, idx));
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            kr_error_arg(L, arg, "%s: unexpected %s key", path, luaL_typename(L, -1));
        const char *key = lua_tostring(L, -1);
        const char *const *a = allowed;
        while (*a != NULL && strcmp(*a, key) != 0) a++;
        if (*a == NULL) unknown_key(L, arg, path, key, allowed);
    }
}

int kr_option_check(lua_State *L, int arg, const char *path, const char *const *allowed)
{
    if (lua_isnoneornil(L, arg)) return 0;
    kr_option_checkfields(L, arg, arg, path, allowed);
    return lua_absindex(L, arg);
}

int kr_option_bool(lua_State *L, int tidx, int arg, const char *path, const char *key, int def)
{
    int t = kr_option_field(L, tidx, key);
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        kr_error_arg(L, arg, "%s.%s: boolean expected, got %s", path, key, lua_typename(L, t));
    int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

const char *kr_option_string(lua_State *L, int tidx, int arg, const char *path, const char *key, size_t *len)
{
    int t = kr_option_field(L, tidx, key);
    if (t != LUA_TNIL && t != LUA_TSTRING)
        kr_error_arg(L, arg, "%s.%s: string expected, got %s", path, key, lua_typename(L, t));
    const char *s = t == LUA_TNIL ? NULL : lua_tolstring(L, -1, len);
    lua_pop(L, 1);
    return s;
}

int kr_option_typed(lua_State *L, int tidx, int arg, const char *path, const char *key, int type)
{
    int t = kr_option_field(L, tidx, key);
    if (t != LUA_TNIL && t != type)
        kr_error_arg(L, arg, "%s.%s: %s expected, got %s", path, key, lua_typename(L, type), lua_typename(L, t));
    return t != LUA_TNIL;
}

long long kr_option_integer(lua_State *L, int tidx, int arg, const char *path, const char *key,
                            long long min, long long max, long long def)
{
    int t = kr_option_field(L, tidx, key);
    long long v = def;
    if (t != LUA_TNIL) {
        if (!kr_isinteger(L, -1))
            kr_error_arg(L, arg, "%s.%s: integer expected, got %s", path, key,
                         t == LUA_TNUMBER ? "a fraction" : lua_typename(L, t));
        v = kr_tointeger(L, -1);
        if (v < min || v > max) {
            char range[96];   /* lua_pushfstring has no %lld */
            snprintf(range, sizeof range, "from %lld to %lld, got %lld", min, max, v);
            kr_error_arg(L, arg, "%s.%s: must be %s", path, key, range);
        }
    }
    lua_pop(L, 1);
    return v;
}
