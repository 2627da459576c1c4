/* COPY through the connection: conn:copy_from(sql, source) and conn:copy_to(sql).
 *
 * copy_from sends rows in COPY's text format (copytext.c), each value converted exactly as a
 * parameter is (kr_param_text: numbers in their exact text, booleans, kronos.null, bytea as
 * its hex text, kronos.array, kronos.json). The column count is the COPY's own (PQnfields of
 * its COPY_IN result), so a row's trailing nil is a NULL, not a shorter row. The rows go out
 * through one fixed buffer of KR_COPY_BUF bytes: a function source of any length runs in
 * constant memory. Everything that can raise (a conversion, the source function) runs under
 * lua_pcall while the server waits in COPY state: on an error the COPY is ended with
 * PQputCopyEnd(errormsg), which makes the server abort it, the results are read, and the
 * error is raised again, so the connection stays usable.
 *
 * copy_to is an iterator over the rows of a COPY ... TO STDOUT, one row in memory at a time
 * (PQgetCopyData), as arrays of strings with NULL as nil. */
#include <stdlib.h>
#include <string.h>

#include "kronos.h"
#include "convert.h"
#include "copytext.h"

#define KR_COPY_BUF 65536

typedef struct {
    kr_conn *c;
    size_t len;
    char data[KR_COPY_BUF];
} copybuf;

static void flush(lua_State *L, copybuf *b)
{
    if (b->len == 0) return;
    if (PQputCopyData(b->c->pg, b->data, (int)b->len) != 1)
        kr_error_raise(L, "connection", "sending COPY data failed: %s", PQerrorMessage(b->c->pg));
    b->len = 0;
}

static void put(lua_State *L, copybuf *b, const char *s, size_t n)
{
    while (n > 0) {
        if (b->len == KR_COPY_BUF) flush(L, b);
        size_t k = KR_COPY_BUF - b->len < n ? KR_COPY_BUF - b->len : n;
        memcpy(b->data + b->len, s, k);
        b->len += k;
        s += k;
        n -= k;
    }
}

/* s[0..n) through an encoder that writes at most two bytes a byte, in chunks that fit the buffer:
 * COPY's escaping of text (kr_copytext_escape), or hex digits (kr_hex_digits) when hex is set. */
static void put_encoded(lua_State *L, copybuf *b, const char *s, size_t n, int hex)
{
    while (n > 0) {
        if (KR_COPY_BUF - b->len < 2) flush(L, b);
        size_t k = (KR_COPY_BUF - b->len) / 2;
        if (k > n) k = n;
        if (hex) {
            kr_hex_digits(s, k, b->data + b->len);
            b->len += 2 * k;
        } else {
            b->len += kr_copytext_escape(s, k, b->data + b->len);
        }
        s += k;
        n -= k;
    }
}

/* The row at -1 (an array of ncols values) as one line of COPY text. */
static void put_row(lua_State *L, copybuf *b, int ncols, lua_Integer rowno)
{
    int row = lua_gettop(L);
    if (!lua_istable(L, row))
        kr_error_raise(L, "bad_argument", "copy_from: row %d is a %s, not an array of values", (int)rowno, luaL_typename(L, row));
    if ((lua_Integer)lua_rawlen(L, row) > ncols)
        kr_error_raise(L, "bad_argument", "copy_from: row %d has %d values, the COPY has %d columns", (int)rowno,
                       (int)lua_rawlen(L, row), ncols);
    for (int j = 1; j <= ncols; j++) {
        if (j > 1) put(L, b, "\t", 1);
        lua_rawgeti(L, row, j);
        const char *s;
        size_t len;
        int kind = kr_param_text(L, b->c, row + 1, j, &s, &len);
        if (kind == KR_VAL_NULL) {
            put(L, b, "\\N", 2);
        } else {
            if (kind == KR_VAL_BYTEA) put(L, b, "\\\\x", 3); /* bytea's hex input form, its backslash escaped */
            put_encoded(L, b, s, len, kind == KR_VAL_BYTEA);
        }
        lua_settop(L, row);
    }
    put(L, b, "\n", 1);
}

