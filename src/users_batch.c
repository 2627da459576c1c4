/* users:create_many: one pass over the list checks every entry and writes its COPY line (a new
 * id first) into one buffer; only when the whole batch is valid does the COPY begin, and the
 * buffer goes to the server in COPY_CHUNK pieces. Nothing is sent for a refused batch (the
 * caller's transaction is untouched), and no entry is read twice. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "copytext.h"
#include "users.h"
#include "uuid.h"

#define COPY_CHUNK (256 * 1024) /* bytes per PQputCopyData */
#define EMAIL_CAP 1024          /* a valid email's bytes at most (255 characters of 4), trimmed */

/* The batch's COPY text, malloc'd (realloc grows a large buffer in place, without copying) and
 * held by a userdata whose __gc frees it, so nothing leaks if Lua raises. */
typedef struct {
    char *p;
    size_t len, cap;
} batchbuf;

static int batchbuf_gc(lua_State *L)
{
    batchbuf *b = (batchbuf *)lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    return 0;
}

/* Pushes an empty buffer of cap bytes. */
static batchbuf *batchbuf_new(lua_State *L, size_t cap)
{
    batchbuf *b = (batchbuf *)lua_newuserdata(L, sizeof(batchbuf));
    b->p = NULL;
    b->len = b->cap = 0;
    luaL_setmetatable(L, KR_USERS_BATCH_CLASS);
    b->p = (char *)malloc(cap);
    if (b->p == NULL) kr_error_raise(L, "out_of_memory", "out of memory for the batch's COPY text");
    b->cap = cap;
    return b;
}

/* Room for more bytes: the buffer doubles (the first lines tell the usual line's size, so a
 * batch of like entries rarely grows). */
static void batchbuf_reserve(lua_State *L, batchbuf *b, size_t more)
{
    if (more <= b->cap - b->len) return;
    size_t cap = b->cap;
    while (more > cap - b->len) {
        if (cap > ((size_t)-1) / 2) kr_error_raise(L, "out_of_memory", "out of memory for the batch's COPY text");
        cap *= 2;
    }
    char *p = (char *)realloc(b->p, cap);
    if (p == NULL) kr_error_raise(L, "out_of_memory", "out of memory for the batch's COPY text");
    b->p = p;
    b->cap = cap;
}

/* Tries to make room for more bytes at once; a failure here is not one (the buffer then grows as
 * the lines come). */
static void batchbuf_hint(batchbuf *b, size_t more)
{
    if (more <= b->cap - b->len || more > ((size_t)-1) / 2 - b->len) return;
    char *p = (char *)realloc(b->p, b->len + more);
    if (p == NULL) return;
    b->p = p;
    b->cap = b->len + more;
}

/* One value in COPY text format: escaped only when validation saw a byte that needs it. */
static char *put_value(char *out, const kr_fieldval *v, const char *absent, size_t absentlen)
{
    if (!v->set || v->s == NULL) { /* absent or kronos.null: \N, or the column's default */
        memcpy(out, absent, absentlen);
        return out + absentlen;
    }
    if (v->escape) return out + kr_copytext_escape(v->s, v->len, out);
    memcpy(out, v->s, v->len);
    return out + v->len;
}

/* An absent field's text: the column's server default (the model's, kr_user_fields: COPY names
 * every column, so the server applies none), \N for a column without one. */
static const char *absent_text(int k, size_t *len)
{
    const struct kr_user_field *f = &kr_user_fields[k];
    *len = f->server_default ? f->server_default_len : 2;
    return f->server_default ? f->server_default : "\\N";
}

/* Appends entry's line: a new id, then the fields in kr_user_fields' order (COPY's columns, see
 * push_copy_sql). */
