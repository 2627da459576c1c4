/* A statement run whole: conn:exec (rows by name), exec_arrays, exec_columns, and conn:script
 * (several statements, no parameters). The result is boxed before anything can raise, and
 * converted in one pass (result.c), the connection's decoders applied (decode.c). */
#include "kronos.h"

/* One statement with its parameters: the boxed result left on the stack, or nil, err pushed
 * and NULL (kr_execscript's contract). */
static PGresult *execparams(lua_State *L, kr_conn *c, const char *sql, const kr_params *p)
{
    if (!kr_tx_open(L, c)) return NULL;
    kr_conn_ready(L, c);
    PGresult *res = PQexecParams(c->pg, sql, p->n, p->types, p->values, p->lengths, p->formats, 0);
    return kr_finish(L, c, res);
}

/* See kronos.h. The notices come first: they arrived during the statement, and a failed one's
 * notices (a RAISE before the error) are delivered as a successful one's are. */
int kr_exec_return(lua_State *L, kr_conn *c, PGresult *res, int shape)
{
    kr_notice_deliver(L, c);
    if (res == NULL) return 2;
    kr_decode_rows(L, c, res, shape);
    kr_dropbox(L, -2);
    return 1;
}

/* conn:exec(sql, ...) and its compact shapes: the result in the given shape | nil, err */
static int exec_as(lua_State *L, int shape)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    kr_params p;
    kr_checkparams_conn(L, c, 3, lua_gettop(L) - 2, &p);
    return kr_exec_return(L, c, execparams(L, c, sql, &p), shape);
}

/* conn:exec(sql, ...) -> rows (tables keyed by column name) | nil, err */
int kr_exec(lua_State *L) { return exec_as(L, KR_ROWS_NAMED); }
/* conn:exec_arrays(sql, ...) -> rows as arrays (row[j]: column j) | nil, err */
int kr_exec_arrays(lua_State *L) { return exec_as(L, KR_ROWS_ARRAYS); }
/* conn:exec_columns(sql, ...) -> one array per column (t[j][i]), t.n rows | nil, err */
int kr_exec_columns(lua_State *L) { return exec_as(L, KR_ROWS_COLUMNS); }

/* conn:script(sql) -> rows of the last statement | nil, err: several statements, no parameters. */
int kr_exec_script(lua_State *L)
{
    kr_conn *c = kr_checkconn(L, 1);
    const char *sql = kr_checksql(L, 2);
    return kr_exec_return(L, c, kr_execscript(L, c, sql), KR_ROWS_NAMED);
}
