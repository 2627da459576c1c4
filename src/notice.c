/* Notices of a connection (RAISE NOTICE, WARNING, "table does not exist, skipping").
 *
 * They reach kronos through libpq's notice receiver, a C callback that libpq calls from inside
 * PQexec, PQgetResult and friends. Raising a Lua error there would longjmp through libpq's frames
 * and leave its state broken, and even building a Lua table may raise (memory): so the receiver
 * only copies the fields into a malloc'd list on the connection (at most KR_NOTICES_MAX; more are
 * counted and dropped), and kr_notice_deliver hands them to conn:on_notice's handler once the
 * libpq call has returned: every statement path calls it after its statement. Without a handler
 * nothing is collected: notices are dropped as libpq reports them. */
#include <stdlib.h>
#include <string.h>

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
int kr_notice_on(lua_State *L)
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
