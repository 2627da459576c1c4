/* conn:rows(): a statement's rows one at a time (libpq's single-row mode), for a generic for.
 *
 * The stream's state is a table {conn, generation, names = , buf = , pos = , err = , first = }
 * shared by the iterator and the loop's closing value; the connection refers to it weakly, and
 * stream_gen (conn.c) tells an iterator whose stream was cut short. When another statement
 * runs while a stream is open, the core calls kr_stream_interrupt (the connection's hook) and
 * the rest of the rows is read into memory for the loop. */
#include "kronos.h"


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

/* The stream's column names (state.names, made from its first row's result), pushed. */
static void push_names(lua_State *L, int state, const PGresult *res)
{
    lua_getfield(L, state, "names");
    if (lua_istable(L, -1)) return;
    lua_pop(L, 1);
    kr_pushcolnames(L, res);
    lua_pushvalue(L, -1);
    lua_setfield(L, state, "names");
}

/* The connection's stream_interrupt hook (see conn.c): another statement is about to run while a stream is open: its remaining rows are read into
 * state.buf (converted as the iterator would), so the loop goes on from memory. The memory cost
 * is every remaining row at once, as conn:exec would hold them. An error ending the stream is kept
 * in state.err for the iterator to raise after the rows. A stream whose loop is gone (collected)
 * is cancelled instead. */
void kr_stream_interrupt(lua_State *L, kr_conn *c)
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
            push_names(L, state, res);
            kr_pushrow(L, res, 0, PQnfields(res), -1);
            lua_remove(L, -2);
            lua_rawseti(L, buf, ++n);
        } else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
            if (!kr_refuse_copy(L, c, st)) kr_error_result(L, c, res);
            lua_setfield(L, state, "err");
            lua_pop(L, 1);
        }
        kr_clearbox(box);
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
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
        res = kr_takebox(L, -1);
        lua_pushnil(L);
        lua_setfield(L, state, "first");
    } else {
        res = PQgetResult(c->pg);
    }
    lua_pop(L, 1);
    PGresult **box = kr_boxresult(L, res);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_SINGLE_TUPLE) {
        push_names(L, state, res);
        kr_decode_row(L, c, res, -1);
        kr_clearbox(box);
        kr_notice_deliver(L, c);
        return 1;
    }
    /* The end of the stream, or an error: read what is left so the connection is usable. */
    c->streaming = 0;
    int ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
    if (!ok && !kr_refuse_copy(L, c, st)) kr_error_result(L, c, res);
    kr_clearbox(box);
    kr_drain(c->pg);
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

/* Starts the stream after PQsend* (see kronos.h): the state table is shared by the iterator and
 * the closing value, and the connection refers to it weakly so that an abandoned loop can be
 * collected; stream_drain is set inside a transaction block, where a cancel would abort it. */
int kr_stream_open(lua_State *L, kr_conn *c, PGresult *first)
{
    if (first == NULL) PQsetSingleRowMode(c->pg);
    /* Inside a transaction an abandoned stream is drained, since a cancel would abort it. */
    c->stream_drain = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    c->streaming = 1;
    c->stream_gen++;
    kr_conn_push(L, c);
    int conn = lua_gettop(L);
    lua_createtable(L, 2, 4); /* {conn, generation, ...} with __close */
    int state = conn + 1;
    lua_pushvalue(L, conn);
    lua_rawseti(L, state, 1);
    lua_pushinteger(L, (lua_Integer)c->stream_gen);
    lua_rawseti(L, state, 2);
    luaL_setmetatable(L, KR_STREAM_CLASS);
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
int kr_stream_rows(lua_State *L)
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

/* The class of the stream's closing value (its __close ends the stream). */
void kr_open_stream(lua_State *L)
{
    static const luaL_Reg meta[] = {{"__close", stream_close}, {NULL, NULL}};
    kr_newclass(L, KR_STREAM_CLASS, NULL, meta);
}
