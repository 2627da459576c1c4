/* Notifications (LISTEN/NOTIFY) of a connection: libpq queues them itself as it reads them,
 * during any statement, so none is lost between two calls; conn:notifications() and
 * conn:wait_for_notification() take them from that queue. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include "kronos.h"

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
int kr_notify_take(lua_State *L)
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
int kr_notify_wait(lua_State *L)
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
