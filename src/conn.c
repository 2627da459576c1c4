/* The connection: connect, exec, script, rows, transaction, close. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"

/* ---- connecting ------------------------------------------------------------------------ */

/* Replaces every occurrence of secret in the string at -1 with "********". */
static void redact(lua_State *L, const char *secret)
{
    if (secret == NULL || *secret == '\0') return;
    const char *msg = lua_tostring(L, -1);
    if (strstr(msg, secret) == NULL) return;
    luaL_Buffer b;
    size_t slen = strlen(secret);
    luaL_buffinit(L, &b);
    for (const char *hit; (hit = strstr(msg, secret)) != NULL; msg = hit + slen) {
        luaL_addlstring(&b, msg, (size_t)(hit - msg));
        luaL_addstring(&b, "********");
    }
    luaL_addstring(&b, msg);
    luaL_pushresult(&b);
    lua_remove(L, -2);
}

/* The password of a URI or keyword string is whatever libpq parses out of it. A string that
 * does not parse may still hold one, and libpq's message may quote any part of it: then the
 * message is replaced, since no redaction can know where such a password starts and ends. */
static void redact_conninfo(lua_State *L, const char *conninfo)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (err) PQfreemem(err);
    /* A URI with "user:secret@" whose secret libpq did not read as the password (an unencoded
     * '/' or '?' in it ends the authority early) has parts of it in other fields. */
    const char *scheme = strstr(conninfo, "://");
    const char *at = scheme ? strrchr(scheme, '@') : NULL;
    const char *colon = scheme ? strchr(scheme + 3, ':') : NULL;
    int uri_secret = at && colon && colon < at;
    const char *parsed = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0) parsed = o->val;
    if (parsed) redact(L, parsed);
    int misread = uri_secret && parsed == NULL;
    if ((opts == NULL && (strstr(conninfo, "password") || uri_secret)) || misread) {
        lua_pop(L, 1);
        lua_pushliteral(L, "invalid connection string (libpq's message is not shown: the string holds a password)");
    }
    if (opts) PQconninfoFree(opts);
}

/* Keyword/value arrays for PQconnectdbParams, built on the Lua stack (strings stay referenced). */
#define KR_MAXKW 64
typedef struct {
    const char *kw[KR_MAXKW + 1];
    const char *val[KR_MAXKW + 1];
    int n;
} kwlist;

static void kw_add(lua_State *L, kwlist *k, const char *kw, const char *val)
{
    if (k->n >= KR_MAXKW) kr_error_raise(L, "bad_argument", "too many connection parameters (at most %d)", KR_MAXKW);
    k->kw[k->n] = kw;
    k->val[k->n] = val;
    k->n++;
}

static const char *database_url(void)
{
    const char *url = getenv("DATABASE_URL");
    return url && *url ? url : NULL;
}

/* The message at -1 without any password of the keywords, their expanded strings, the
 * connection itself (libpq's .pgpass lookup) or PGPASSWORD. */
static void redact_all(lua_State *L, const kwlist *k, PGconn *pg)
{
    for (int i = 0; i < k->n; i++) {
        if (strcmp(k->kw[i], "password") == 0) redact(L, k->val[i]);
        else if (strcmp(k->kw[i], "dbname") == 0) redact_conninfo(L, k->val[i]);
    }
    if (pg) redact(L, PQpass(pg));
    redact(L, getenv("PGPASSWORD"));
}

/* Session settings kronos relies on: UTC and ISO dates. A SET runs only when the server's
 * defaults differ; PgBouncer tracks both parameters, so this survives transaction pooling.
 * A later SET DateStyle by the user is undone by kr_conn_ready (see there). */
static int session_setup(kr_conn *c)
{
    const char *tz = PQparameterStatus(c->pg, "TimeZone");
    const char *ds = PQparameterStatus(c->pg, "DateStyle");
    int utc = tz && (strcmp(tz, "UTC") == 0 || strcmp(tz, "Etc/UTC") == 0);
    int iso = ds && strncmp(ds, "ISO", 3) == 0;
    if (utc && iso) return 1;
    PGresult *r = PQexec(c->pg, "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, MDY'");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
}

#define KR_CONNS_KEY "kronos.conns"   /* registry: weak {[light kr_conn] = connection} */

/* A connection carries a uservalue table (notice handler, decoders, a weak ref to its open
 * stream), and the registry maps its C struct back to it weakly, so that C code holding only the
 * kr_conn can reach that table without keeping the connection alive. */