static void put_line(lua_State *L, batchbuf *b, kr_uuid_pool *ids, const kr_fieldval *v)
{
    const char *absent[KR_USER_NFIELDS];
    size_t alen[KR_USER_NFIELDS];
    size_t need = 36 + KR_USER_NFIELDS + 1;
    for (int k = 0; k < KR_USER_NFIELDS; k++) {
        absent[k] = absent_text(k, &alen[k]);
        need += (v[k].escape ? 2 * v[k].len : v[k].len) + alen[k];
    }
    batchbuf_reserve(L, b, need);
    char *out = b->p + b->len;
    if (!kr_uuid_pool_next(ids, out)) kr_error_raise(L, "random_failed", "getrandom: %s", strerror(errno));
    out += 36;
    for (int k = 0; k < KR_USER_NFIELDS; k++) {
        *out++ = '\t';
        out = put_value(out, &v[k], absent[k], alen[k]);
    }
    *out++ = '\n';
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

/* The entry list[i] checked and its line appended (top: the stack's height between entries).
 * Returns 0 with the error object at -1, naming the entry, when it is not valid. The one-walk
 * reader takes the common entry; any other (a problem, or an email too long to be valid) goes
 * through kr_users_check_fields, which accepts exactly the same entries and names the problem
 * in its fixed order. */
static int add_entry(lua_State *L, int list, lua_Integer i, int top, batchbuf *b, kr_uuid_pool *ids)
{
    kr_fieldval v[KR_USER_NFIELDS];
    char email[EMAIL_CAP];
    lua_rawgeti(L, list, (int)i);
    if (!lua_istable(L, top + 1)) {
        kr_error_push(L, "invalid_type", "must be a table of fields, got %s", luaL_typename(L, top + 1));
        set_index(L, i);
        return 0;
    }
    if (!kr_users_read_entry(L, top + 1, v, email, sizeof email) && !kr_users_check_fields(L, top + 1, v, 1)) {
        set_index(L, i);
        return 0;
    }
    put_line(L, b, ids, v); /* before the normalized email (if kr_users_check_fields pushed it) goes */
    lua_settop(L, top);
    return 1;
}

/* The entry a COPY error happened on: the line N of the server's context "COPY users, line N"
 * (copy.c's one reading of it), 0 when the context names no line of this COPY's table. */
static lua_Integer failed_line(const PGresult *r)
{
    const char *table;
    size_t tlen;
    lua_Integer line = kr_copy_failed_line(r, &table, &tlen);
    int ours = table && tlen == sizeof KR_USERS_TABLE - 1 && memcmp(table, KR_USERS_TABLE, tlen) == 0;
    return ours ? line : 0;
}

/* Pushes create_many's COPY statement, built from the model: the id, then the fields in
 * kr_user_fields' order (the columns put_line writes). */
static const char *push_copy_sql(lua_State *L)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "COPY " KR_USERS_TABLE " (" KR_USERS_ID);
    for (int k = 0; k < KR_USER_NFIELDS; k++) {
        luaL_addstring(&b, ", ");
        luaL_addstring(&b, kr_user_fields[k].name);
    }
    luaL_addstring(&b, ") FROM STDIN");
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
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

/* One COPY of the batch's text b. Between the COPY's start and its end nothing can raise (no Lua
 * call), so the COPY is always ended: an open one would make every later statement on the
 * connection fail. When sending failed, the end carries an error message, which makes the server
 * abort the COPY, so nothing of the batch is written. */
static int copy_batch(lua_State *L, kr_conn *c, const batchbuf *b)
{
    kr_endstream(c);
    PGresult *r = PQexec(c->pg, push_copy_sql(L));
    lua_pop(L, 1);
    PGresult **box = kr_boxresult(L, r);
    if (r == NULL || PQresultStatus(r) != PGRES_COPY_IN) return copy_failed(L, c, r, box);
    kr_clearbox(box);
    lua_pop(L, 1);
    int sent = 1;
    for (size_t off = 0; sent && off < b->len; off += COPY_CHUNK) {
        size_t n = b->len - off < COPY_CHUNK ? b->len - off : COPY_CHUNK;
        sent = PQputCopyData(c->pg, b->p + off, (int)n) == 1;
    }
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
 * at all; every entry is validated before anything is sent (a refused entry leaves the caller's
 * transaction untouched). A duplicate email, within the batch or against the table, is the
 * server's unique violation: err.index is the entry it hit. The batch's COPY text (about the
 * size of its values plus 43 bytes an entry) is held in memory until the COPY. */
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
    batchbuf *b = batchbuf_new(L, 64 * 1024);
    kr_uuid_pool *ids = (kr_uuid_pool *)lua_newuserdata(L, sizeof(kr_uuid_pool));
    kr_uuid_pool_init(ids);
    int top = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        if (!add_entry(L, 2, i, top, b, ids)) {
            lua_pushnil(L);
            lua_insert(L, -2);
            return 2;
        }
        /* after the first lines, room for the whole batch at their size, so it rarely grows */
        if (i == 16 && n > 16) batchbuf_hint(b, (b->len / 16 + 8) * (size_t)(n - 16));
    }
    int results = copy_batch(L, c, b);
    free(b->p); /* now, not when the collector gets to it */
    b->p = NULL;
    return results;
}

/* The class of create_many's buffer (its __gc frees the text), registered with the model's. */
void kr_users_open_batch(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__gc", batchbuf_gc}, {NULL, NULL}};
    kr_newclass(L, KR_USERS_BATCH_CLASS, NULL, meta);
}
