/* users:create_many: every entry validated into one COPY text buffer, then one COPY (all or
 * nothing). */
#include <stdlib.h>
#include <string.h>

#include "users.h"

#define COPY_CHUNK 65536

/* A growing byte buffer in a Lua userdata at stack slot `slot` (so nothing leaks if Lua raises). */
typedef struct {
    char *p;
    size_t len, cap;
    int slot;
} copybuf;

static void buf_reserve(lua_State *L, copybuf *b, size_t more)
{
    if (b->len + more <= b->cap) return;
    size_t cap = b->cap * 2;
    while (cap < b->len + more) cap *= 2;
    char *p = (char *)lua_newuserdata(L, cap);
    memcpy(p, b->p, b->len);
    lua_replace(L, b->slot); /* the old one is garbage now */
    b->p = p;
    b->cap = cap;
}

/* One value in COPY text format: \N for NULL, backslash escapes for what would break a row. */
static void add_copy_value(lua_State *L, copybuf *b, const char *s, size_t len, const char *absent)
{
    if (s == NULL) { /* written as is: \N or a default */
        len = strlen(absent);
        buf_reserve(L, b, len);
        memcpy(b->p + b->len, absent, len);
        b->len += len;
        return;
    }
    buf_reserve(L, b, 2 * len);
    char *out = b->p + b->len;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\': *out++ = '\\'; *out++ = '\\'; break;
        case '\t': *out++ = '\\'; *out++ = 't'; break;
        case '\n': *out++ = '\\'; *out++ = 'n'; break;
        case '\r': *out++ = '\\'; *out++ = 'r'; break;
        default: *out++ = ch;
        }
    }
    b->len = (size_t)(out - b->p);
}

/* err at -1 (batch entry i): names the entry. */
static void set_index(lua_State *L, lua_Integer i)
{
    lua_pushinteger(L, i);
    lua_setfield(L, -2, "index");
    lua_getfield(L, -1, "message");
    lua_pushfstring(L, "entry %d: %s", (int)i, lua_tostring(L, -1));
    lua_setfield(L, -3, "message");
    lua_pop(L, 1);
}

/* Validates every entry and writes its COPY line (a new UUID first) into b. Returns 0 with the
 * error object at -1 for the first entry that is not valid. */
static int prepare_batch(lua_State *L, lua_Integer n, copybuf *b)
{
    int top = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, (int)i);
        if (!lua_istable(L, top + 1)) {
            kr_error_push(L, "invalid_type", "must be a table of fields, got %s", luaL_typename(L, top + 1));
            set_index(L, i);
            return 0;
        }
        kr_fieldval v[KR_USER_NFIELDS];
        if (!kr_users_check_fields(L, top + 1, v, 1)) {
            set_index(L, i);
            return 0;
        }
        buf_reserve(L, b, 37);
        kr_uuid_format(b->p + b->len);
        b->len += 36;
        for (int k = 0; k < KR_USER_NFIELDS; k++) {
            buf_reserve(L, b, 1);
            b->p[b->len++] = '\t';
            /* COPY's column order is kr_user_fields' order; an absent is_active gets the table's default */
            add_copy_value(L, b, v[k].set ? v[k].s : NULL, v[k].len, kr_user_fields[k].kind == K_BOOL ? "true" : "\\N");
        }
        buf_reserve(L, b, 1);
        b->p[b->len++] = '\n';
        lua_settop(L, top); /* the normalized email is in the buffer now */
    }
    return 1;
}

/* The entry a COPY error happened on: the server's context says "COPY users, line N". */
static lua_Integer failed_line(const PGresult *r)
{
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    const char *at = ctx ? strstr(ctx, "COPY users, line ") : NULL;
    return at ? (lua_Integer)strtoll(at + 17, NULL, 10) : 0;
}

/* nil, err from a failed COPY result (mapped codes; err.index from the server's context). */
static int copy_failed(lua_State *L, kr_conn *c, PGresult *r, PGresult **box)
{
    kr_error_result(L, c, r);
    lua_Integer line = failed_line(r);
    kr_clearbox(box);
    kr_users_map_error(L);
    if (line > 0) set_index(L, line);
    return 2;
}

static int copy_batch(lua_State *L, kr_conn *c, const copybuf *b)
{
    kr_endstream(c);
    PGresult *r = PQexec(c->pg, "COPY users (id, email, first_name, last_name, profile_image_url, is_active) FROM STDIN");
    PGresult **box = kr_boxresult(L, r);
    if (r == NULL || PQresultStatus(r) != PGRES_COPY_IN) return copy_failed(L, c, r, box);
    kr_clearbox(box);
    lua_pop(L, 1);
    int sent = 1;
    for (size_t off = 0; off < b->len && sent; off += COPY_CHUNK) {
        size_t len = b->len - off < COPY_CHUNK ? b->len - off : COPY_CHUNK;
        sent = PQputCopyData(c->pg, b->p + off, (int)len) == 1;
    }
    /* Unended, the COPY would make every PQgetResult below answer COPY_IN again. */
    if (PQputCopyEnd(c->pg, sent ? NULL : "kronos: sending the batch failed") != 1) return kr_error_result(L, c, NULL);
    r = PQgetResult(c->pg);
    box = kr_boxresult(L, r);
    PGresult *extra;
    while ((extra = PQgetResult(c->pg)) != NULL) PQclear(extra);
    if (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK) return copy_failed(L, c, r, box);
    lua_Integer created = (lua_Integer)strtoll(PQcmdTuples(r), NULL, 10);
    kr_clearbox(box);
    lua_pushinteger(L, created);
    return 1;
}

/* users:create_many(list) -> count | nil, err: one COPY, so the batch is written whole or not
 * at all; every entry is validated before anything is sent. A duplicate email, within the batch
 * or against the table, is the server's unique violation: err.index is the entry it hit. */
int kr_users_create_many(lua_State *L)
{
    kr_conn *c = kr_users_self(L);
    kr_users_checktable(L, 2, "list");
    lua_settop(L, 2);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    if (n > 0x7fffffff) kr_error_arg(L, 2, "list too long");
    if (n == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    copybuf b;
    b.cap = (size_t)(n < 100000 ? n : 100000) * 96;
    b.len = 0;
    b.p = (char *)lua_newuserdata(L, b.cap);
    b.slot = lua_gettop(L);
    if (!prepare_batch(L, n, &b)) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    return copy_batch(L, c, &b);
}