static kr_conn *newconn(lua_State *L)
{
    kr_conn *c = (kr_conn *)lua_newuserdata(L, sizeof(kr_conn));
    memset(c, 0, sizeof *c);
    c->notices_tail = &c->notices;
    luaL_setmetatable(L, KR_CONN_CLASS);
    lua_newtable(L);
    lua_newtable(L); /* env.weak: {stream = state}, weak values */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "weak");
    kr_setuservalue(L, -2);
    lua_getfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
    lua_pushlightuserdata(L, c);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return c;
}

void kr_conn_env(lua_State *L, kr_conn *c)
{
    lua_getfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
    lua_pushlightuserdata(L, c);
    lua_rawget(L, -2);
    if (lua_isuserdata(L, -1)) {
        kr_getuservalue(L, -1);
        lua_replace(L, -3);
        lua_pop(L, 1);
    } else { /* being collected: an empty table stands in */
        lua_pop(L, 2);
        lua_newtable(L);
    }
}

static int finish_connect(lua_State *L, kr_conn *c, const kwlist *k)
{
    if (PQstatus(c->pg) != CONNECTION_OK) {
        kr_error_pushoneline(L, PQerrorMessage(c->pg));
        redact_all(L, k, c->pg);
        PQfinish(c->pg);
        c->pg = NULL;
        const char *msg = lua_tostring(L, -1);
        return kr_error_return(L, "connection", "%s", msg);
    }
    /* Notices (DROP ... IF EXISTS) are not errors: libpq would print them to stderr; they are
     * collected for conn:on_notice instead, or dropped. */
    PQsetNoticeReceiver(c->pg, kr_notice_receiver, c);
    if (!session_setup(c)) {
        int n = kr_error_result(L, c, NULL);
        PQfinish(c->pg);
        c->pg = NULL;
        return n;
    }
    return 1; /* the connection, on top */
}

/* Adds the table's keywords (except url) to k; their string copies stay on the stack. */
static void table_keywords(lua_State *L, int t, kwlist *k)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING) kr_error_arg(L, t, "connection parameter names must be strings");
        const char *key = lua_tostring(L, -2);
        if (strcmp(key, "url") != 0 && strcmp(key, "decode") != 0 && strcmp(key, "encode") != 0) {
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                kr_error_arg(L, t, "connection parameter '%s' must be a string or number", key);
            kr_checkstack(L, 3);
            lua_pushvalue(L, -1);
            const char *val = lua_tostring(L, -1); /* the copy stays on the stack: val lives on */
            lua_insert(L, -3);
            kw_add(L, k, key, val);
        }
        lua_pop(L, 1);
    }
}

/* kronos.connect([conninfo | {url = ..., keyword = value, ...}]) */
static int l_connect(lua_State *L)
{
    int t = lua_type(L, 1);
    if (t != LUA_TNONE && t != LUA_TNIL && t != LUA_TSTRING && t != LUA_TTABLE)
        kr_error_arg(L, 1, "conninfo string or table expected, got %s", luaL_typename(L, 1));
    lua_settop(L, 1);
    kwlist k;
    k.n = 0;
    /* Order matters: libpq lets later entries override earlier ones, and the expanded string
     * (URL or key=value) sits between the defaults and the table's own keywords. */
    if (getenv("PGCONNECT_TIMEOUT") == NULL) kw_add(L, &k, "connect_timeout", "10");
    kw_add(L, &k, "fallback_application_name", "kronos");
    kw_add(L, &k, "client_encoding", "UTF8");
    const char *conninfo = NULL;
    if (t == LUA_TTABLE) {
        lua_getfield(L, 1, "url");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING) kr_error_arg(L, 1, "field 'url' must be a string");
        /* no url: the keywords refine DATABASE_URL, as they would refine the PG* variables */
        conninfo = lua_isstring(L, -1) ? lua_tostring(L, -1) : database_url();
    } else if (t == LUA_TSTRING) {
        conninfo = lua_tostring(L, 1);
    } else {
        conninfo = database_url();
    }
    if (conninfo && *conninfo) kw_add(L, &k, "dbname", conninfo);
    if (t == LUA_TTABLE) table_keywords(L, 1, &k);
    k.kw[k.n] = NULL;
    k.val[k.n] = NULL;
    kr_conn *c = newconn(L);
    c->pg = PQconnectdbParams(k.kw, k.val, 1);
    if (c->pg == NULL) return kr_error_return(L, "connection", "out of memory");
    int n = finish_connect(L, c, &k);
    if (n == 1 && t == LUA_TTABLE) { /* {decode = {...}, encode = {...}}: conn:set_decode/set_encode */
        static const char *const opts[][2] = {{"decode", "set_decode"}, {"encode", "set_encode"}};
        for (int i = 0; i < 2; i++) {
            lua_getfield(L, 1, opts[i][0]);
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                continue;
            }
            int conn = lua_gettop(L) - 1;
            lua_getfield(L, conn, opts[i][1]);
            lua_pushvalue(L, conn);
            lua_pushvalue(L, -3);
            lua_call(L, 2, 0);
            lua_pop(L, 1);
        }
    }
    return n;
}

