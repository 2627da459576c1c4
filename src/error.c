/* error.c: the one family of kronos error objects.
 *
 * Every error kronos returns or raises is a table of class KR_ERROR_CLASS with a machine-readable
 * `code`, a `message` and, where known, more fields (sqlstate, detail, file, field...), whose
 * tostring is one line. Expected failures return nil, err (kr_error_return, kr_error_result);
 * misuse raises a "bad_argument" object naming the Lua function (kr_error_arg); failures that
 * cannot be returned raise (kr_error_raise, kr_error_throw). Nothing else builds an error. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"
#include "errcodes.h"

static int cmp_errcode(const void *key, const void *elem)
{
    return strcmp((const char *)key, ((const struct kr_errcode *)elem)->state);
}

/* "23505" -> "unique_violation"; NULL for a state PostgreSQL does not list. */
static const char *condition_name(const char *sqlstate)
{
    if (sqlstate == NULL || strlen(sqlstate) != 5) return NULL;
    const struct kr_errcode *e = bsearch(sqlstate, kr_errcodes, sizeof kr_errcodes / sizeof kr_errcodes[0],
                                         sizeof kr_errcodes[0], cmp_errcode);
    return e ? e->name : NULL;
}

const char *kr_error_condition(const char *sqlstate)
{
    return condition_name(sqlstate);
}

/* Sets err[key] = value on the object at -1; a NULL value leaves the field out. */
void kr_error_setfield(lua_State *L, const char *key, const char *value)
{
    if (value == NULL) return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, key);
}

void kr_error_new(lua_State *L, const char *code, const char *message)
{
    lua_createtable(L, 0, 4);
    kr_error_setfield(L, "code", code);
    kr_error_setfield(L, "message", message);
    luaL_setmetatable(L, KR_ERROR_CLASS);
}

static void push_v(lua_State *L, const char *code, const char *fmt, va_list ap)
{
    const char *msg = lua_pushvfstring(L, fmt, ap);
    kr_error_new(L, code, msg);
    lua_remove(L, -2);
}

void kr_error_push(lua_State *L, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    push_v(L, code, fmt, ap);
    va_end(ap);
}

int kr_error_return(lua_State *L, const char *code, const char *fmt, ...)
{
    lua_pushnil(L);
    va_list ap;
    va_start(ap, fmt);
    push_v(L, code, fmt, ap);
    va_end(ap);
    return 2;
}

_Noreturn void kr_error_throw(lua_State *L)
{
    lua_error(L);
    abort(); /* not reached: lua_error does not return */
}

_Noreturn void kr_error_raise(lua_State *L, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    push_v(L, code, fmt, ap);
    va_end(ap);
    kr_error_throw(L);
}

/* The name the caller knows the running C function by: what luaL_argerror would say, or, where
 * Lua cannot tell (a function called through a proxy or a local), the name the caller stored as
 * the upvalue-free registry field KR_FNAME_KEY (see kr_error_setfname). */
static const char *function_name(lua_State *L, int *arg)
{
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar)) return "?";
    lua_getinfo(L, "n", &ar);
    if (ar.namewhat && strcmp(ar.namewhat, "method") == 0) {
        (*arg)--;  /* self is not counted, as luaL_argerror does */
    }
    if (ar.name) return ar.name;
    lua_getfield(L, LUA_REGISTRYINDEX, KR_FNAME_KEY);
    const char *name = lua_tostring(L, -1);
    lua_pop(L, 1); /* the registry keeps the string alive */
    return name ? name : "?";
}

void kr_error_setfname(lua_State *L, const char *name)
{
    if (name) lua_pushstring(L, name); else lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, KR_FNAME_KEY);
}

_Noreturn void kr_error_arg(lua_State *L, int arg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *why = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    const char *fname = function_name(L, &arg);
    if (arg > 0)
        kr_error_push(L, "bad_argument", "bad argument #%d to '%s' (%s)", arg, fname, why);
    else
        kr_error_push(L, "bad_argument", "calling '%s' on bad self (%s)", fname, why);
    lua_pushstring(L, fname);
    lua_setfield(L, -2, "func");
    kr_error_throw(L);
}

/* libpq messages end in a newline and may span lines (continuations indented with a tab): the
 * lines are joined with spaces, so err.message is one line. Not an escaping: the bytes stay as
 * the server sent them, and tostring(err) escapes control bytes (kr_error_addescaped, the one
 * escaping). */
void kr_error_pushoneline(lua_State *L, const char *msg)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' ')) len--;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\t') continue;
        luaL_addchar(&b, msg[i] == '\n' ? ' ' : msg[i]);
    }
    luaL_pushresult(&b);
}