/* Under lua_pcall: 1 copybuf (light), 2 source, 3 ncols. Returns the row count. */
static int feed(lua_State *L)
{
    copybuf *b = (copybuf *)lua_touserdata(L, 1);
    int ncols = (int)lua_tointeger(L, 3);
    lua_Integer n = 0;
    if (lua_istable(L, 2)) {
        lua_Integer rows = (lua_Integer)lua_rawlen(L, 2);
        for (lua_Integer i = 1; i <= rows; i++) {
            lua_rawgeti(L, 2, i);
            put_row(L, b, ncols, i);
            lua_settop(L, 3);
            n++;
        }
    } else {
        for (;;) {
            lua_pushvalue(L, 2);
            lua_call(L, 0, 1);
            if (lua_isnil(L, -1)) break;
            put_row(L, b, ncols, ++n);
            lua_settop(L, 3);
        }
    }
    flush(L, b);
    lua_pushinteger(L, n);
    return 1;
}

/* The server's context of a failed COPY ... FROM names where it stopped, on a line of its own
 * ("COPY t, line 3, column v: ...", after the lines of a trigger that raised): the one reading of
 * it, for conn:copy_from's err.line and users:create_many's err.index. Returns N of the first
 * "COPY <table>, line N", with *table, *tlen the table's name as the server wrote it (pointing
 * into r's text; table and tlen may be NULL); 0, *table NULL when the context has no such line. */
lua_Integer kr_copy_failed_line(const PGresult *r, const char **table, size_t *tlen)
{
    static const char mark[] = ", line ";
    const size_t mlen = sizeof mark - 1;
    const char *unused;
    size_t unused_len;
    if (table == NULL) table = &unused, tlen = &unused_len;
    *table = NULL;
    *tlen = 0;
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    for (const char *ln = ctx; ln != NULL && *ln != '\0';) {
        const char *nl = strchr(ln, '\n');
        const char *end = nl ? nl : ln + strlen(ln);
        if (strncmp(ln, "COPY ", 5) == 0) {
            for (const char *at = ln + 5; (size_t)(end - at) > mlen; at++) {
                if (memcmp(at, mark, mlen) != 0 || at[mlen] < '0' || at[mlen] > '9') continue;
                *table = ln + 5;
                *tlen = (size_t)(at - (ln + 5));
                return (lua_Integer)strtoll(at + mlen, NULL, 10);
            }
        }
        ln = nl ? nl + 1 : NULL;
    }
    return 0;
}

/* Runs the COPY statement of copy_from (want PGRES_COPY_IN) or copy_to (PGRES_COPY_OUT) and
 * returns its announcement. A statement that is not that COPY direction is ended, then raises
 * bad_argument; one the server refused leaves nil, err (NULL), its notices delivered. */
static PGresult *start(lua_State *L, kr_conn *c, const char *sql, ExecStatusType want)
{
    PGresult *r = PQexec(c->pg, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == want) return r;
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        if (st == PGRES_COPY_IN) PQputCopyEnd(c->pg, "kronos: not the COPY direction asked for");
        kr_drain(c->pg);
        kr_error_arg(L, 2, "not a COPY ... %s statement", want == PGRES_COPY_IN ? "FROM STDIN" : "TO STDOUT");
    }
    kr_finish(L, c, r);
    kr_notice_deliver(L, c);
    return NULL;
}

/* conn:copy_from(sql, rows | fn) -> row count | nil, err */
int kr_copy_from(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    if (!lua_istable(L, 3) && !lua_isfunction(L, 3))
        kr_error_arg(L, 3, "array of rows or function expected, got %s", luaL_typename(L, 3));
    lua_settop(L, 3);
    if (!kr_tx_open(L, c)) return 2;
    kr_conn_ready(L, c);
    PGresult *r = start(L, c, sql, PGRES_COPY_IN);
    if (r == NULL) return 2;
    int ncols = PQnfields(r);
    PQclear(r);
    copybuf *b = (copybuf *)lua_newuserdata(L, sizeof *b); /* 4: kept until the end */
    b->c = c;
    b->len = 0;
    lua_pushcfunction(L, feed);
    lua_pushlightuserdata(L, b);
    lua_pushvalue(L, 3);
    lua_pushinteger(L, ncols);
    c->copying = 1;
    int status = lua_pcall(L, 3, 1, 0);
    c->copying = 0;
    if (status != 0) { /* the source raised: the server aborts the COPY, the error goes on */
        PQputCopyEnd(c->pg, "kronos: copy_from's source raised an error");
        kr_drain(c->pg);
        kr_notice_deliver(L, c);
        return lua_error(L);
    }
    if (PQputCopyEnd(c->pg, NULL) != 1) {
        kr_drain(c->pg);
        return kr_error_result(L, c, NULL);
    }
    r = PQgetResult(c->pg);
    lua_Integer line = kr_copy_failed_line(r, NULL, NULL); /* kr_finish frees a failed result */
    PGresult *res = kr_finish(L, c, r);
    kr_drain(c->pg);
    kr_notice_deliver(L, c);
    if (res == NULL) { /* nil, err: add the line the server names */
        if (line > 0) {
            lua_pushinteger(L, line);
            lua_setfield(L, -2, "line");
        }
        return 2;
    }
    lua_Integer n = (lua_Integer)strtoll(PQcmdTuples(res), NULL, 10);
    kr_dropbox(L, -1);
    lua_pushinteger(L, n);
    return 1;
}

