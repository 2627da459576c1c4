/* Internal API shared by the C files of kronos.core. */
#ifndef KRONOS_H
#define KRONOS_H

#include <stdarg.h>
#include <stddef.h>
#include <libpq-fe.h>
#include "compat.h"

/* Class names: the registry keys of the metatables (see kr_newclass, kr_testclass). */
#define KR_CONN_CLASS "kronos.connection"
#define KR_ERROR_CLASS "kronos.error"
#define KR_BYTEA_CLASS "kronos.bytea"     /* the parameter markers (params.c) */
#define KR_ARRAY_CLASS "kronos.array"
#define KR_JSON_CLASS "kronos.json"
#define KR_RESULT_CLASS "kronos.result"     /* a PGresult box (result.c) */
#define KR_DDL_SQL_CLASS "kronos.ddl.sql"   /* a ddl.sql() marker */
#define KR_USERS_CLASS "kronos.users"
#define KR_USER_CLASS "kronos.user"
#define KR_MIGRATE_DIR_CLASS "kronos.migrate.dir"  /* an open directory being scanned (migrate_files.c) */
#define KR_USERS_BATCH_CLASS "kronos.users.batch"  /* create_many's COPY text buffer (users_batch.c) */
#define KR_STMT_CLASS "kronos.statement"            /* conn:prepare's statements (statement.c) */
#define KR_STREAM_CLASS "kronos.stream"             /* the closing value of a rows() loop (stream.c) */
#define KR_COPYSTREAM_CLASS "kronos.copystream"     /* the closing value of a copy_to loop (copy.c) */
#define KR_PIPELINE_CLASS "kronos.pipeline"         /* the queue conn:pipeline's function fills */

/* The type OIDs kronos sends or reads (PostgreSQL's pg_type.oid of built-in types: never renumbered). */
#define BOOLOID 16
#define BYTEAOID 17
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define OIDOID 26
#define FLOAT4OID 700
#define FLOAT8OID 701
#define TIMESTAMPTZOID 1184
#define NAMEOID 19
#define TEXTOID 25
#define JSONOID 114
#define BPCHAROID 1042
#define VARCHAROID 1043
#define DATEOID 1082
#define TIMESTAMPOID 1114
#define NUMERICOID 1700
#define UUIDOID 2950
#define JSONBOID 3802
/* Their array types (decode.c reads these as Lua sequences). */
#define BOOLARRAYOID 1000
#define BYTEAARRAYOID 1001
#define NAMEARRAYOID 1003
#define INT2ARRAYOID 1005
#define INT4ARRAYOID 1007
#define TEXTARRAYOID 1009
#define BPCHARARRAYOID 1014
#define VARCHARARRAYOID 1015
#define INT8ARRAYOID 1016
#define FLOAT4ARRAYOID 1021
#define FLOAT8ARRAYOID 1022
#define OIDARRAYOID 1028
#define TIMESTAMPARRAYOID 1115
#define DATEARRAYOID 1182
#define TIMESTAMPTZARRAYOID 1185
#define NUMERICARRAYOID 1231
#define UUIDARRAYOID 2951
#define JSONARRAYOID 199
#define JSONBARRAYOID 3807

#define KR_PREPARED_MAX 96   /* statement ids of kr_prepared_exec: 0 .. KR_PREPARED_MAX - 1 */

/* What the layers above the core (conn.c) do at its moments; one constant set, given to each
 * connection as it is made (session.c), so that the core calls nothing above it by name. */
struct kr_conn;
typedef struct kr_conn_hooks {
    /* kr_conn_ready with a rows() stream open (c->streaming): its rest is read into memory for
     * its loop, or the stream is ended (stream.c). */
    void (*stream_interrupt)(lua_State *L, struct kr_conn *c);
    /* kr_conn_ready with DEALLOCATEs queued (c->deallocs): they run (statement.c). */
    void (*statement_flush)(struct kr_conn *c);
} kr_conn_hooks;

