/* User-model field validation: Lua values -> checked, normalized text, or an error object. One
 * set of rules (field_check) serves both readers: kr_users_check_fields, which reports the first
 * problem in a fixed order, and kr_users_read_entry, create_many's one walk over an entry. */
#include <string.h>

#include "users.h"

/* ---- fields ---------------------------------------------------------------------------- */

/* A field without a server default, and one with (its SQL text, length counted here). */
#define FIELD(name, kind) {name, sizeof name - 1, kind, NULL, 0}
#define FIELD_DEFAULT(name, kind, def) {name, sizeof name - 1, kind, def, sizeof def - 1}
const struct kr_user_field kr_user_fields[KR_USER_NFIELDS] = {
    FIELD("email", K_EMAIL), FIELD("first_name", K_NAME), FIELD("last_name", K_NAME),
    FIELD("profile_image_url", K_URL), FIELD_DEFAULT("is_active", K_BOOL, "true"),
};

/* The index in kr_user_fields of the field named key[0..len), or -1. */
static int field_index(const char *key, size_t len)
{
    for (int i = 0; i < KR_USER_NFIELDS; i++)
        if (kr_user_fields[i].len == len && memcmp(kr_user_fields[i].name, key, len) == 0) return i;
    return -1;
}

/* A value as read from the caller's table, before it is checked. */
typedef struct {
    int type;         /* its Lua type; LUA_TNIL when the field is absent */
    const char *s;    /* a string's bytes (the table keeps them alive) */
    size_t len;
    int b;            /* a boolean's value */
} rawval;

static void read_raw(lua_State *L, int idx, rawval *r)
{
    r->type = lua_type(L, idx);
    r->s = NULL;
    r->len = 0;
    r->b = 0;
    if (r->type == LUA_TSTRING) r->s = lua_tolstring(L, idx, &r->len);
    else if (r->type == LUA_TBOOLEAN) r->b = lua_toboolean(L, idx);
    else if (r->type == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL) r->type = -1; /* kronos.null */
}

/* What is wrong with a value (field_check's answer). */
typedef enum { FV_OK, FV_NOT_NULL, FV_NOT_BOOL, FV_NOT_STRING, FV_VERDICT } fv_problem;

/* The rules of field f for the value r: fills v and returns FV_OK, or says what is wrong (a
 * verdict of validate.c's in *verdict and *why). The email is normalized into out, which holds
 * at least r->len bytes; v->s then points there. No Lua call: the rules are plain C. */
static fv_problem field_check(const struct kr_user_field *f, const rawval *r, char *out, kr_fieldval *v,
                              kr_verdict *verdict, const char **why)
{
    v->set = 1;
    v->s = NULL;
    v->len = 0;
    v->escape = 0;
    *why = NULL;
    if (r->type == -1) return f->kind == K_NAME || f->kind == K_URL ? FV_OK : FV_NOT_NULL;
    if (f->kind == K_BOOL) {
        if (r->type != LUA_TBOOLEAN) return FV_NOT_BOOL;
        v->s = r->b ? "true" : "false";
        v->len = r->b ? 4 : 5;
        return FV_OK;
    }
    if (r->type != LUA_TSTRING) return FV_NOT_STRING;
    if (f->kind == K_EMAIL) {
        *verdict = kr_normalize_email(r->s, r->len, out, &v->len, why, &v->escape);
        v->s = out;
    } else {
        v->s = r->s;
        v->len = r->len;
        *verdict = f->kind == K_URL ? kr_check_url(r->s, r->len, why, &v->escape)
                                    : kr_check_text(r->s, r->len, KR_NAME_MAX, &v->escape);
    }
    return *verdict == KR_VALID ? FV_OK : FV_VERDICT;
}

/* Pushes the error object of field_check's answer p for field f (the value's type name for the
 * type errors); returns 0. */