/* ---- running statements ---------------------------------------------------------------- */

/* Reads and frees every pending result. A COPY would never end by itself (libpq hands out a
 * new COPY result on each call), so one that kronos is not serving is ended here. */
void kr_drain(PGconn *pg)
{
    PGresult *r;
    while (pg && (r = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_BOTH) {
            if (PQputCopyEnd(pg, "the COPY was abandoned") < 0) return;
        } else if (st == PGRES_COPY_OUT) {
            char *buf;
            int n;
            while ((n = PQgetCopyData(pg, &buf, 0)) > 0) PQfreemem(buf);
            if (n == -2) return;
        }
        if (PQstatus(pg) == CONNECTION_BAD) return;
    }
}

static int is_copy(ExecStatusType st)
{
    return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

/* Cuts short what the connection is sending (a rows() stream, a copy_to): the open iterator is
 * told by stream_gen that it is over, the server is asked to cancel (unless stream_drain asks to
 * read the rest instead), and every pending result is read. The one way both end early. */
void kr_cancel_drain(kr_conn *c)
{
    c->stream_gen++;
    PGcancel *cancel = c->stream_drain ? NULL : PQgetCancel(c->pg);
    if (cancel) {
        char errbuf[256];
        PQcancel(cancel, errbuf, sizeof errbuf);
        PQfreeCancel(cancel);
    }
    kr_drain(c->pg);
}

void kr_endstream(kr_conn *c)
{
    if (!c->streaming) return;
    c->streaming = 0;
    kr_cancel_drain(c);
}

/* The open rows() stream's state table {conn, generation, names = , buf = , pos = , err = }
 * pushed when its loop is still reachable (the connection refers to it weakly), else nil. */
static void push_open_stream(lua_State *L, kr_conn *c)
{
    kr_conn_env(L, c);
    lua_getfield(L, -1, "weak");
    lua_getfield(L, -1, "stream");
    lua_replace(L, -3);
    lua_pop(L, 1);
}

/* Another statement is about to run while a stream is open: its remaining rows are read into
 * state.buf (converted as the iterator would), so the loop goes on from memory. The memory cost
 * is every remaining row at once, as conn:exec would hold them. An error ending the stream is kept
 * in state.err for the iterator to raise after the rows. A stream whose loop is gone (collected)
 * is cancelled instead. */
static void stream_buffer(lua_State *L, kr_conn *c)
{
    kr_checkstack(L, 8);
#if LUA_VERSION_NUM < 504
    /* LuaJIT has no closing value: a loop left by break is told from a live one by whether its
     * iterator can still be reached, once per interrupted stream. */
    lua_gc(L, LUA_GCCOLLECT, 0);
#endif
    push_open_stream(L, c);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        kr_endstream(c);
        return;
    }
    int state = lua_gettop(L);
    lua_rawgeti(L, state, 2);
    unsigned gen = (unsigned)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (gen != c->stream_gen) { /* not this stream's state */
        lua_pop(L, 1);
        kr_endstream(c);
        return;
    }
    lua_newtable(L);
    int buf = lua_gettop(L);
    lua_pushvalue(L, buf);
    lua_setfield(L, state, "buf");
    lua_pushinteger(L, 1);
    lua_setfield(L, state, "pos");
    c->streaming = 0; /* the results are read here: nothing to cancel if a conversion raises */
    c->stream_gen++;
    int n = 0;
    PGresult *res;
    while ((res = PQgetResult(c->pg)) != NULL) {
        PGresult **box = kr_boxresult(L, res);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            lua_getfield(L, state, "names");
            if (!lua_istable(L, -1)) {
                lua_pop(L, 1);
                kr_pushcolnames(L, res);
                lua_pushvalue(L, -1);
                lua_setfield(L, state, "names");
            }
            kr_pushrow(L, res, 0, PQnfields(res), -1);
            lua_remove(L, -2);
            lua_rawseti(L, buf, ++n);
        } else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            kr_error_result(L, c, res);
            lua_setfield(L, state, "err");
            lua_pop(L, 1);
            if (is_copy(st)) kr_drain(c->pg);
        }
        kr_clearbox(box);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
}