int kr_error_result(lua_State *L, kr_conn *c, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    int lost = c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    lua_pushnil(L);
    if (msg == NULL) msg = res ? PQresultErrorMessage(res) : NULL;
    if ((msg == NULL || *msg == '\0') && c->pg) msg = PQerrorMessage(c->pg);
    kr_error_pushoneline(L, msg && *msg ? msg : "unknown error");
    kr_error_new(L, (lost || state == NULL || strncmp(state, "08", 2) == 0) ? "connection"
                   : (condition_name(state) ? condition_name(state) : state),
                lua_tostring(L, -1));
    lua_remove(L, -2);
    if (res) {
        static const struct { int field; const char *key; } fields[] = {
            {PG_DIAG_SQLSTATE, "sqlstate"},       {PG_DIAG_MESSAGE_DETAIL, "detail"},
            {PG_DIAG_MESSAGE_HINT, "hint"},       {PG_DIAG_CONSTRAINT_NAME, "constraint"},
            {PG_DIAG_TABLE_NAME, "table"},        {PG_DIAG_COLUMN_NAME, "column"},
            {PG_DIAG_SCHEMA_NAME, "schema"},      {PG_DIAG_SEVERITY_NONLOCALIZED, "severity"},
            {PG_DIAG_STATEMENT_POSITION, "position"},
        };
        for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
            kr_error_setfield(L, fields[i].key, PQresultErrorField(res, fields[i].field));
    }
    return 2;
}

/* The one escaping of text for a one-line message. Messages may quote user input (an unknown
 * field name), and tostring(user) prints user data: \n, \r, \t and every other control byte
 * become Lua escapes (\ddd), so the line stays one line and reads back in Lua 5.1 and 5.4;
 * with quote (not 0) that quote character and the backslash are escaped too. */
void kr_error_addescaped(luaL_Buffer *b, const char *s, size_t len, char quote)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (quote && (ch == (unsigned char)quote || ch == '\\')) {
            luaL_addchar(b, '\\');
            luaL_addchar(b, (char)ch);
        } else if (ch == '\n' || ch == '\t' || ch == '\r') {
            luaL_addchar(b, '\\');
            luaL_addchar(b, ch == '\n' ? 'n' : ch == '\t' ? 't' : 'r');
        } else if (ch < 0x20 || ch == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\%03d", ch);
            luaL_addstring(b, esc);
        } else {
            luaL_addchar(b, (char)ch);
        }
    }
}

/* tostring(err): "message [code sqlstate]" on one line. */
static int error_tostring(lua_State *L)
{
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "sqlstate");
    const char *code = lua_tostring(L, 3), *state = lua_tostring(L, 4);
    size_t len;
    const char *raw = lua_tolstring(L, 2, &len);
    if (raw == NULL) raw = "error", len = 5;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    kr_error_addescaped(&b, raw, len, 0);
    luaL_pushresult(&b);
    const char *msg = lua_tostring(L, -1);
    if (state && code && strcmp(state, code) != 0)
        lua_pushfstring(L, "%s [%s %s]", msg, code, state);
    else
        lua_pushfstring(L, "%s [%s]", msg, code ? code : "error");
    return 1;
}

/* kronos.error(code, message [, fields]) builds an error object from Lua (the thin layers use it). */
static int error_new(lua_State *L)
{
    if (lua_type(L, 1) != LUA_TSTRING) kr_error_arg(L, 1, "code (string) expected, got %s", luaL_typename(L, 1));
    if (lua_type(L, 2) != LUA_TSTRING) kr_error_arg(L, 2, "message (string) expected, got %s", luaL_typename(L, 2));
    const char *code = lua_tostring(L, 1), *msg = lua_tostring(L, 2);
    kr_error_new(L, code, msg);
    if (lua_type(L, 3) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
    }
    return 1;
}

/* kronos.core.one_line(s) -> s with control bytes escaped (kr_error_addescaped): the CLI prints
 * text from outside (migration messages, errors, revision ids) through the same escaping as
 * tostring(err), so that a line of its output stays one line. */
static int error_one_line(lua_State *L)
{
    size_t len;
    if (lua_type(L, 1) != LUA_TSTRING) kr_error_arg(L, 1, "string expected, got %s", luaL_typename(L, 1));
    const char *s = lua_tolstring(L, 1, &len);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    kr_error_addescaped(&b, s, len, 0);
    luaL_pushresult(&b);
    return 1;
}

static int error_is(lua_State *L)
{
    lua_pushboolean(L, lua_istable(L, 1) && kr_testclass(L, 1, KR_ERROR_CLASS));
    return 1;
}

void kr_open_error(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {{"error", error_new}, {"is_error", error_is}, {"one_line", error_one_line},
                                     {NULL, NULL}};
    kr_newclass(L, KR_ERROR_CLASS, NULL, meta);
    luaL_setfuncs(L, funcs, 0);
}