static int field_error(lua_State *L, const struct kr_user_field *f, fv_problem p, kr_verdict verdict,
                       const char *why, const char *tname)
{
    if (p == FV_NOT_NULL)
        kr_error_push(L, "invalid_type", "%s cannot be null", f->name);
    else if (p == FV_NOT_BOOL)
        kr_error_push(L, "invalid_type", "%s must be a boolean, got %s", f->name, tname);
    else if (p == FV_NOT_STRING)
        kr_error_push(L, "invalid_type", "%s must be a string, got %s", f->name, tname);
    else if (verdict == KR_BAD_UTF8)
        kr_error_push(L, "invalid_utf8", "%s is not valid UTF-8 text", f->name);
    else if (verdict == KR_TOO_LONG)
        kr_error_push(L, "too_long", "%s is longer than %d characters", f->name,
                      f->kind == K_EMAIL ? KR_EMAIL_MAX : f->kind == K_URL ? KR_URL_MAX : KR_NAME_MAX);
    else
        kr_error_push(L, f->kind == K_EMAIL ? "invalid_email" : "invalid_url", "%s %s", f->name, why ? why : "is not valid");
    kr_error_setfield(L, "field", f->name);
    return 0;
}

/* Checks the value at -1 for field f. On success fills v (for the email, the normalized string is
 * pushed and v->s points into it); on failure pushes an error object. Either way the result is
 * at -1, above what the caller should clear. */
int kr_users_field_value(lua_State *L, const struct kr_user_field *f, kr_fieldval *v)
{
    rawval r;
    read_raw(L, -1, &r);
    const char *tname = luaL_typename(L, -1);
    char small[512];
    char *out = f->kind != K_EMAIL || r.len <= sizeof small ? small : (char *)lua_newuserdata(L, r.len);
    kr_verdict verdict = KR_VALID;
    const char *why;
    fv_problem p = field_check(f, &r, out, v, &verdict, &why);
    if (p != FV_OK) return field_error(L, f, p, verdict, why, tname);
    if (f->kind == K_EMAIL) {
        lua_pushlstring(L, v->s, v->len);
        v->s = lua_tostring(L, -1);
    }
    return 1;
}

/* Refuses keys that are not fields; pushes the error and returns 0 for the first one found. */
static int check_keys(lua_State *L, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t len = 0;
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
        if (key && field_index(key, len) >= 0) {
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
        vals[i] = (kr_fieldval){0, NULL, 0, 0};
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

/* create_many's reader: one lua_next walk over the entry at t instead of a walk for the keys and
 * a lookup per field. Returns 1 when kr_users_check_fields(L, t, vals, 1) would accept the entry,
 * with vals filled as it fills them (the email normalized into email, emailcap bytes); returns 0
 * when it would not, or when the email does not fit emailcap: the caller then asks
 * kr_users_check_fields, which names the problem in its fixed order. The stack is unchanged and
 * nothing is allocated, so no collector step runs while vals points into the entry's strings. */
int kr_users_read_entry(lua_State *L, int t, kr_fieldval *vals, char *email, size_t emailcap)
{
    rawval raw[KR_USER_NFIELDS];
    for (int i = 0; i < KR_USER_NFIELDS; i++) raw[i].type = LUA_TNIL;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t len = 0;
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &len) : NULL;
        int k = key ? field_index(key, len) : -1;
        if (k < 0) {
            lua_pop(L, 2);
            return 0;
        }
        read_raw(L, -1, &raw[k]);
        lua_pop(L, 1);
    }
    if (raw[0].type == LUA_TNIL || raw[0].len > emailcap) return 0;
    for (int i = 0; i < KR_USER_NFIELDS; i++) {
        vals[i] = (kr_fieldval){0, NULL, 0, 0};
        if (raw[i].type == LUA_TNIL) continue;
        kr_verdict verdict;
        const char *why;
        if (field_check(&kr_user_fields[i], &raw[i], email, &vals[i], &verdict, &why) != FV_OK) return 0;
    }
    return 1;
}
