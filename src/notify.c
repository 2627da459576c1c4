/* Notices and notifications of a connection.
 *
 * Notices (RAISE NOTICE, WARNING, "table does not exist, skipping") reach kronos through libpq's
 * notice receiver, a C callback that libpq calls from inside PQexec, PQgetResult and friends.
 * Raising a Lua error there would longjmp through libpq's frames and leave its state broken, and
 * even building a Lua table may raise (memory): so the receiver only copies the fields into a
 * malloc'd list on the connection (at most KR_NOTICES_MAX; more are counted and dropped), and
 * kr_notice_deliver hands them to conn:on_notice's handler once the libpq call has returned.
 * Without a handler nothing is collected: notices are dropped as libpq reports them.
 *
 * Notifications (LISTEN/NOTIFY) are queued by libpq itself as it reads them, during any
 * statement: none is lost between two calls; conn:notifications() and
 * conn:wait_for_notification() take them from that queue. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kronos.h"

typedef struct kr_notice {
    struct kr_notice *next;
    char *field[6]; /* see notice_fields, NULL when the server did not send one */
    char data[];
} kr_notice;

static const struct { int code; const char *key; } notice_fields[6] = {
    {PG_DIAG_SEVERITY_NONLOCALIZED, "severity"}, {PG_DIAG_SQLSTATE, "sqlstate"},
    {PG_DIAG_MESSAGE_PRIMARY, "message"},        {PG_DIAG_MESSAGE_DETAIL, "detail"},
    {PG_DIAG_MESSAGE_HINT, "hint"},              {PG_DIAG_CONTEXT, "context"},
};

/* libpq's callback: copies, never raises, never calls Lua. */
void kr_notice_receiver(void *arg, const PGresult *res)
{
    kr_conn *c = (kr_conn *)arg;
    if (!c->want_notices) return;
    if (c->nnotices >= KR_NOTICES_MAX) {
        c->notices_dropped++;
        return;
    }
    size_t total = 0;
    for (int i = 0; i < 6; i++) {
        const char *v = PQresultErrorField(res, notice_fields[i].code);
        if (v) total += strlen(v) + 1;
    }
    kr_notice *n = (kr_notice *)malloc(sizeof *n + total);
    if (n == NULL) {
        c->notices_dropped++;
        return;
    }
    n->next = NULL;
    char *p = n->data;
    for (int i = 0; i < 6; i++) {
        const char *v = PQresultErrorField(res, notice_fields[i].code);
        n->field[i] = NULL;
        if (v == NULL) continue;
        size_t len = strlen(v) + 1;
        memcpy(p, v, len);
        n->field[i] = p;
        p += len;
    }
    *c->notices_tail = n;
    c->notices_tail = &n->next;
    c->nnotices++;
}

void kr_notice_free(kr_conn *c)
{
    while (c->notices) {
        kr_notice *n = c->notices;
        c->notices = n->next;
        free(n);
    }
    c->notices_tail = &c->notices;
    c->nnotices = 0;
}

/* Pushes the error-like object of a notice: code (the condition name), message, severity,
 * sqlstate, detail, hint, context. */
static void push_notice(lua_State *L, const kr_notice *n)
{
    const char *state = n->field[1];
    const char *code = kr_error_condition(state);
    kr_error_new(L, code ? code : state ? state : "notice", n->field[2] ? n->field[2] : "");
    for (int i = 0; i < 6; i++)
        if (i != 2) kr_error_setfield(L, notice_fields[i].key, n->field[i]);
}

/* Each queued notice is unlinked before its handler runs, so a handler that raises (the error
 * goes to the caller of the kronos function) leaves no notice behind to be delivered twice;
 * the ones still queued are delivered after the next call. */