/* Upvalues: 1 connection, 2 generation. */
static int copy_iter(lua_State *L)
{
    kr_conn *c = (kr_conn *)lua_touserdata(L, lua_upvalueindex(1));
    if (c->pg == NULL) kr_error_raise(L, "connection", "copy_to(): the connection was closed during the loop");
    if ((unsigned)lua_tointeger(L, lua_upvalueindex(2)) != c->stream_gen || c->copying != 2) {
        if (lua_toboolean(L, lua_upvalueindex(3))) return 0; /* ended normally */
        kr_error_raise(L, "iterator_ended", "copy_to(): this iterator has ended (its loop was closed, or the connection ran another statement)");
    }
    char *buf = NULL;
    int n = PQgetCopyData(c->pg, &buf, 0);
    if (n > 0) {
        size_t len = (size_t)n;
        if (len > 0 && buf[len - 1] == '\n') len--;
        lua_newtable(L);
        size_t pos = 0;
        int col = 0;
        for (;;) {
            size_t flen = kr_copytext_field(buf + pos, len - pos);
            size_t vlen = kr_copytext_unescape(buf + pos, flen, buf + pos); /* in place: never longer */
            col++;
            if (vlen != KR_COPYTEXT_NULL) {
                lua_pushlstring(L, buf + pos, vlen);
                lua_rawseti(L, -2, col);
            }
            pos += flen;
            if (pos >= len) break;
            pos++; /* the tab */
        }
        PQfreemem(buf);
        return 1;
    }
    c->copying = 0;
    c->stream_gen++;
    lua_pushboolean(L, 1);
    lua_replace(L, lua_upvalueindex(3));
    lua_pushinteger(L, (lua_Integer)c->stream_gen);
    lua_replace(L, lua_upvalueindex(2));
    PGresult *r = PQgetResult(c->pg);
    PGresult *res = kr_finish(L, c, r);
    kr_drain(c->pg);
    kr_notice_deliver(L, c);
    if (res == NULL) return lua_error(L);
    return 0;
}

static int copy_close(lua_State *L)
{
    lua_rawgeti(L, 1, 1);
    lua_rawgeti(L, 1, 2);
    kr_conn *c = (kr_conn *)lua_touserdata(L, -2);
    if (c && c->pg && c->copying == 2 && (unsigned)lua_tointeger(L, -1) == c->stream_gen) kr_endcopy(c);
    return 0;
}

/* for row in conn:copy_to(sql) do ... end: rows of COPY ... TO STDOUT as arrays of strings. */
int kr_copy_to(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    lua_settop(L, 2);
    if (!kr_tx_open(L, c)) return lua_error(L);
    kr_conn_ready(L, c);
    int in_block = PQtransactionStatus(c->pg) != PQTRANS_IDLE; /* there a cancel would abort it */
    PGresult *r = start(L, c, sql, PGRES_COPY_OUT);
    if (r == NULL) return lua_error(L);
    PQclear(r);
    c->copying = 2;
    c->stream_drain = in_block;
    c->stream_gen++;
    lua_pushvalue(L, 1);
    lua_pushinteger(L, (lua_Integer)c->stream_gen);
    lua_pushboolean(L, 0);
    lua_pushcclosure(L, copy_iter, 3);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)c->stream_gen);
    lua_rawseti(L, -2, 2);
    luaL_setmetatable(L, KR_COPYSTREAM_CLASS);
    return 4;
}

/* The class of copy_to's closing value (its __close ends the COPY). */
void kr_open_copy(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__close", copy_close}, {NULL, NULL}};
    kr_newclass(L, KR_COPYSTREAM_CLASS, NULL, meta);
}
