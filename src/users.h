/* Internal API of the user model. The files depend one way: users.c (the methods and the class)
 * -> users_list.c (list, count), users_batch.c (create_many) -> users_base.c (the receiver,
 * running a statement, the server's errors) and users_fields.c (validation). */
#ifndef KRONOS_USERS_H
#define KRONOS_USERS_H

#include "kronos.h"
#include "validate.h"

/* The users table as migrations/4f1c2a9e7b30_create_users_table.lua creates it. The migration's
 * bytes never change (databases record its checksum), so these facts are kept here and proven
 * against pg_catalog by spec/users_model_spec.lua (through kronos.core.users_model()). The
 * lengths are validate.h's KR_EMAIL_MIN/MAX, KR_NAME_MAX and KR_URL_MAX. */
#define KR_USERS_TABLE "users"
#define KR_USERS_ID "id"   /* the key column, first of COLS */
#define COLS KR_USERS_ID ", email, first_name, last_name, is_active, profile_image_url, last_login, created_at, updated_at"
#define COL_ID 0
#define COL_CREATED_AT 7
#define KR_USERS_PKEY "pk_users"
#define KR_USERS_EMAIL_UNIQUE "uq_users_email"
#define KR_USERS_EMAIL_LENGTH "ck_users_email_length"   /* CHECK (char_length(email) >= KR_EMAIL_MIN) */

/* Statement ids of the model's fixed SQL (kr_prepared_exec): create and update have one
 * statement per set of given fields (a bit mask over kr_user_fields). */
enum {
    ST_CREATE = 0,        /* + mask, 32 of them */
    ST_UPDATE = 32,       /* + mask, 32 of them */
    ST_GET = 64, ST_FIND_BY_EMAIL, ST_ACTIVATE, ST_DEACTIVATE, ST_RECORD_LOGIN, ST_DELETE,
    ST_LIST, ST_COUNT,
};

/* The fields a caller may give, in the order they are checked and COPY'd. */
enum kr_field_kind { K_EMAIL, K_NAME, K_URL, K_BOOL };
struct kr_user_field {
    const char *name;
    size_t len;     /* strlen(name) */
    enum kr_field_kind kind;
    /* The column's server default as SQL text ("true"), NULL when it has none (the column is then
     * nullable). create_many's COPY names every field's column, so the server applies no default
     * there: an absent field is written as this text, or as NULL. */
    const char *server_default;
    size_t server_default_len;
};
#define KR_USER_NFIELDS 5
#define KR_USER_MAXPARAMS (1 + KR_USER_NFIELDS)   /* the id and every field */
extern const struct kr_user_field kr_user_fields[KR_USER_NFIELDS];

typedef struct {
    int set;        /* the caller gave the field (a value or kronos.null) */
    const char *s;  /* its text, NULL for SQL NULL; owned by the caller's table or the stack */
    size_t len;
    int escape;     /* s holds a byte COPY's text format escapes (validate.h) */
} kr_fieldval;

/* users_fields.c: errors are kronos error objects (kr_error_push) with err.field set. */
/* The value at -1 for field f: fills v (pushes the normalized email) or pushes an error object. */
int kr_users_field_value(lua_State *L, const struct kr_user_field *f, kr_fieldval *v);
/* The fields table at t: 1 with the normalized email (or nil) pushed, 0 with the error pushed. */
int kr_users_check_fields(lua_State *L, int t, kr_fieldval *vals, int need_email);
/* create_many's one walk over the entry at t: 1 with vals filled (the email normalized into
 * email, emailcap bytes) when kr_users_check_fields(L, t, vals, 1) would accept it; 0 otherwise
 * (ask kr_users_check_fields for the error). Pushes nothing, allocates nothing. */
int kr_users_read_entry(lua_State *L, int t, kr_fieldval *vals, char *email, size_t emailcap);

/* users_base.c */
kr_conn *kr_users_self(lua_State *L);   /* self at 1; raises when it is not a users object */
void kr_users_checktable(lua_State *L, int idx, const char *what);   /* raises naming the argument */
/* Statement id with n text parameters; the boxed result is left on the stack, or nil, err
 * (mapped codes). */
PGresult *kr_users_run(lua_State *L, kr_conn *c, int id, const char *sql, int n, const char **values);
void kr_users_pushuser(lua_State *L, const PGresult *res, int row, int names);
/* The model's codes for server errors it can explain; err at -1. */
void kr_users_map_error(lua_State *L);

/* users_list.c, users_batch.c: methods */
int kr_users_list(lua_State *L);
int kr_users_count(lua_State *L);
int kr_users_create_many(lua_State *L);
void kr_users_open_batch(lua_State *L);   /* registers KR_USERS_BATCH_CLASS */

#endif