typedef struct kr_conn {
    PGconn *pg;        /* NULL once closed */
    const kr_conn_hooks *hooks;
    int txdepth;       /* nesting of conn:transaction(): 0 = none, 1 = BEGIN, >1 = savepoints */
    int tx_ended;      /* a statement ended that transaction (COMMIT/ROLLBACK run by the caller's code) */
    int streaming;     /* stream.c: a conn:rows() iterator has results pending */
    int stream_drain;  /* an abandoned stream is read to its end instead of cancelled */
    unsigned stream_gen; /* bumped by each stream and each interruption, so stale iterators can tell */
    /* prepared.c: kronos's named prepared statements on this session */
    int prep_mode;     /* 0 = not checked yet, 1 = usable, -1 = not (a transaction pooler) */
    int prep_pid;      /* the backend pid they were prepared on; another one = a new session */
    unsigned char prepared[KR_PREPARED_MAX]; /* by statement id: unprepared, prepared, stale */
    /* notice.c: notices libpq reported during a call, delivered to conn:on_notice after it */
    struct kr_notice *notices, **notices_tail;
    int nnotices;      /* how many are queued (at most KR_NOTICES_MAX; more are counted, dropped) */
    int notices_dropped;
    int want_notices;  /* a handler is set: without one notices are dropped as they come */
    /* statement.c: user statements (conn:prepare) */
    unsigned stmt_seq;       /* the next statement's name suffix */
    struct kr_dealloc *deallocs; /* names of collected statements, deallocated before the next statement */
    int pipelining;          /* pipeline.c: in libpq pipeline mode (nothing else may run) */
    int copying;             /* copy.c: 1 = a copy_from is sending (busy), 2 = a copy_to iterator is open */
    int decode_arrays;       /* decode.c: conn:set_decode{arrays = true} */
    int decode_json;         /* a json decoder is set (in the connection's uservalue) */
} kr_conn;

/* uuid.c */
void kr_uuid_format(lua_State *L, char out[37]); /* a new random (v4) UUID, lower case, NUL-terminated */

/* class.c: the metatables by name */
int kr_testclass(lua_State *L, int idx, const char *name);   /* idx has metatable `name` */
/* Registers metatable `name` with metamethods `meta` and, unless NULL, an __index of `methods`. */
void kr_newclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta);

/* auxiliar.c: argument checking; each raises a bad_argument object (kr_error_arg). */
kr_conn *kr_checkconn(lua_State *L, int idx);            /* raises on a non-connection or a closed one */
kr_conn *kr_checkconn_any(lua_State *L, int idx);        /* a connection, open or closed */
/* A string (or number) without NUL bytes; `what` names it in the error ("SQL contains a NUL byte"). */
const char *kr_checktext(lua_State *L, int idx, size_t *len, const char *what);
const char *kr_opttext(lua_State *L, int idx, const char *def, const char *what); /* kr_checktext, or def for nil */
const char *kr_checkbytes(lua_State *L, int idx, size_t *len);   /* a string, any bytes (NUL too) */
void kr_checktable(lua_State *L, int idx);
void kr_checkstack(lua_State *L, int n);                 /* raises a stack_overflow object */