/* Before each statement: see kronos.h. DateStyle: kronos's conversions (and users:list) read
 * ISO dates, and PostgreSQL reports every change of DateStyle to libpq; a user's
 * SET DateStyle = 'SQL, DMY' is turned into 'ISO, DMY' before the next statement, keeping the
 * field order the user chose for reading dates. */
void kr_conn_ready(lua_State *L, kr_conn *c)
{
    if (c->copying == 1 || c->pipelining)
        kr_error_raise(L, "connection_busy", "the connection is running %s: no other statement can run meanwhile",
                       c->copying == 1 ? "a COPY FROM" : "a pipeline");
    if (c->copying == 2) kr_copy_end(c);
    if (c->streaming) stream_buffer(L, c);
    if (c->pg == NULL) return;
    if (c->deallocs) kr_statement_flush(c);
    const char *ds = PQparameterStatus(c->pg, "DateStyle");
    if (ds && strncmp(ds, "ISO", 3) != 0 && PQtransactionStatus(c->pg) != PQTRANS_INERROR) {
        const char *order = strchr(ds, ',');
        char sql[80];
        order = order ? order + 1 : "";
        while (*order == ' ') order++;
        int known = strcmp(order, "DMY") == 0 || strcmp(order, "YMD") == 0;
        snprintf(sql, sizeof sql, "SET DateStyle TO 'ISO, %s'", known ? order : "MDY");
        PQclear(PQexec(c->pg, sql));
    }
}

/* Leaves the boxed result on the stack when it returns it. Inside a transaction kronos opened
 * (conn:transaction, a migration run) a statement after which the server is idle has ended it:
 * that is remembered, so the statements that follow are refused and the opener fails. */
PGresult *kr_finish(lua_State *L, kr_conn *c, PGresult *res)
{
    if (c->txdepth > 0 && c->pg && PQtransactionStatus(c->pg) == PQTRANS_IDLE) c->tx_ended = 1;
    PGresult **box = kr_boxresult(L, res);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) return res;
    if (is_copy(st)) {
        kr_clearbox(box);
        kr_drain(c->pg);
        kr_error_return(L, "feature_not_supported", "COPY FROM STDIN / TO STDOUT runs through conn:copy_from / conn:copy_to");
    } else {
        kr_error_result(L, c, res);
        kr_clearbox(box); /* the error has copied what it needs */
    }
    lua_remove(L, -3);
    return NULL;
}

/* Refuses a statement once the transaction kronos opened was ended under it: it would run
 * outside, autocommitted, while its opener still counts it as part of the transaction.
 * Returns 1, or pushes nil, err and returns 0. */
int kr_tx_open(lua_State *L, kr_conn *c)
{
    if (c->txdepth == 0 || !c->tx_ended) return 1;
    kr_error_return(L, "transaction_ended", "the transaction was ended by a COMMIT or ROLLBACK inside it; "
                    "no statement runs until its conn:transaction (or migration) returns");
    return 0;
}

static PGresult *execparams(lua_State *L, kr_conn *c, const char *sql, const kr_params *p)
{
    if (!kr_tx_open(L, c)) return NULL;
    kr_conn_ready(L, c);
    PGresult *res = PQexecParams(c->pg, sql, p->n, p->types, p->values, p->lengths, p->formats, 0);
    return kr_finish(L, c, res);
}

PGresult *kr_execscript(lua_State *L, kr_conn *c, const char *sql)
{
    if (!kr_tx_open(L, c)) return NULL;
    kr_conn_ready(L, c);
    return kr_finish(L, c, PQexec(c->pg, sql));
}

const char *kr_checksql(lua_State *L, int idx)
{
    size_t len;
    return kr_checktext(L, idx, &len, "SQL");
}

/* A result in the given shape, then the array and JSON columns decoded in place when the
 * connection asks for it. */