void kr_notice_deliver(lua_State *L, kr_conn *c)
{
    if (c->notices == NULL && c->notices_dropped == 0) return;
    kr_conn_env(L, c);
    lua_getfield(L, -1, "on_notice");
    lua_remove(L, -2);
    int handler = lua_gettop(L);
    while (c->notices) {
        kr_notice *n = c->notices;
        c->notices = n->next;
        if (c->notices == NULL) c->notices_tail = &c->notices;
        c->nnotices--;
        lua_pushvalue(L, handler);
        push_notice(L, n);
        free(n);
        if (lua_isfunction(L, -2)) lua_call(L, 1, 0);
        else lua_pop(L, 2);
    }
    if (c->notices_dropped > 0 && lua_isfunction(L, handler)) {
        lua_pushvalue(L, handler);
        kr_error_push(L, "notices_dropped", "%d notices were dropped (more than %d arrived during one call)",
                      c->notices_dropped, KR_NOTICES_MAX);
        c->notices_dropped = 0;
        lua_call(L, 1, 0);
    }
    c->notices_dropped = 0;
    lua_pop(L, 1);
}

/* conn:on_notice(fn | nil): fn(notice) is called after each call that received notices. */
static int l_on_notice(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (!lua_isnoneornil(L, 2) && !lua_isfunction(L, 2))
        kr_error_arg(L, 2, "function or nil expected, got %s", luaL_typename(L, 2));
    lua_settop(L, 2);
    kr_conn_env(L, c);
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "on_notice");
    c->want_notices = !lua_isnil(L, 2);
    if (!c->want_notices) kr_notice_free(c);
    lua_pushvalue(L, 1);
    return 1;
}

/* Pushes notification n as {channel, payload, pid} and frees it: the one form both ways of
 * reading notifications return. */
static void push_notification(lua_State *L, PGnotify *n)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, n->relname);
    lua_setfield(L, -2, "channel");
    lua_pushstring(L, n->extra);
    lua_setfield(L, -2, "payload");
    lua_pushinteger(L, n->be_pid);
    lua_setfield(L, -2, "pid");
    PQfreemem(n);
}

/* Moves every notification libpq has queued into an array on the stack; 0 if the socket
 * cannot be read (nil, err pushed instead). */
static int take_notifications(lua_State *L, kr_conn *c)
{
    if (!c->streaming && !PQconsumeInput(c->pg)) {
        kr_error_result(L, c, NULL);
        return 0;
    }
    lua_newtable(L);
    PGnotify *n;
    int i = 0;
    while ((n = PQnotifies(c->pg)) != NULL) {
        push_notification(L, n);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

/* conn:notifications() -> array of {channel, payload, pid}, without waiting. */
static int l_notifications(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    if (!take_notifications(L, c)) return 2;
    kr_notice_deliver(L, c);
    return 1;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* conn:wait_for_notification([timeout_seconds]) -> {channel, payload, pid} | nil, err
 * (err.code "timeout"). No timeout waits for ever; 0 only polls. An open rows() stream is read
 * into memory first (the socket is then the notifications' alone). */
static int l_wait_for_notification(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    double timeout = -1;
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER || !(lua_tonumber(L, 2) >= 0))
            kr_error_arg(L, 2, "timeout in seconds (a number >= 0) expected");
        timeout = (double)lua_tonumber(L, 2);
    }
    if (c->pipelining) kr_error_arg(L, 1, "a pipeline is running");
    kr_conn_ready(L, c);
    double deadline = now_seconds() + timeout;
    for (;;) {
        PGnotify *n = PQnotifies(c->pg);
        if (n == NULL) {
            if (!PQconsumeInput(c->pg)) return kr_error_result(L, c, NULL);
            n = PQnotifies(c->pg);
        }
        if (n != NULL) {
            push_notification(L, n);
            kr_notice_deliver(L, c);
            return 1;
        }
        kr_notice_deliver(L, c);
        double left = timeout < 0 ? -1 : deadline - now_seconds();
        if (timeout >= 0 && left <= 0)
            return kr_error_return(L, "timeout", "no notification within %f seconds", (lua_Number)timeout);
        struct pollfd pfd = {PQsocket(c->pg), POLLIN, 0};
        int ms = left < 0 ? -1 : left > 86400 ? 86400000 : (int)(left * 1000) + 1;
        if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
            return kr_error_return(L, "connection", "waiting for a notification: %s", strerror(errno));
    }
}

void kr_open_notify(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"on_notice", l_on_notice},
        {"notifications", l_notifications},
        {"wait_for_notification", l_wait_for_notification},
        {NULL, NULL},
    };
    kr_addmethods(L, fns);
}