/* error.c: the one family of error objects (see its head comment for the rule). */
#define KR_FNAME_KEY "kronos.fname"   /* registry: the helper name kr_error_arg reports */
void kr_error_new(lua_State *L, const char *code, const char *message);    /* pushes an object */
void kr_error_push(lua_State *L, const char *code, const char *fmt, ...);  /* formatted, pushed */
int kr_error_return(lua_State *L, const char *code, const char *fmt, ...); /* pushes nil, err; returns 2 */
_Noreturn void kr_error_raise(lua_State *L, const char *code, const char *fmt, ...);
_Noreturn void kr_error_throw(lua_State *L);                               /* raises the value at -1 */
/* Raises a "bad_argument" object "bad argument #arg to 'fname' (why)" naming the Lua function. */
_Noreturn void kr_error_arg(lua_State *L, int arg, const char *fmt, ...);
void kr_error_setfname(lua_State *L, const char *name);  /* the name for callers Lua cannot name */
int kr_error_result(lua_State *L, kr_conn *c, const PGresult *res);       /* nil, err from a failed result */
void kr_error_setfield(lua_State *L, const char *key, const char *value); /* on the object at -1 */
void kr_error_pushoneline(lua_State *L, const char *msg);                 /* newlines folded */
const char *kr_error_condition(const char *sqlstate);  /* "23505" -> "unique_violation", or NULL */
/* Appends s with control bytes escaped (and quote and backslash, when quote is not 0). */
void kr_error_addescaped(luaL_Buffer *b, const char *s, size_t len, char quote);

/* result.c: PGresult lifetime and conversion to Lua */
PGresult **kr_boxresult(lua_State *L, PGresult *res);  /* pushes a userdata that PQclears on __gc */
void kr_clearbox(PGresult **box);
void kr_dropbox(lua_State *L, int idx);                /* kr_clearbox of the box at idx */
PGresult *kr_takebox(lua_State *L, int idx);           /* the box's result, now the caller's (box emptied) */
void kr_pushvalue(lua_State *L, const PGresult *res, int row, int col);
void kr_pushrow(lua_State *L, const PGresult *res, int row, int ncols, int names_idx);
void kr_pushcolnames(lua_State *L, const PGresult *res);   /* array of names */
/* The shapes of a whole result (a rows table with .affected, .columns): named rows, rows as
 * arrays, or one array per column. */
enum { KR_ROWS_NAMED, KR_ROWS_ARRAYS, KR_ROWS_COLUMNS };
void kr_pushrows_as(lua_State *L, const PGresult *res, int shape);

/* params.c: Lua values -> libpq parameters */
typedef struct kr_params {
    int n;
    const char **values;
    int *lengths;
    int *formats;
    Oid *types;
} kr_params;
/* Converts stack values [first, first+n) into params, kronos.json(v) through c's encoder (c may
 * be NULL: no encoder); the strings stay owned by Lua values pushed onto the stack above, and the
 * arrays live in a userdata also left on the stack (n == 0: nothing is pushed, the arrays NULL). */
void kr_checkparams_conn(lua_State *L, kr_conn *c, int first, int n, kr_params *p);
/* One value as a parameter's text (what kr_checkparams_conn sends; COPY writes the same): returns
 * KR_VAL_NULL (s NULL), KR_VAL_TEXT, KR_VAL_BOOL ("true"/"false") or KR_VAL_BYTEA (raw bytes);
 * may push a string it made (a number's text, an array literal, encoded JSON) that the caller
 * keeps on the stack while it uses s. pos numbers the parameter in errors. */
enum { KR_VAL_NULL, KR_VAL_TEXT, KR_VAL_BOOL, KR_VAL_BYTEA };
int kr_param_text(lua_State *L, kr_conn *c, int idx, int pos, const char **s, size_t *len);
/* The encode options table at t ({json = fn}: conn:set_encode's, kronos.connect's opts.encode),
 * checked and set on c as kr_decode_options does; an absent json removes the encoder. */
void kr_params_encode_options(lua_State *L, kr_conn *c, int t, int arg, const char *path);

/* conn.c, the connection's low layer (nothing above it is called but through c->hooks). */
/* Pushes a new connection userdata (closed: pg NULL) with its uservalue, made with hooks. */
kr_conn *kr_conn_new(lua_State *L, const kr_conn_hooks *hooks);
void kr_conn_push(lua_State *L, kr_conn *c);  /* the connection of c, or nil once it is collected */
/* Pushes the connection's uservalue table (handlers, decoders, the open stream). */
void kr_conn_env(lua_State *L, kr_conn *c);
/* Before any statement on c: refused (raises connection_busy) during a copy_from or a pipeline;
 * an open copy_to is ended, an open rows() stream read into memory for its iterator (see
 * conn:rows), queued DEALLOCATEs of collected statements run, and DateStyle is put back to ISO. */