static void conn_pushrows_as(lua_State *L, kr_conn *c, const PGresult *res, int shape)
{
    kr_pushrows_as(L, res, shape);
    if (!c->decode_arrays && !c->decode_json) return;
    int ncols = PQnfields(res), nrows = PQntuples(res);
    for (int j = 0; j < ncols; j++) {
        Oid type = PQftype(res, j);
        if (!kr_array_decodes(c, type)) continue;
        const char *name = PQfname(res, j);
        if (shape == KR_ROWS_COLUMNS) lua_rawgeti(L, -1, j + 1);
        for (int i = 0; i < nrows; i++) {
            if (PQgetisnull(res, i, j)) continue;
            if (shape != KR_ROWS_COLUMNS) lua_rawgeti(L, -1, i + 1);
            kr_array_push(L, c, type, PQgetvalue(res, i, j), (size_t)PQgetlength(res, i, j));
            if (shape == KR_ROWS_COLUMNS) {
                lua_rawseti(L, -2, i + 1);
            } else {
                if (shape == KR_ROWS_ARRAYS)
                    lua_rawseti(L, -2, j + 1);
                else
                    lua_setfield(L, -2, name);
                lua_pop(L, 1);
            }
        }
        if (shape == KR_ROWS_COLUMNS) lua_pop(L, 1);
    }
}

void kr_conn_pushrows(lua_State *L, kr_conn *c, const PGresult *res)
{
    conn_pushrows_as(L, c, res, KR_ROWS_NAMED);
}

/* conn:exec(sql, ...) and its compact shapes: the result in the given shape | nil, err */
static int exec_as(lua_State *L, int shape)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    kr_params p;
    kr_checkparams_conn(L, c, 3, lua_gettop(L) - 2, &p);
    PGresult *res = execparams(L, c, sql, &p);
    kr_notice_deliver(L, c);
    if (res == NULL) return 2;
    conn_pushrows_as(L, c, res, shape);
    kr_dropbox(L, -2);
    return 1;
}

/* conn:exec(sql, ...) -> rows (tables keyed by column name) | nil, err */
static int l_exec(lua_State *L) { return exec_as(L, KR_ROWS_NAMED); }
/* conn:exec_arrays(sql, ...) -> rows as arrays (row[j]: column j) | nil, err */
static int l_exec_arrays(lua_State *L) { return exec_as(L, KR_ROWS_ARRAYS); }
/* conn:exec_columns(sql, ...) -> one array per column (t[j][i]), t.n rows | nil, err */
static int l_exec_columns(lua_State *L) { return exec_as(L, KR_ROWS_COLUMNS); }

/* conn:script(sql) -> rows of the last statement | nil, err: several statements, no parameters. */
static int l_script(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    PGresult *res = kr_execscript(L, c, sql);
    kr_notice_deliver(L, c);
    if (res == NULL) return 2;
    kr_conn_pushrows(L, c, res);
    kr_dropbox(L, -2);
    return 1;
}

/* ---- streaming ------------------------------------------------------------------------- */

/* One row of a single-row result, with the connection's decoders; names at names_idx. */
static void push_stream_row(lua_State *L, kr_conn *c, const PGresult *res, int names_idx)
{
    names_idx = lua_absindex(L, names_idx);
    kr_pushrow(L, res, 0, PQnfields(res), names_idx);
    if (!c->decode_arrays && !c->decode_json) return;
    for (int j = 0; j < PQnfields(res); j++) {
        Oid type = PQftype(res, j);
        if (PQgetisnull(res, 0, j) || !kr_array_decodes(c, type)) continue;
        kr_array_push(L, c, type, PQgetvalue(res, 0, j), (size_t)PQgetlength(res, 0, j));
        lua_rawgeti(L, names_idx, j + 1);
        lua_insert(L, -2);
        lua_rawset(L, -3);
    }
}

/* Upvalues: 1 connection, 2 the stream's state table {conn, generation, names, buf, pos, err,
 * first}. */
