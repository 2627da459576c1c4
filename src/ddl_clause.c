/* The clause renderers both DDL builder files use (ddl_table.c for CREATE TABLE and ADD COLUMN,
 * ddl_constraint.c for ALTER TABLE ... ADD CONSTRAINT and the indexes): one per constraint kind,
 * the index head and the DROP builder. They depend on ddl_util.c only, so the builder files
 * depend on this one and never on each other. */
#include <string.h>

#include "ddl_lua.h"
#include "utf8.h"

void kr_ddl_clause_name(kr_sql *b, const char *name, size_t len)
{
    kr_sql_adds(b, "CONSTRAINT ");
    kr_sql_ident(b, name, len);
    kr_sql_add(b, " ", 1);
}

void kr_ddl_clause_key(kr_sql *b, const char *kind, int names_idx, int arg, const char *path)
{
    kr_sql_adds(b, kind);
    if (names_idx == 0) return;
    kr_sql_add(b, " ", 1);
    kr_ddl_addnames(b, names_idx, arg, path);
}

void kr_ddl_clause_check(kr_sql *b, const char *cond, size_t len)
{
    kr_sql_adds(b, "CHECK (");
    kr_sql_add(b, cond, len);
    kr_sql_add(b, ")", 1);
}

static void add_action(kr_sql *b, kr_ddl_arg actions, const char *key, const char *sql)
{
    size_t len;
    const char *s = kr_option_string(b->L, actions.idx, actions.arg, actions.path, key, &len);
    if (s == NULL) return;
    char act[KR_DDL_ACTIONMAX];
    int rc = kr_ddl_fk_action(s, len, act, sizeof act);
    if (rc < 0) kr_error_arg(b->L, actions.arg, "%s.%s: %s, got \"%s\"", actions.path, key, kr_ddl_strerror(rc), s);
    kr_sql_adds(b, sql);
    kr_sql_add(b, act, (size_t)rc);
}

void kr_ddl_clause_fk(kr_sql *b, kr_ddl_arg local, kr_ddl_arg remote, const char *ref_schema,
                      const char *ref_table, size_t ref_len, kr_ddl_arg actions)
{
    lua_State *L = b->L;
    int nl = kr_ddl_checkarray(L, local.idx, local.arg, local.path);
    int nr = kr_ddl_checkarray(L, remote.idx, remote.arg, remote.path);
    if (nl != nr)
        kr_error_arg(L, remote.arg, "%s: %d column(s) for the %d of %s", remote.path, nr, nl, local.path);
    kr_sql_adds(b, "FOREIGN KEY ");
    kr_ddl_addnames(b, local.idx, local.arg, local.path);
    kr_sql_adds(b, " REFERENCES ");
    kr_sql_qualified(b, ref_schema, ref_table, ref_len);
    kr_sql_add(b, " ", 1);
    kr_ddl_addnames(b, remote.idx, remote.arg, remote.path);
    add_action(b, actions, "ondelete", " ON DELETE ");
    add_action(b, actions, "onupdate", " ON UPDATE ");
    int deferrable = kr_option_bool(L, actions.idx, actions.arg, actions.path, "deferrable", -1);
    size_t len;
    const char *initially = kr_option_string(L, actions.idx, actions.arg, actions.path, "initially", &len);
    if (deferrable != -1) kr_sql_adds(b, deferrable ? " DEFERRABLE" : " NOT DEFERRABLE");
    if (initially != NULL) {
        if (kr_utf8_ieq(initially, len, "deferred")) {
            if (deferrable != 1)
                kr_error_arg(L, actions.arg, "%s.initially: \"deferred\" needs deferrable = true", actions.path);
            kr_sql_adds(b, " INITIALLY DEFERRED");
        } else if (kr_utf8_ieq(initially, len, "immediate")) {
            kr_sql_adds(b, " INITIALLY IMMEDIATE");
        } else {
            kr_error_arg(L, actions.arg, "%s.initially: expected \"deferred\" or \"immediate\"", actions.path);
        }
    }
}

void kr_ddl_clause_index(kr_sql *b, int unique, int concurrently, int if_not_exists, const char *name, size_t len)
{
    kr_sql_adds(b, unique ? "CREATE UNIQUE INDEX " : "CREATE INDEX ");
    if (concurrently) kr_sql_adds(b, "CONCURRENTLY ");
    if (if_not_exists) kr_sql_adds(b, "IF NOT EXISTS ");
    kr_sql_ident(b, name, len);
    kr_sql_adds(b, " ON ");
}

void kr_ddl_clause_drop(kr_sql *b, const char *what, int if_exists, const char *schema,
                        const char *name, size_t len, int cascade)
{
    kr_sql_adds(b, "DROP ");
    kr_sql_adds(b, what);
    kr_sql_adds(b, if_exists ? " IF EXISTS " : " ");
    kr_sql_qualified(b, schema, name, len);
    if (cascade) kr_sql_adds(b, " CASCADE");
}

static const char *const drop_member_keys[] = {"schema", "if_exists", "cascade", NULL};

int kr_ddl_drop_member(lua_State *L, const char *what, int table_arg, const char *name_label)
{
    size_t tlen, nlen, slen;
    const char *table, *name;
    if (table_arg == 1) {
        table = kr_ddl_checkname(L, 1, 1, "table", &tlen);
        name = kr_ddl_checkname(L, 2, 2, name_label, &nlen);
    } else {
        name = kr_ddl_checkname(L, 1, 1, name_label, &nlen);
        table = kr_ddl_checkname(L, 2, 2, "table", &tlen);
    }
    int opts = kr_option_check(L, 3, "opts", drop_member_keys);
    const char *schema = kr_ddl_optname(L, opts, 3, "opts", "schema", &slen);
    int if_exists = kr_option_bool(L, opts, 3, "opts", "if_exists", 0);
    int cascade = kr_option_bool(L, opts, 3, "opts", "cascade", 0);
    lua_newtable(L);
    kr_sql b;
    kr_sql_init(L, &b);
    kr_sql_alter_table(&b, schema, table, tlen);
    kr_sql_add(&b, " ", 1);
    kr_ddl_clause_drop(&b, what, if_exists, NULL, name, nlen, cascade);
    kr_ddl_emit(&b, -2);
    lua_pop(L, 1);
    return 1;
}