void kr_conn_ready(lua_State *L, kr_conn *c);
/* 1 when a statement may run; 0 (nil, err pushed) once a COMMIT/ROLLBACK ran inside the
 * transaction kronos opened (txdepth > 0): the statement would run outside it. */
int kr_tx_open(lua_State *L, kr_conn *c);
/* Boxes a result of libpq's and checks it: returns it with its box left on the stack (pop it
 * or leave it), or pushes nil, err (the box gone) and returns NULL. */
PGresult *kr_finish(lua_State *L, kr_conn *c, PGresult *res);
/* Runs a simple script (no parameters, may hold several statements): kr_finish's contract. */
PGresult *kr_execscript(lua_State *L, kr_conn *c, const char *sql);
/* A COPY status where no COPY is served: drained, nil, err (feature_not_supported) pushed, 1. */
int kr_refuse_copy(lua_State *L, kr_conn *c, ExecStatusType st);
void kr_drain(PGconn *pg);        /* reads and frees every pending result; ends a COPY */
void kr_endstream(kr_conn *c);    /* cancels and drains a pending rows() stream */
void kr_endcopy(kr_conn *c);      /* ends an open copy_to (cancelled outside a transaction), drains */
/* SQL text argument: raises bad_argument for a non-string or a NUL byte. */
const char *kr_checksql(lua_State *L, int idx);

/* notice.c: notices, collected while libpq runs, delivered after each call */
#define KR_NOTICES_MAX 1000
void kr_notice_receiver(void *arg, const PGresult *res);   /* libpq's notice receiver (arg = kr_conn) */
void kr_notice_deliver(lua_State *L, kr_conn *c); /* calls conn:on_notice's handler */
void kr_notice_free(kr_conn *c);

/* decode.c: a result as rows (kr_pushrows_as's shapes) with the connection's array and json
 * decoders applied; one row of a single-row result (names at names_idx). */
void kr_decode_rows(lua_State *L, kr_conn *c, const PGresult *res, int shape);
void kr_decode_row(lua_State *L, kr_conn *c, const PGresult *res, int names_idx);
/* The decode options table at t ({arrays = bool, json = fn}: conn:set_decode's, kronos.connect's
 * opts.decode) checked through option.c's reader, arg and path naming it in a bad_argument, then
 * set on c (open or not yet connected); absent keys turn their decoding off. */
void kr_decode_options(lua_State *L, kr_conn *c, int t, int arg, const char *path);
/* result.c: one value's text converted as a column of that type is */
void kr_pushtext(lua_State *L, Oid type, const char *s, size_t len);

/* exec.c: how a method that ran a statement whole returns (res from kr_finish's contract): the
 * notices delivered, then the rows in the given shape (the box dropped) or nil, err. */
int kr_exec_return(lua_State *L, kr_conn *c, PGresult *res, int shape);

/* copy.c: the line N of a failed COPY FROM's context "COPY <table>, line N" (0 when there is
 * none), the table's name as the server wrote it in *table, *tlen (in r's text) unless NULL. */
lua_Integer kr_copy_failed_line(const PGresult *r, const char **table, size_t *tlen);

/* stream.c: after PQsend*(): pushes the 4 values of a generic for over the single-row stream
 * (iterator, nil, nil, closing value). first, when not NULL, is the stream's first result,
 * already read (it is kept for the iterator). */
int kr_stream_open(lua_State *L, kr_conn *c, PGresult *first);
void kr_stream_interrupt(lua_State *L, kr_conn *c);  /* the stream_interrupt hook */

/* prepared.c: runs kronos's fixed statement number id (its text never changes for an id) as a
 * named prepared statement when the session allows it, else as PQexecParams. n text parameters;
 * like kr_execscript, leaves the boxed result or pushes nil, err and returns NULL. */