static int rows_iter(lua_State *L)
{
    kr_conn *c = (kr_conn *)lua_touserdata(L, lua_upvalueindex(1));
    int state = lua_upvalueindex(2);
    lua_getfield(L, state, "buf");
    if (lua_istable(L, -1)) { /* read into memory when another statement ran */
        lua_getfield(L, state, "pos");
        lua_Integer pos = lua_tointeger(L, -1);
        lua_rawgeti(L, -2, pos);
        if (!lua_isnil(L, -1)) {
            lua_pushnil(L);
            lua_rawseti(L, -4, pos); /* handed out: the loop's memory shrinks as it goes */
            lua_pushinteger(L, pos + 1);
            lua_setfield(L, state, "pos");
            return 1;
        }
        lua_getfield(L, state, "err");
        if (!lua_isnil(L, -1)) {
            lua_pushnil(L);
            lua_setfield(L, state, "err");
            return lua_error(L);
        }
        return 0;
    }
    lua_pop(L, 1);
    if (c->pg == NULL) kr_error_raise(L, "connection", "rows(): the connection was closed during the loop");
    lua_rawgeti(L, state, 2);
    if ((unsigned)lua_tointeger(L, -1) != c->stream_gen)
        kr_error_raise(L, "iterator_ended", "rows(): this iterator has ended (its loop was closed, or the connection was reset)");
    lua_pop(L, 1);
    if (!c->streaming) return 0;
    PGresult *res = NULL;
    lua_getfield(L, state, "first");
    if (!lua_isnil(L, -1)) { /* read ahead by the statement's rows(): its box moves here */
        PGresult **first = (PGresult **)lua_touserdata(L, -1);
        res = *first;
        *first = NULL;
        lua_pushnil(L);
        lua_setfield(L, state, "first");
    } else {
        res = PQgetResult(c->pg);
    }
    lua_pop(L, 1);
    PGresult **box = kr_boxresult(L, res);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_SINGLE_TUPLE) {
        lua_getfield(L, state, "names");
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            kr_pushcolnames(L, res);
            lua_pushvalue(L, -1);
            lua_setfield(L, state, "names");
        }
        push_stream_row(L, c, res, -1);
        kr_clearbox(box);
        kr_notice_deliver(L, c);
        return 1;
    }
    /* The end of the stream, or an error: read what is left so the connection is usable. */
    c->streaming = 0;
    int ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    if (is_copy(st))
        kr_error_return(L, "feature_not_supported", "COPY FROM STDIN / TO STDOUT runs through conn:copy_from / conn:copy_to");
    else if (!ok)
        kr_error_result(L, c, res);
    kr_clearbox(box);
    kr_drain(c->pg); /* for a COPY, this result was only its announcement: drain() ends it */
    kr_notice_deliver(L, c);
    return ok ? 0 : lua_error(L); /* raises the error object: a for loop cannot take nil, err */
}

/* The closing value of the for loop: Lua 5.4 calls it when the loop ends by break or error. */
static int stream_close(lua_State *L)
{
    lua_rawgeti(L, 1, 1);
    lua_rawgeti(L, 1, 2);
    kr_conn *c = (kr_conn *)lua_touserdata(L, -2);
    if (c && c->pg && (unsigned)lua_tointeger(L, -1) == c->stream_gen) kr_endstream(c);
    lua_pushnil(L);
    lua_setfield(L, 1, "buf"); /* rows read into memory are let go */
    return 0;
}

int kr_stream_open(lua_State *L, kr_conn *c, PGresult *first)
{
    if (first == NULL) PQsetSingleRowMode(c->pg);
    /* Inside a transaction an abandoned stream is drained, since a cancel would abort it. */
    c->stream_drain = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    c->streaming = 1;
    c->stream_gen++;
    lua_getfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
    lua_pushlightuserdata(L, c);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    int conn = lua_gettop(L);
    lua_createtable(L, 2, 4); /* {conn, generation, ...} with __close */
    int state = conn + 1;
    lua_pushvalue(L, conn);
    lua_rawseti(L, state, 1);
    lua_pushinteger(L, (lua_Integer)c->stream_gen);
    lua_rawseti(L, state, 2);
    luaL_setmetatable(L, "kronos.stream");
    if (first) {
        kr_boxresult(L, first);
        lua_setfield(L, state, "first");
    }
    kr_conn_env(L, c);
    lua_getfield(L, -1, "weak");
    lua_pushvalue(L, state);
    lua_setfield(L, -2, "stream");
    lua_pop(L, 2);
    lua_pushvalue(L, conn);
    lua_pushvalue(L, state);
    lua_pushcclosure(L, rows_iter, 2);
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushvalue(L, state);
    lua_remove(L, conn);
    lua_remove(L, conn);
    return 4;
}

/* for row in conn:rows(sql, ...) do ... end: one row in memory at a time (single-row mode). */
static int l_rows(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    kr_params p;
    kr_checkparams_conn(L, c, 3, lua_gettop(L) - 2, &p);
    if (!kr_tx_open(L, c)) return lua_error(L);
    kr_conn_ready(L, c);
    if (!PQsendQueryParams(c->pg, sql, p.n, p.types, p.values, p.lengths, p.formats, 0)) {
        kr_error_result(L, c, NULL);
        return lua_error(L); /* the error object, as the iterator raises it */
    }
    return kr_stream_open(L, c, NULL);
}

