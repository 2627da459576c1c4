/* users:create_many: every entry validated first, then one COPY (all or nothing) whose lines are
 * written into a 64 KB buffer and sent each time it fills, so the server parses and inserts while
 * the rest of the batch is being formatted. */
#define _GNU_SOURCE /* getrandom */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <uuid/uuid.h>

#include "users.h"

#define COPY_CHUNK 65536
#define ID_BATCH 256 /* random ids drawn per getrandom(2) call */

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

/* Version 4 UUIDs, ID_BATCH at a time from one getrandom(2) call: libuuid's uuid_generate_random
 * re-seeds its own generator on every call, which was most of create_many's instructions. The
 * kernel's CSPRNG gives the 122 random bits; the version (4) and variant (10) bits are set as
 * RFC 4122 says, and libuuid formats the text. */
typedef struct {
    unsigned char raw[ID_BATCH][16];
    int next;
} idpool;

static int ids_refill(idpool *ids)
{
    size_t got = 0;
    unsigned char *p = &ids->raw[0][0];
    while (got < sizeof ids->raw) {
        ssize_t n = getrandom(p + got, sizeof ids->raw - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        got += (size_t)n;
    }
    for (int i = 0; i < ID_BATCH; i++) {
        ids->raw[i][6] = (unsigned char)((ids->raw[i][6] & 0x0f) | 0x40);
        ids->raw[i][8] = (unsigned char)((ids->raw[i][8] & 0x3f) | 0x80);
    }
    ids->next = 0;
    return 1;
}

/* Writes the next id's 36 characters and a NUL at out; 0 when the kernel gave no randomness. */
static int ids_format(idpool *ids, char *out)
{
    if (ids->next == ID_BATCH && !ids_refill(ids)) return 0;
    uuid_unparse_lower(ids->raw[ids->next++], out);
    return 1;
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

/* The entry list[i] checked into v (the entry and its normalized email stay on the stack above
 * top). Returns 0 with the error object at -1, naming the entry, when it is not valid. */
static int check_entry(lua_State *L, int list, lua_Integer i, int top, kr_fieldval *v)
{
    lua_rawgeti(L, list, (int)i);
    if (!lua_istable(L, top + 1)) {
        kr_error_push(L, "invalid_type", "must be a table of fields, got %s", luaL_typename(L, top + 1));
        set_index(L, i);
        return 0;
    }
    if (!kr_users_check_fields(L, top + 1, v, 1)) {
        set_index(L, i);
        return 0;
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

typedef struct {
    kr_conn *c;
    lua_Integer n;
    int sent; /* 0 once a PQputCopyData failed */
} copyjob;

static int send_chunk(copyjob *job, copybuf *b)
{
    if (job->sent && b->len > 0) job->sent = PQputCopyData(job->c->pg, b->p, (int)b->len) == 1;
    b->len = 0;
    return job->sent;
}

/* Under lua_pcall, with the COPY open (1: the list, 2: the job): formats every entry's line (a
 * new id first) and sends the buffer each time it holds COPY_CHUNK bytes. Entries were checked
 * before the COPY began; checking one again only yields its values (an entry that fails now, a
 * list changed by no one, raises, and the COPY is aborted). */
static int copy_lines(lua_State *L)
{
    copyjob *job = (copyjob *)lua_touserdata(L, 2);
    lua_settop(L, 2);
    copybuf b;
    b.cap = COPY_CHUNK + 4096;
    b.len = 0;
    b.p = (char *)lua_newuserdata(L, b.cap);
    b.slot = lua_gettop(L);
    idpool *ids = (idpool *)lua_newuserdata(L, sizeof(idpool));
    ids->next = ID_BATCH;
    int top = lua_gettop(L);
    for (lua_Integer i = 1; i <= job->n && job->sent; i++) {
        kr_fieldval v[KR_USER_NFIELDS];
        if (!check_entry(L, 1, i, top, v)) return lua_error(L);
        buf_reserve(L, &b, 37);
        if (!ids_format(ids, b.p + b.len)) kr_error_raise(L, "random_failed", "getrandom: %s", strerror(errno));
        b.len += 36;
        for (int k = 0; k < KR_USER_NFIELDS; k++) {
            buf_reserve(L, &b, 1);
            b.p[b.len++] = '\t';
            /* COPY's column order is kr_user_fields' order; an absent is_active gets the table's default */
            add_copy_value(L, &b, v[k].set ? v[k].s : NULL, v[k].len, kr_user_fields[k].kind == K_BOOL ? "true" : "\\N");
        }
        buf_reserve(L, &b, 1);
        b.p[b.len++] = '\n';
        lua_settop(L, top); /* the normalized email is in the buffer now */
        if (b.len >= COPY_CHUNK) send_chunk(job, &b);
    }
    send_chunk(job, &b);
    return 0;
}

static int copy_batch(lua_State *L, kr_conn *c, lua_Integer n)
{
    kr_endstream(c);
    PGresult *r = PQexec(c->pg, "COPY users (id, email, first_name, last_name, profile_image_url, is_active) FROM STDIN");
    PGresult **box = kr_boxresult(L, r);
    if (r == NULL || PQresultStatus(r) != PGRES_COPY_IN) return copy_failed(L, c, r, box);
    kr_clearbox(box);
    lua_pop(L, 1);
    copyjob job = {c, n, 1};
    lua_pushcfunction(L, copy_lines);
    lua_pushvalue(L, 2);
    lua_pushlightuserdata(L, &job);
    int status = lua_pcall(L, 2, 0, 0);
    /* Ended either way: an open COPY would make every later statement on the connection fail.
     * An error message makes the server abort the COPY, so nothing of the batch is written. */
    const char *abort = status != LUA_OK ? "kronos: formatting the batch failed" : job.sent ? NULL : "kronos: sending the batch failed";
    int ended = PQputCopyEnd(c->pg, abort) == 1;
    PGresult *extra;
    r = ended ? PQgetResult(c->pg) : NULL;
    if (status != LUA_OK) {
        PQclear(r);
        while (ended && (extra = PQgetResult(c->pg)) != NULL) PQclear(extra);
        return lua_error(L);
    }
    if (!ended) return kr_error_result(L, c, NULL);
    box = kr_boxresult(L, r);
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
 * server's unique violation: err.index is the entry it hit. */
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
    for (lua_Integer i = 1; i <= n; i++) {
        kr_fieldval v[KR_USER_NFIELDS];
        if (!check_entry(L, 2, i, 2, v)) {
            lua_pushnil(L);
            lua_insert(L, -2);
            return 2;
        }
        lua_settop(L, 2);
    }
    return copy_batch(L, c, n);
}