PGresult *kr_prepared_exec(lua_State *L, kr_conn *c, int id, const char *sql, int n, const char *const *values);
/* 1 when named statements reach the session they were prepared in (no transaction pooler). */
int kr_prepared_usable(kr_conn *c);
/* What an error result says of a named statement: 0 nothing, 1 it is gone (26000), 2 it is there
 * but unusable (0A000 "cached plan must not change result type", 42P05). */
int kr_prepared_lost(const PGresult *res);

/* transaction.c: the mark of a transaction kronos opened (conn:transaction, a migration's
 * step), set LOCAL as it begins, so that a COMMIT or ROLLBACK run inside it, even one followed by
 * a new BEGIN in the same script, takes it away. KR_TX_GUARD(setting, type) is an SQL expression
 * of that type holding the setting's value, which raises instead (invalid input syntax, its
 * message holding KR_TX_ENDED_TEXT) when the mark is gone: kronos's own closing statements use it,
 * so nothing is committed or recorded for work that left the transaction. */
#define KR_TX_ENDED_TEXT "kronos: the transaction was ended inside it"
#define KR_TX_GUARD(setting, type) \
    "coalesce(nullif(current_setting('" setting "', true), ''), '" KR_TX_ENDED_TEXT "')::" type
int kr_tx_guard_failed(lua_State *L, int idx);  /* the error object at idx is a guard's */

/* statement.c */
void kr_statement_flush(kr_conn *c);  /* the statement_flush hook: the queued DEALLOCATEs (when the session can) */
void kr_statement_free(kr_conn *c);   /* forgets the queue (the session is gone) */

/* The connection's methods, each a lua_CFunction of the file its prefix names; the one method
 * table is assembled in kronos.c. */
int kr_session_connect(lua_State *L);          /* kronos.connect */
int kr_session_close(lua_State *L);
int kr_session_gc(lua_State *L);               /* __gc, __close */
int kr_session_tostring(lua_State *L);
int kr_session_reset(lua_State *L);
int kr_session_status(lua_State *L);
int kr_session_backend_pid(lua_State *L);
int kr_session_server_version(lua_State *L);
int kr_session_in_transaction(lua_State *L);
int kr_session_escape_identifier(lua_State *L);
int kr_session_escape_literal(lua_State *L);
int kr_exec(lua_State *L);
int kr_exec_arrays(lua_State *L);
int kr_exec_columns(lua_State *L);
int kr_exec_script(lua_State *L);              /* conn:script */
int kr_stream_rows(lua_State *L);              /* conn:rows */
int kr_transaction(lua_State *L);
int kr_notice_on(lua_State *L);                /* conn:on_notice */
int kr_notify_take(lua_State *L);              /* conn:notifications */
int kr_notify_wait(lua_State *L);              /* conn:wait_for_notification */
int kr_statement_prepare(lua_State *L);        /* conn:prepare */
int kr_copy_from(lua_State *L);
int kr_copy_to(lua_State *L);
int kr_pipeline_run(lua_State *L);             /* conn:pipeline */
int kr_decode_set(lua_State *L);               /* conn:set_decode */
int kr_params_set_encode(lua_State *L);        /* conn:set_encode */

/* Module parts: each registers its classes and adds its functions to the module table at -1. */
void kr_open_error(lua_State *L);
void kr_open_params(lua_State *L);
void kr_open_conn(lua_State *L);      /* the registry's map of connections (conn.c) */
void kr_open_uuid(lua_State *L);
void kr_open_ddl(lua_State *L);
void kr_open_migrate(lua_State *L);
void kr_open_lint(lua_State *L);      /* lint.c */
void kr_open_catalog(lua_State *L);   /* catalog.c */
void kr_open_users(lua_State *L);
void kr_open_stream(lua_State *L);
void kr_open_statement(lua_State *L);
void kr_open_copy(lua_State *L);
void kr_open_pipeline(lua_State *L);

#endif