/* ---- transactions ---------------------------------------------------------------------- */

static int simple(lua_State *L, kr_conn *c, const char *sql)
{
    PGresult *res = kr_execscript(L, c, sql);
    if (res == NULL) return 0;
    kr_dropbox(L, -1);
    lua_pop(L, 1);
    return 1;
}

/* Ends the transaction (or savepoint) fn ran in, after an error: nothing else is sent first. */
static void rollback(kr_conn *c, int nested, int depth)
{
    char sql[96];
    if (nested)
        snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT kronos_%d; RELEASE SAVEPOINT kronos_%d", depth, depth);
    else
        strcpy(sql, "ROLLBACK");
    c->stream_drain = 0; /* the work is rolled back anyway: cancel an abandoned stream */
    kr_endstream(c);
    PQclear(PQexec(c->pg, sql)); /* a lost connection has rolled back already */
}

/* conn:transaction(fn, ...): BEGIN (or SAVEPOINT when nested), fn(conn, ...), COMMIT.
 * If fn raises, ROLLBACK (TO SAVEPOINT) and re-raise the same value. A transaction the caller
 * opened with its own BEGIN counts as an outer one, so it is never committed from here. */
static int l_transaction(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (lua_type(L, 2) != LUA_TFUNCTION) kr_error_arg(L, 2, "function expected, got %s", luaL_typename(L, 2));
    int nargs = lua_gettop(L) - 2;
    int depth = c->txdepth;
    kr_conn_ready(L, c);
    int nested = depth > 0 || PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    char sql[64];
    if (nested)
        snprintf(sql, sizeof sql, "SAVEPOINT kronos_%d", depth);
    else
        strcpy(sql, "BEGIN");
    if (!simple(L, c, sql)) return 2;
    if (depth == 0) c->tx_ended = 0;
    c->txdepth = depth + 1;
    kr_checkstack(L, nargs + 2);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    for (int i = 0; i < nargs; i++) lua_pushvalue(L, 3 + i);
    int base = lua_gettop(L) - nargs - 2;
    int status = lua_pcall(L, nargs + 1, LUA_MULTRET, 0);
    if (c->pg == NULL) { /* fn closed the connection: nothing to finish */
        c->txdepth = 0;
        if (status != 0) return lua_error(L);
        return lua_gettop(L) - base;
    }
    c->txdepth = depth;
    if (status != 0) {
        rollback(c, nested, depth);
        return lua_error(L);
    }
    kr_endstream(c);
    if (c->tx_ended || (!nested && PQtransactionStatus(c->pg) == PQTRANS_IDLE)) {
        /* fn ran COMMIT or ROLLBACK: what came after it ran outside, so nothing is one unit */
        if (!nested) rollback(c, 0, depth); /* a transaction fn began again is not ours to commit */
        c->tx_ended = c->tx_ended && depth > 0; /* the outer transaction() fails too */
        return kr_error_return(L, "transaction_ended", "the function ended the transaction itself (COMMIT or ROLLBACK "
                               "inside conn:transaction): its work did not run as one transaction");
    }
    if (PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
        /* fn caught an SQL error itself: committing would silently lose the work */
        rollback(c, nested, depth);
        return kr_error_return(L, "transaction_rollback", "the transaction was aborted by an earlier error and rolled back");
    }
    if (nested)
        snprintf(sql, sizeof sql, "RELEASE SAVEPOINT kronos_%d", depth);
    else
        strcpy(sql, "COMMIT");
    int nres = lua_gettop(L) - base;
    PGresult *res = kr_execscript(L, c, sql);
    if (res == NULL) return 2;
    /* COMMIT of an aborted transaction succeeds as "ROLLBACK": the work is lost, so say so. */
    int rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    kr_dropbox(L, -1);
    lua_pop(L, 1);
    kr_notice_deliver(L, c);
    if (rolled_back)
        return kr_error_return(L, "transaction_rollback", "the transaction was aborted by an earlier error and rolled back");
    return nres;
}

/* ---- the rest -------------------------------------------------------------------------- */

/* Frees what the connection holds in C (libpq's connection, queued notices and names). */
static void conn_free(kr_conn *c)
{
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    c->streaming = 0;
    c->pipelining = 0;
    c->copying = 0;
    kr_notice_free(c);
    kr_statement_free(c);
}

