/* The session: kronos.connect, and what a connection does for its whole life (reset, close,
 * collection) or reports about itself (status, pid, version, escaping). Connections are made
 * here, with the hooks the core calls before a statement (see conn.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kronos.h"
#include "option.h"

/* What the layers above the core do at its moments, the same for every connection. */
static const kr_conn_hooks hooks = {kr_stream_interrupt, kr_statement_flush};

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

/* Appends a keyword; only the table's own can exceed KR_MAXKW, so the error names argument #1. */
static void kw_add(lua_State *L, kwlist *k, const char *kw, const char *val)
{
    if (k->n >= KR_MAXKW) kr_error_arg(L, 1, "too many connection parameters (at most %d)", KR_MAXKW);
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

/* The keys of kronos.connect's table that are kronos's own (read through option.c's reader);
 * every other key is a libpq keyword, passed through. */
static const char *const own_keys[] = {"url", "decode", "encode", NULL};

static int is_own_key(const char *key)
{
    for (const char *const *o = own_keys; *o; o++)
        if (strcmp(key, *o) == 0) return 1;
    return 0;
}

/* Adds the table's libpq keywords (not kronos's own keys) to k; their string copies stay on the
 * stack. */
static void table_keywords(lua_State *L, int t, kwlist *k)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING) kr_error_arg(L, t, "connection parameter names must be strings");
        const char *key = lua_tostring(L, -2);
        if (!is_own_key(key)) {
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

/* kronos.connect([conninfo | {url = ..., decode = {...}, encode = {...}, keyword = value, ...}])
 * -> conn | nil, err. The table's own keys are checked (bad_argument "opts.url: string expected")
 * before anything connects; its other keys are libpq keywords, passed through. */
int kr_session_connect(lua_State *L)
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
        /* no url: the keywords refine DATABASE_URL, as they would refine the PG* variables */
        conninfo = kr_option_string(L, 1, 1, "opts", "url", NULL);
        if (conninfo == NULL) conninfo = database_url();
    } else if (t == LUA_TSTRING) {
        conninfo = lua_tostring(L, 1);
    } else {
        conninfo = database_url();
    }
    if (conninfo && *conninfo) kw_add(L, &k, "dbname", conninfo);
    if (t == LUA_TTABLE) table_keywords(L, 1, &k);
    k.kw[k.n] = NULL;
    k.val[k.n] = NULL;
    kr_conn *c = kr_conn_new(L, &hooks);
    if (t == LUA_TTABLE) { /* {decode = {...}, encode = {...}}: set (checked) before connecting */
        if (kr_option_typed(L, 1, 1, "opts", "decode", LUA_TTABLE)) kr_decode_options(L, c, -1, 1, "opts.decode");
        lua_pop(L, 1);
        if (kr_option_typed(L, 1, 1, "opts", "encode", LUA_TTABLE)) kr_params_encode_options(L, c, -1, 1, "opts.encode");
        lua_pop(L, 1);
    }
    c->pg = PQconnectdbParams(k.kw, k.val, 1);
    if (c->pg == NULL) return kr_error_return(L, "connection", "out of memory");
    return finish_connect(L, c, &k);
}

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

/* conn:close() -> true: idempotent; the connection stays a closed object. */
int kr_session_close(lua_State *L)
{
    conn_free(kr_checkconn_any(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

/* __gc and __close: close() without a result, so a dropped connection frees its session. */
int kr_session_gc(lua_State *L)
{
    conn_free(kr_checkconn_any(L, 1));
    return 0;
}

static const char *orempty(const char *s) { return s ? s : ""; }

/* tostring(conn): where it is connected (never the password), or that it is closed. */
int kr_session_tostring(lua_State *L)
{
    kr_conn *c = kr_checkconn_any(L, 1);
    if (c->pg == NULL)
        lua_pushliteral(L, "kronos.connection (closed)");
    else
        lua_pushfstring(L, "kronos.connection (host=%s port=%s dbname=%s user=%s)", orempty(PQhost(c->pg)),
                        orempty(PQport(c->pg)), orempty(PQdb(c->pg)), orempty(PQuser(c->pg)));
    return 1;
}

/* conn:escape_identifier(s) / conn:escape_literal(s) -> libpq's quoting for the session's
 * encoding | nil, err (invalid_input: libpq rejects the text). */
static int escape(lua_State *L, int identifier)
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

int kr_session_escape_identifier(lua_State *L) { return escape(L, 1); }
int kr_session_escape_literal(lua_State *L) { return escape(L, 0); }

/* conn:reset(): reconnects with the same parameters after a lost connection. */
int kr_session_reset(lua_State *L)
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

/* conn:status() -> "ok" | "bad" (the connection was lost) | "closed"; works on a closed one. */
int kr_session_status(lua_State *L)
{
    kr_conn *c = kr_checkconn_any(L, 1);
    lua_pushstring(L, c->pg == NULL ? "closed" : PQstatus(c->pg) == CONNECTION_OK ? "ok" : "bad");
    return 1;
}

/* conn:backend_pid() -> the server process's pid, as libpq was told it at startup. */
int kr_session_backend_pid(lua_State *L)
{
    lua_pushinteger(L, PQbackendPID(kr_checkconn(L, 1)->pg));
    return 1;
}

/* conn:server_version() -> PostgreSQL's version number (e.g. 160002). */
int kr_session_server_version(lua_State *L)
{
    lua_pushinteger(L, PQserverVersion(kr_checkconn(L, 1)->pg));
    return 1;
}

/* conn:in_transaction() -> true inside a transaction block (aborted or not). */
int kr_session_in_transaction(lua_State *L)
{
    PGTransactionStatusType st = PQtransactionStatus(kr_checkconn(L, 1)->pg);
    lua_pushboolean(L, st == PQTRANS_INTRANS || st == PQTRANS_INERROR || st == PQTRANS_ACTIVE);
    return 1;
}

