/* User-model field validation: Lua values -> checked, normalized text, or an error object. */
#include <string.h>

#include "users.h"

/* ---- fields ---------------------------------------------------------------------------- */

const struct kr_user_field kr_user_fields[KR_USER_NFIELDS] = {
    {"email", K_EMAIL}, {"first_name", K_NAME}, {"last_name", K_NAME},
    {"profile_image_url", K_URL}, {"is_active", K_BOOL},
};

/* Pushes the error object of a verdict on field; returns 0. */
static int verdict_error(lua_State *L, kr_verdict v, const char *field, const char *code, const char *why, size_t max)
{
    if (v == KR_BAD_UTF8)
        kr_error_push(L, "invalid_utf8", "%s is not valid UTF-8 text", field);
    else if (v == KR_TOO_LONG)
        kr_error_push(L, "too_long", "%s is longer than %d characters", field, (int)max);
    else
        kr_error_push(L, code, "%s %s", field, why ? why : "is not valid");
    kr_error_setfield(L, "field", field);
    return 0;
}

/* Pushes the normalized form of the email at -1 (what is below may stay on the stack). */
static int email_value(lua_State *L, kr_fieldval *v)
{
    size_t len;
    const char *in = lua_tolstring(L, -1, &len);
    char small[512];
    char *out = len <= sizeof small ? small : (char *)lua_newuserdata(L, len);
    size_t outlen;
    const char *why = NULL;
    kr_verdict verdict = kr_normalize_email(in, len, out, &outlen, &why);
    if (verdict != KR_VALID) return verdict_error(L, verdict, "email", "invalid_email", why, KR_EMAIL_MAX);
    lua_pushlstring(L, out, outlen);
    v->s = lua_tolstring(L, -1, &v->len);
    return 1;
}

/* Checks the value at -1 for field f. On success fills v (for the email, the normalized string is
 * pushed); on failure pushes an error object. Either way the result is at -1, above what the
 * caller should clear. */
int kr_users_field_value(lua_State *L, const struct kr_user_field *f, kr_fieldval *v)
{
    int t = lua_type(L, -1);
    v->set = 1;
    v->s = NULL;
    v->len = 0;
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL) { /* kronos.null */
        if (f->kind == K_NAME || f->kind == K_URL) return 1;
        kr_error_push(L, "invalid_type", "%s cannot be null", f->name);
        kr_error_setfield(L, "field", f->name);
        return 0;
    }
    if (f->kind == K_BOOL) {
        if (t != LUA_TBOOLEAN) {
            kr_error_push(L, "invalid_type", "%s must be a boolean, got %s", f->name, luaL_typename(L, -1));
            kr_error_setfield(L, "field", f->name);
            return 0;
        }
        v->s = lua_toboolean(L, -1) ? "true" : "false";
        v->len = strlen(v->s);
        return 1;
    }
    if (t != LUA_TSTRING) {
        kr_error_push(L, "invalid_type", "%s must be a string, got %s", f->name, luaL_typename(L, -1));
        kr_error_setfield(L, "field", f->name);
        return 0;
    }
    if (f->kind == K_EMAIL) return email_value(L, v);
    v->s = lua_tolstring(L, -1, &v->len);
    const char *why = NULL;
    kr_verdict verdict = f->kind == K_URL ? kr_check_url(v->s, v->len, &why) : kr_check_text(v->s, v->len, KR_NAME_MAX);
    if (verdict == KR_VALID) return 1;
    return verdict_error(L, verdict, f->name, "invalid_url", why, f->kind == K_URL ? KR_URL_MAX : KR_NAME_MAX);
}

static int known_field(const char *name)
{
    for (int i = 0; i < KR_USER_NFIELDS; i++)
        if (strcmp(kr_user_fields[i].name, name) == 0) return 1;
    return 0;
}

/* Refuses keys that are not fields; pushes the error and returns 0 for the first one found. */
static int check_keys(lua_State *L, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (key && known_field(key)) {
            lua_pop(L, 1);
            continue;
        }
        if (key == NULL)
            kr_error_push(L, "invalid_field", "field names must be strings, got a %s key", luaL_typename(L, -2));
        else if (strcmp(key, "id") == 0 || strcmp(key, "created_at") == 0 || strcmp(key, "updated_at") == 0)
            kr_error_push(L, "invalid_field", "%s is set by the database and cannot be given", key);
        else if (strcmp(key, "last_login") == 0)
            kr_error_push(L, "invalid_field", "last_login is set by users:record_login()");
        else
            kr_error_push(L, "invalid_field", "unknown field '%s'", key);
        kr_error_setfield(L, "field", key);
        lua_insert(L, -3);
        lua_pop(L, 2);
        return 0;
    }
    return 1;
}

/* Validates the fields table at t in a fixed order. On success returns 1 and leaves one value on
 * the stack (the normalized email, or nil); on failure returns 0 and leaves the error object. */
int kr_users_check_fields(lua_State *L, int t, kr_fieldval *vals, int need_email)
{
    if (!check_keys(L, t)) return 0;
    lua_pushnil(L); /* the slot of the normalized email */
    int slot = lua_gettop(L);
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        lua_pushstring(L, kr_user_fields[i].name);
        lua_rawget(L, t);
        vals[i].set = 0;
        if (lua_isnil(L, -1)) {
            lua_settop(L, slot);
            if (i == 0 && need_email) {
                kr_error_push(L, "invalid_email", "email is required");
                kr_error_setfield(L, "field", "email");
                lua_replace(L, slot);
                return 0;
            }
            continue;
        }
        int ok = kr_users_field_value(L, &kr_user_fields[i], &vals[i]);
        if (!ok || i == 0) lua_replace(L, slot); /* the error, or the normalized email */
        lua_settop(L, slot); /* other strings stay referenced by the caller's table */
        if (!ok) return 0;
    }
    return 1;
}