static int l_close(lua_State *L)
{
    conn_free(kr_checkconn_any(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

static int l_gc(lua_State *L)
{
    conn_free(kr_checkconn_any(L, 1));
    return 0;
}

static const char *orempty(const char *s) { return s ? s : ""; }

static int l_tostring(lua_State *L)
{
    kr_conn *c = kr_checkconn_any(L, 1);
    if (c->pg == NULL)
        lua_pushliteral(L, "kronos.connection (closed)");
    else
        lua_pushfstring(L, "kronos.connection (host=%s port=%s dbname=%s user=%s)", orempty(PQhost(c->pg)),
                        orempty(PQport(c->pg)), orempty(PQdb(c->pg)), orempty(PQuser(c->pg)));
    return 1;
}

static int l_escape(lua_State *L, int identifier)
{
    kr_conn *c = kr_checkconn(L, 1);
    size_t len;
    const char *s = kr_checktext(L, 2, &len, "string"); /* a NUL byte: libpq would cut it there */
    char *out = identifier ? PQescapeIdentifier(c->pg, s, len) : PQescapeLiteral(c->pg, s, len);
    if (out == NULL) {
        kr_error_pushoneline(L, PQerrorMessage(c->pg));
        return kr_error_return(L, "invalid_input", "%s", lua_tostring(L, -1));
    }
    lua_pushstring(L, out);
    PQfreemem(out);
    return 1;
}

static int l_escape_identifier(lua_State *L) { return l_escape(L, 1); }
static int l_escape_literal(lua_State *L) { return l_escape(L, 0); }

/* conn:reset(): reconnects with the same parameters after a lost connection. */
static int l_reset(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    c->streaming = 0;
    c->stream_gen++;
    c->txdepth = 0;
    c->pipelining = 0;
    c->copying = 0;
    kr_statement_free(c); /* the new session has none of the old one's statements */
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK) {
        kr_error_pushoneline(L, PQerrorMessage(c->pg));
        redact(L, PQpass(c->pg));
        return kr_error_return(L, "connection", "%s", lua_tostring(L, -1));
    }
    if (!session_setup(c)) return kr_error_result(L, c, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_status(lua_State *L)
{
    kr_conn *c = kr_checkconn_any(L, 1);
    lua_pushstring(L, c->pg == NULL ? "closed" : PQstatus(c->pg) == CONNECTION_OK ? "ok" : "bad");
    return 1;
}

static int l_backend_pid(lua_State *L)
{
    lua_pushinteger(L, PQbackendPID(kr_checkconn(L, 1)->pg));
    return 1;
}

static int l_server_version(lua_State *L)
{
    lua_pushinteger(L, PQserverVersion(kr_checkconn(L, 1)->pg));
    return 1;
}

static int l_in_transaction(lua_State *L)
{
    PGTransactionStatusType st = PQtransactionStatus(kr_checkconn(L, 1)->pg);
    lua_pushboolean(L, st == PQTRANS_INTRANS || st == PQTRANS_INERROR || st == PQTRANS_ACTIVE);
    return 1;
}

static const luaL_Reg methods[] = {
    {"exec", l_exec},
    {"exec_arrays", l_exec_arrays},
    {"exec_columns", l_exec_columns},
    {"script", l_script},
    {"rows", l_rows},
    {"transaction", l_transaction},
    {"close", l_close},
    {"reset", l_reset},
    {"status", l_status},
    {"backend_pid", l_backend_pid},
    {"server_version", l_server_version},
    {"in_transaction", l_in_transaction},
    {"escape_identifier", l_escape_identifier},
    {"escape_literal", l_escape_literal},
    {NULL, NULL},
};

void kr_addmethods(lua_State *L, const luaL_Reg *fns)
{
    luaL_getmetatable(L, KR_CONN_CLASS);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 2);
}

void kr_open_conn(lua_State *L)
{
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, KR_CONNS_KEY);
    static const luaL_Reg meta[] = {
        {"__gc", l_gc}, {"__close", l_gc}, {"__tostring", l_tostring}, {NULL, NULL},
    };
    static const luaL_Reg stream_meta[] = {{"__close", stream_close}, {NULL, NULL}};
    kr_newclass(L, KR_CONN_CLASS, methods, meta);
    kr_newclass(L, "kronos.stream", NULL, stream_meta);
    lua_pushcfunction(L, l_connect);
    lua_setfield(L, -2, "connect");
}
