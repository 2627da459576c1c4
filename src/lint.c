/* The DDL safety check (kronos.core.lint): rules in the manner of squawk and strong_migrations
 * on what a migration's op.* helpers would run against tables that already hold data.
 *
 * A phase of a migration (up or finish) runs against a recording op: every helper call is
 * checked by the real builder (so a bad argument is found as upgrade would find it), then
 * judged by the rules from the helper's name and options, knowing which tables and indexes
 * this phase created itself (those are empty and unseen by running code, so they are exempt).
 * Nothing touches a database: `kronos lint` works offline and `upgrade` can warn before it runs.
 *
 * Escape hatches, both reported as "allowed" rather than dropped (lint --verbose shows them):
 * `safe = true` in a helper's options table (stripped before the builder sees it, here and in
 * the engine's op, see kr_lint_strip_safe), and `safe = true` or `safe = {"rule", ...}` on the
 * migration table. Raw SQL (op.execute) is reported as unchecked, never parsed. */
#include <string.h>

#include "ddl_lua.h"
#include "lint.h"
#include "lint_sql.h"

typedef struct rule {
    const char *name;
    const char *why;       /* the lock or rewrite it costs */
    const char *fix;       /* the safe way */
    int level;             /* 1 = finding (lint fails), 0 = note */
    int suppressible;
} rule;

enum {
    R_REQUIRED, R_VOLATILE, R_TYPE, R_NOT_NULL, R_FK, R_CHECK, R_INDEX, R_INDEX_DROP, R_UNIQUE,
    R_RENAME_COL, R_RENAME_TABLE, R_DROP_COL, R_DROP_TABLE, R_CONCURRENT_TX, R_ERROR, R_UNCHECKED,
    R_UNKNOWN_RULE, R_COUNT
};

static const rule rules[R_COUNT] = {
    {"adding-required-field",
     "ADD COLUMN ... NOT NULL without a default fails on a table that has rows, and old code's INSERTs that omit it fail",
     "add it nullable (or with a constant server_default) in up, backfill, then make it NOT NULL in finish", 1, 1},
    {"adding-field-with-default",
     "a volatile default makes ADD COLUMN rewrite the whole table under an ACCESS EXCLUSIVE lock (no reads, no writes)",
     "add the column without a default (or with a constant one), then set the default with alter_column and backfill in batches", 1, 1},
    {"changing-column-type",
     "ALTER COLUMN ... TYPE takes an ACCESS EXCLUSIVE lock and usually rewrites the table and rebuilds its indexes",
     "add a column of the new type in up, write both and backfill, move reads to it, drop the old one in finish", 1, 1},
    {"adding-not-nullable-field",
     "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock",
     "in up: create_check_constraint(name, table, \"col IS NOT NULL\", {not_valid = true}); in finish: "
     "ALTER TABLE ... VALIDATE CONSTRAINT, then SET NOT NULL (PostgreSQL 12+ then skips the scan)", 1, 1},
    {"adding-foreign-key-constraint",
     "adding a FOREIGN KEY checks every existing row while it holds SHARE ROW EXCLUSIVE locks on both tables (writes wait)",
     "not_valid = true in up, then ALTER TABLE ... VALIDATE CONSTRAINT in finish (a SHARE UPDATE EXCLUSIVE lock only)", 1, 1},
    {"constraint-missing-not-valid",
     "adding a CHECK constraint scans every row under an ACCESS EXCLUSIVE lock",
     "not_valid = true in up, then ALTER TABLE ... VALIDATE CONSTRAINT in finish", 1, 1},
    {"require-concurrent-index-creation",
     "building an index without CONCURRENTLY holds a SHARE lock on the table for the whole build (writes wait)",
     "create_index(..., {concurrently = true}) in a migration with transactional = false", 1, 1},
    {"require-concurrent-index-deletion",
     "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table",
     "drop_index(name, {concurrently = true}) in a migration with transactional = false", 1, 1},
    {"disallowed-unique-constraint",
     "ADD CONSTRAINT ... UNIQUE / PRIMARY KEY builds its index under an ACCESS EXCLUSIVE lock (no reads, no writes)",
     "create_index(..., {unique = true, concurrently = true}) in a transactional = false migration, then "
     "ALTER TABLE ... ADD CONSTRAINT ... USING INDEX", 1, 1},
    {"renaming-column",
     "the old code still serving during a rolling deploy uses the old name and fails",
     "add the new column in up and write both, rename or drop the old one in finish", 1, 1},
    {"renaming-table",
     "the old code still serving during a rolling deploy uses the old name and fails",
     "rename in finish, once no old code runs (or keep a view with the old name meanwhile)", 1, 1},
    {"ban-drop-column",
     "the old code still serving during a rolling deploy reads or writes the column and fails",
     "stop using it in the new code and drop it in finish", 1, 1},
    {"ban-drop-table",
     "the old code still serving during a rolling deploy uses the table and fails",
     "stop using it in the new code and drop it in finish", 1, 1},
    {"ban-concurrent-index-creation-in-transaction",
     "CONCURRENTLY cannot run inside a transaction block: PostgreSQL refuses it and the migration fails",
     "set transactional = false on this migration (and keep only the concurrent step in it)", 1, 0},
    {"migration-error",
     "the migration raised an error while it was checked; upgrade would raise it too",
     "fix the call (the calls after it were not checked)", 1, 0},
    {"unchecked-sql",
     "raw SQL is not checked (kronos does not guess at what it locks)",
     "review its locks by hand", 0, 0},
    {"unknown-rule",
     "the migration's safe list names a rule that does not exist, so it allows nothing",
     "use a rule name from kronos lint's output", 1, 0},
};

/* ---- the escape hatch in an options table ------------------------------------------------ */

/* Contract: the last argument (stack index n, n >= 1) is replaced by a shallow copy without its
 * `safe` key when it is a table that has one; returns 1 when `safe` was true. Why: the builders
 * refuse unknown keys, and `safe` is advice for the check, never SQL. */
int kr_lint_strip_safe(lua_State *L, int n)
{
    if (n < 1 || lua_type(L, n) != LUA_TTABLE) return 0;
    lua_getfield(L, n, "safe");
    int present = !lua_isnil(L, -1), value = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!present) return 0;
    if (lua_getmetatable(L, n)) { /* a ddl.sql() marker or some object: not an options table */
        lua_pop(L, 1);
        return 0;
    }
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, n)) {
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "safe") == 0) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    lua_replace(L, n);
    return value;
}

/* ---- findings ------------------------------------------------------------------------------ */

/* The state of one phase being checked: a table at a fixed index holding file, revision,
 * phase, transactional, msafe (the migration's safe field), created (tables), indexes
 * (created), findings (array), op (the recording op, for op:name() calls). */
typedef struct check {
    lua_State *L;
    int st;        /* the state table */
    int line;      /* of the call being judged */
    int call_safe; /* the call said safe = true */
    const char *helper;
} check;

static const char *st_string(lua_State *L, int st, const char *key)
{
    lua_getfield(L, st, key);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the state table keeps it */
    return s ? s : "?";
}

/* Contract: appends one finding {rule, level, file, line, revision, phase, helper, table,
 * detail, why, fix, allowed, text} to the state's findings. Why: every report (the CLI's lines,
 * upgrade's warnings, the specs) reads the same fields, and `text` is the one-line form. */
static void add_finding(check *k, int r, const char *table, const char *detail)
{
    lua_State *L = k->L;
    const rule *ru = &rules[r];
    const char *allowed = NULL;
    if (ru->suppressible) {
        if (k->call_safe) allowed = "call";
        else {
            lua_getfield(L, k->st, "msafe");
            if (lua_toboolean(L, -1) && !lua_istable(L, -1)) allowed = "migration";
            else if (lua_istable(L, -1)) {
                lua_getfield(L, -1, ru->name);
                if (lua_toboolean(L, -1)) allowed = "migration";
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
    }
    const char *file = st_string(L, k->st, "file");
    lua_getfield(L, k->st, "findings");
    lua_createtable(L, 0, 13);
    lua_pushstring(L, ru->name);
    lua_setfield(L, -2, "rule");
    lua_pushstring(L, ru->level ? "finding" : "note");
    lua_setfield(L, -2, "level");
    lua_pushstring(L, file);
    lua_setfield(L, -2, "file");
    lua_pushinteger(L, k->line);
    lua_setfield(L, -2, "line");
    lua_pushstring(L, st_string(L, k->st, "revision"));
    lua_setfield(L, -2, "revision");
    lua_pushstring(L, st_string(L, k->st, "phase"));
    lua_setfield(L, -2, "phase");
    lua_pushstring(L, k->helper);
    lua_setfield(L, -2, "helper");
    if (table) {
        lua_pushstring(L, table);
        lua_setfield(L, -2, "table");
    }
    lua_pushstring(L, detail);
    lua_setfield(L, -2, "detail");
    lua_pushstring(L, ru->why);
    lua_setfield(L, -2, "why");
    lua_pushstring(L, ru->fix);
    lua_setfield(L, -2, "fix");
    if (allowed) {
        lua_pushstring(L, allowed);
        lua_setfield(L, -2, "allowed");
    }
    lua_pushfstring(L, "%s:%d: %s: %s (%s): %s. Instead: %s", file, k->line, ru->name, detail,
                    st_string(L, k->st, "phase"), ru->why, ru->fix);
    if (allowed) {
        lua_pushfstring(L, " [allowed by safe = %s on the %s]", allowed[0] == 'c' ? "true" : "...",
                        allowed[0] == 'c' ? "call" : "migration");
        lua_concat(L, 2);
    }
    lua_setfield(L, -2, "text");
    lua_rawseti(L, -2, (int)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
}

/* ---- reading a call's arguments ------------------------------------------------------------ */

/* The string field key of the table at idx (raw), or NULL. */
static const char *field_string(lua_State *L, int idx, const char *key)
{
    if (idx == 0 || lua_type(L, idx) != LUA_TTABLE) return NULL;
    lua_pushstring(L, key);
    lua_rawget(L, idx);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1); /* the argument table keeps it */
    return s;
}

/* -1 when absent, else the truth of the field. */
static int field_bool(lua_State *L, int idx, const char *key)
{
    if (idx == 0 || lua_type(L, idx) != LUA_TTABLE) return -1;
    lua_pushstring(L, key);
    lua_rawget(L, idx);
    int v = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Pushes "schema.name" or "name": the key of a table in the created set. */
static const char *push_table_key(lua_State *L, int opts_idx, const char *schema_key, const char *name)
{
    const char *schema = field_string(L, opts_idx, schema_key);
    if (schema) return lua_pushfstring(L, "%s.%s", schema, name);
    lua_pushstring(L, name);
    return lua_tostring(L, -1);
}

/* 1 when the set field `set` of the state holds key. */
static int in_set(check *k, const char *set, const char *key)
{
    lua_getfield(k->L, k->st, set);
    lua_getfield(k->L, -1, key);
    int in = lua_toboolean(k->L, -1);
    lua_pop(k->L, 2);
    return in;
}

static void add_to_set(check *k, const char *set, const char *key)
{
    lua_getfield(k->L, k->st, set);
    lua_pushboolean(k->L, 1);
    lua_setfield(k->L, -2, key);
    lua_pop(k->L, 1);
}

/* Pushes the name of the first function a default expression calls that is not known to be
 * stable (lint_sql.c), or returns NULL (nothing pushed). */
static const char *push_volatile_call(lua_State *L, const char *expr, size_t len)
{
    size_t start, n;
    if (!kr_lint_sql_volatile_call(expr, len, &start, &n)) return NULL;
    lua_pushlstring(L, expr + start, n);
    return lua_tostring(L, -1);
}

/* ---- the rules, by helper ------------------------------------------------------------------ */

/* A column type that makes its own default (a sequence): what the DDL helpers' one type parser
 * (kr_ddl_parse_type) reads as a serial; a type it refuses is judged by the builder itself. */
static int is_serial(const char *type)
{
    char pg[64];
    if (!type || kr_ddl_parse_type(type, strlen(type), pg, sizeof pg) < 0) return 0;
    return strcmp(pg, "serial") == 0 || strcmp(pg, "bigserial") == 0 || strcmp(pg, "smallserial") == 0;
}

/* add_column(table, column, opts) on an existing table. */
static void judge_add_column(check *k, const char *tkey)
{
    lua_State *L = k->L;
    const char *col = field_string(L, 2, "name");
    const char *type = field_string(L, 2, "type");
    int pk = field_bool(L, 2, "primary_key") == 1;
    int notnull = field_bool(L, 2, "nullable") == 0 || pk;
    lua_pushstring(L, "server_default");
    lua_rawget(L, 2);
    int has_default = !lua_isnil(L, -1);
    size_t elen = 0;
    const char *expr = kr_ddl_tosql(L, lua_gettop(L), &elen);
    const char *volatile_call = expr ? push_volatile_call(L, expr, elen) : NULL;
    if (volatile_call) {
        add_finding(k, R_VOLATILE, tkey, lua_pushfstring(L, "add_column %s.%s with default %s (%s() may be volatile)",
                                                         tkey, col, expr, volatile_call));
        lua_pop(L, 2);
    } else if (is_serial(type)) {
        add_finding(k, R_VOLATILE, tkey, lua_pushfstring(L, "add_column %s.%s of type %s, whose default is nextval()",
                                                         tkey, col, type));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (notnull && !has_default && !is_serial(type))
        add_finding(k, R_REQUIRED, tkey, lua_pushfstring(L, "add_column %s.%s NOT NULL without a default", tkey, col));
    if (pk || field_bool(L, 2, "unique") == 1 || field_bool(L, 2, "index") == 1)
        add_finding(k, R_INDEX, tkey, lua_pushfstring(L, "add_column %s.%s builds an index (%s)", tkey, col,
                                                      pk ? "primary_key" : field_bool(L, 2, "unique") == 1 ? "unique" : "index"));
    lua_pushstring(L, "check");
    lua_rawget(L, 2);
    if (!lua_isnil(L, -1))
        add_finding(k, R_CHECK, tkey, lua_pushfstring(L, "add_column %s.%s with a check", tkey, col));
}

/* Judges one recorded call; the arguments are at 1..n (options already stripped of safe). */
static void judge(check *k, int n)
{
    lua_State *L = k->L;
    const char *h = k->helper;
    int base = lua_gettop(L);
    int tx;
    lua_getfield(L, k->st, "transactional");
    tx = lua_toboolean(L, -1);
    lua_pop(L, 1);
    int up = strcmp(st_string(L, k->st, "phase"), "up") == 0;
#define ARG_STR(i) (n >= (i) && lua_type(L, (i)) == LUA_TSTRING ? lua_tostring(L, (i)) : NULL)
#define OPTS(i) (n >= (i) && lua_istable(L, (i)) ? (i) : 0)
    if (strcmp(h, "execute") == 0) {
        const char *sql = n >= 1 ? lua_tostring(L, 1) : NULL;
        kr_error_pushoneline(L, sql ? sql : "");
        size_t len = lua_rawlen(L, -1);
        if (len > 60) { /* the start is enough to find it */
            lua_pushlstring(L, lua_tostring(L, -1), 57);
            lua_pushliteral(L, "...");
            lua_concat(L, 2);
        }
        add_finding(k, R_UNCHECKED, NULL, lua_pushfstring(L, "op.execute(\"%s\")", lua_tostring(L, -1)));
    } else if (strcmp(h, "create_table") == 0) {
        add_to_set(k, "created", push_table_key(L, OPTS(3), "schema", ARG_STR(1)));
    } else if (strcmp(h, "rename_table") == 0) {
        const char *old = push_table_key(L, OPTS(3), "schema", ARG_STR(1));
        const char *new = push_table_key(L, OPTS(3), "schema", ARG_STR(2));
        if (in_set(k, "created", old)) add_to_set(k, "created", new);
        else if (up) add_finding(k, R_RENAME_TABLE, old, lua_pushfstring(L, "rename_table %s to %s", old, ARG_STR(2)));
    } else if (strcmp(h, "drop_table") == 0) {
        const char *t = push_table_key(L, OPTS(2), "schema", ARG_STR(1));
        if (up && !in_set(k, "created", t)) add_finding(k, R_DROP_TABLE, t, lua_pushfstring(L, "drop_table %s", t));
    } else if (strcmp(h, "create_index") == 0 || strcmp(h, "drop_index") == 0) {
        int create = h[0] == 'c';
        int opts = OPTS(create ? 4 : 2);
        int concurrently = field_bool(L, opts, "concurrently") == 1;
        const char *name = ARG_STR(1);
        const char *t = create ? push_table_key(L, opts, "schema", ARG_STR(2)) : NULL;
        const char *ikey = name ? push_table_key(L, opts, "schema", name) : NULL;
        if (concurrently && tx)
            add_finding(k, R_CONCURRENT_TX, t, lua_pushfstring(L, "%s %s with concurrently = true in a transactional migration",
                                                               h, name ? name : "(unnamed)"));
        else if (create && !concurrently && !in_set(k, "created", t))
            add_finding(k, R_INDEX, t, lua_pushfstring(L, "create_index %s on %s without concurrently", name ? name : "(unnamed)", t));
        else if (!create && !concurrently && !(ikey && in_set(k, "indexes", ikey)))
            add_finding(k, R_INDEX_DROP, NULL, lua_pushfstring(L, "drop_index %s without concurrently", name));
        if (create && ikey) add_to_set(k, "indexes", ikey);
    } else if (strcmp(h, "add_column") == 0 || strcmp(h, "drop_column") == 0 || strcmp(h, "alter_column") == 0) {
        const char *t = push_table_key(L, OPTS(3), "schema", ARG_STR(1));
        if (!in_set(k, "created", t)) {
            if (h[0] == 'a' && h[1] == 'd') judge_add_column(k, t);
            else if (h[0] == 'd') {
                if (up) add_finding(k, R_DROP_COL, t, lua_pushfstring(L, "drop_column %s.%s", t, ARG_STR(2)));
            } else {
                int opts = OPTS(3);
                const char *col = ARG_STR(2);
                lua_pushstring(L, "type");
                if (opts) lua_rawget(L, opts); else lua_pushnil(L);
                if (!lua_isnil(L, -1))
                    add_finding(k, R_TYPE, t, lua_pushfstring(L, "alter_column %s.%s type", t, col));
                if (field_bool(L, opts, "nullable") == 0)
                    add_finding(k, R_NOT_NULL, t, lua_pushfstring(L, "alter_column %s.%s nullable = false (SET NOT NULL)", t, col));
                const char *nn = field_string(L, opts, "new_name");
                if (nn && up) add_finding(k, R_RENAME_COL, t, lua_pushfstring(L, "alter_column %s.%s new_name = %s", t, col, nn));
            }
        }
    } else if (strcmp(h, "create_foreign_key") == 0) {
        int opts = OPTS(6);
        const char *t = push_table_key(L, opts, "schema", ARG_STR(2));
        if (!in_set(k, "created", t) && field_bool(L, opts, "not_valid") != 1)
            add_finding(k, R_FK, t, lua_pushfstring(L, "create_foreign_key on %s without not_valid", t));
    } else if (strcmp(h, "create_check_constraint") == 0) {
        int opts = OPTS(4);
        const char *t = push_table_key(L, opts, "schema", ARG_STR(2));
        if (!in_set(k, "created", t) && field_bool(L, opts, "not_valid") != 1)
            add_finding(k, R_CHECK, t, lua_pushfstring(L, "create_check_constraint on %s without not_valid", t));
    } else if (strcmp(h, "create_unique_constraint") == 0 || strcmp(h, "create_primary_key") == 0) {
        const char *t = push_table_key(L, OPTS(4), "schema", ARG_STR(2));
        if (!in_set(k, "created", t)) add_finding(k, R_UNIQUE, t, lua_pushfstring(L, "%s on %s", h, t));
    }
#undef ARG_STR
#undef OPTS
    lua_settop(L, base);
}

/* ---- the recording op ---------------------------------------------------------------------- */

/* The line of the migration file that made the call: the innermost frame whose source is the
 * file (a helper function of the migration may sit between), else the direct caller. */
static int call_line(lua_State *L, const char *file)
{
    lua_Debug ar;
    int first = -1;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar)) break;
        if (first < 0 && ar.currentline > 0) first = ar.currentline;
        if (ar.source[0] == '@' && strcmp(ar.source + 1, file) == 0) return ar.currentline;
    }
    return first < 0 ? 0 : first;
}

/* Records in the state's `tables` set the names of the tables a call touches (without schema):
 * what a lock wait of this migration can have waited for (the lock-retry report names them). */
static void touch_tables(lua_State *L, int st, const char *h, int n)
{
    static const struct { const char *helper; int args[2]; } where[] = {
        {"create_table", {1, 0}}, {"drop_table", {1, 0}}, {"rename_table", {1, 2}}, {"add_column", {1, 0}},
        {"drop_column", {1, 0}}, {"alter_column", {1, 0}}, {"create_index", {2, 0}}, {"create_unique_constraint", {2, 0}},
        {"create_check_constraint", {2, 0}}, {"create_primary_key", {2, 0}}, {"create_foreign_key", {2, 3}},
        {"drop_constraint", {2, 0}}, {NULL, {0, 0}},
    };
    lua_getfield(L, st, "tables");
    for (int w = 0; where[w].helper; w++) {
        if (strcmp(where[w].helper, h) != 0) continue;
        for (int a = 0; a < 2; a++) {
            int i = where[w].args[a];
            if (i == 0 || i > n || lua_type(L, i) != LUA_TSTRING) continue;
            lua_pushvalue(L, i);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
    }
    lua_pop(L, 1);
}

/* op.<helper>(...) while checking: upvalues 1 state, 2 helper name, 3 builder. */
static int lint_call(lua_State *L)
{
    check k = {L, lua_upvalueindex(1), 0, 0, lua_tostring(L, lua_upvalueindex(2))};
    lua_getfield(L, k.st, "op");
    if (lua_gettop(L) > 1 && lua_rawequal(L, 1, -1)) lua_remove(L, 1); /* op:name(...) */
    lua_pop(L, 1);
    int n = lua_gettop(L);
    k.call_safe = kr_lint_strip_safe(L, n);
    k.line = call_line(L, st_string(L, k.st, "file"));
    lua_pushinteger(L, k.line);
    lua_setfield(L, k.st, "line"); /* where an error in the builder points */
    /* the real builder checks the arguments as an upgrade would (its statements are dropped) */
    lua_pushvalue(L, lua_upvalueindex(3));
    for (int i = 1; i <= n; i++) lua_pushvalue(L, i);
    lua_call(L, n, 0);
    touch_tables(L, k.st, k.helper, n);
    judge(&k, n);
    return 0;
}

/* The recording op's __index: pure helpers pass through, builders record, db is absent. */
static int lint_index(lua_State *L)
{
    if (lua_type(L, 2) != LUA_TSTRING) kr_error_raise(L, "bad_migration", "op has only named fields, not %s keys", luaL_typename(L, 2));
    const char *key = lua_tostring(L, 2);
    if (strcmp(key, "db") == 0) return 0;
    lua_getfield(L, lua_upvalueindex(2), key);
    if (!lua_isfunction(L, -1)) kr_error_raise(L, "bad_migration", "op.%s: no such DDL helper", key);
    static const char *const pure[] = {"sql", "is_sql", "quote_ident", "quote_literal", "parse_type", "name", NULL};
    for (const char *const *p = pure; *p; p++)
        if (strcmp(*p, key) == 0) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, lint_call, 3);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* lint.phase(entry, phase, ddl [, x]) -> findings, tables: runs entry.migration[phase](op) with a
 * recording op and returns what the rules found (an empty array when the phase is absent) and
 * the set of table names its helpers touched.
 * entry is {file =, migration =} as kronos.migrate.load returns it; ddl is kronos.core.ddl. */
static int l_phase(lua_State *L)
{
    kr_checktable(L, 1);
    size_t plen;
    const char *phase = kr_checktext(L, 2, &plen, "the phase");
    kr_checktable(L, 3);
    lua_settop(L, 4);
    lua_getfield(L, 1, "migration");
    int mig = lua_gettop(L);
    if (!lua_istable(L, mig)) kr_error_arg(L, 1, "entry.migration must be a table");
    lua_createtable(L, 0, 10);
    int st = lua_gettop(L);
    lua_getfield(L, 1, "file");
    lua_setfield(L, st, "file");
    lua_getfield(L, mig, "revision");
    lua_setfield(L, st, "revision");
    lua_pushstring(L, phase);
    lua_setfield(L, st, "phase");
    lua_getfield(L, mig, "transactional");
    lua_pushboolean(L, lua_isnil(L, -1) || lua_toboolean(L, -1));
    lua_setfield(L, st, "transactional");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_setfield(L, st, "created");
    lua_newtable(L);
    lua_setfield(L, st, "indexes");
    lua_newtable(L);
    lua_setfield(L, st, "findings");
    lua_newtable(L);
    lua_setfield(L, st, "tables");
    lua_pushinteger(L, 0);
    lua_setfield(L, st, "line");

    check k = {L, st, 0, 0, "safe"};
    lua_getfield(L, mig, phase); /* findings about the migration itself point at the function */
    if (lua_isfunction(L, -1)) {
        lua_Debug ar;
        lua_getinfo(L, ">S", &ar);
        k.line = ar.linedefined;
    } else {
        lua_pop(L, 1);
    }
    /* the migration's own safe: true, or an array of rule names (made a set here) */
    lua_getfield(L, mig, "safe");
    int report = strcmp(phase, "up") == 0; /* a bad safe list is reported once per migration */
    if (lua_istable(L, -1)) {
        int list = lua_gettop(L);
        lua_newtable(L);
        for (int i = 1; i <= (int)lua_rawlen(L, list); i++) {
            lua_rawgeti(L, list, i);
            const char *name = lua_tostring(L, -1);
            int known = 0;
            for (int r = 0; name && r < R_COUNT; r++)
                if (strcmp(rules[r].name, name) == 0) known = 1;
            if (!known && report) {
                add_finding(&k, R_UNKNOWN_RULE, NULL,
                            lua_pushfstring(L, "safe names '%s'", name ? name : luaL_typename(L, -1)));
                lua_pop(L, 1);
            }
            lua_pushboolean(L, 1);
            lua_setfield(L, -3, name ? name : "?");
            lua_pop(L, 1);
        }
        lua_setfield(L, st, "msafe");
        lua_pop(L, 1);
    } else {
        lua_setfield(L, st, "msafe");
    }

    lua_getfield(L, mig, phase);
    if (!lua_isfunction(L, -1)) {
        lua_getfield(L, st, "findings");
        lua_getfield(L, st, "tables");
        return 2;
    }
    int fn = lua_gettop(L);
    /* the recording op: offline, no db, x from the caller */
    lua_createtable(L, 0, 3);
    int op = lua_gettop(L);
    lua_pushboolean(L, 1);
    lua_setfield(L, op, "offline");
    if (lua_istable(L, 4)) lua_pushvalue(L, 4); else lua_newtable(L);
    lua_setfield(L, op, "x");
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, st);
    lua_pushvalue(L, 3);
    lua_pushcclosure(L, lint_index, 2);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, op);
    lua_pushvalue(L, op);
    lua_setfield(L, st, "op");
    lua_pushvalue(L, fn);
    lua_pushvalue(L, op);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        lua_getfield(L, st, "line");
        k.line = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        k.helper = phase;
        lua_getglobal(L, "tostring"); /* an error object has a one-line __tostring */
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        kr_error_pushoneline(L, lua_tostring(L, -1));
        add_finding(&k, R_ERROR, NULL, lua_pushfstring(L, "%s raised: %s", phase, lua_tostring(L, -1)));
    }
    lua_getfield(L, st, "findings");
    lua_getfield(L, st, "tables");
    return 2;
}

/* lint.rules() -> {{name, why, fix, level, suppressible}, ...}: for docs and `lint --verbose`. */
static int l_rules(lua_State *L)
{
    lua_createtable(L, R_COUNT, 0);
    for (int r = 0; r < R_COUNT; r++) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, rules[r].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, rules[r].why);
        lua_setfield(L, -2, "why");
        lua_pushstring(L, rules[r].fix);
        lua_setfield(L, -2, "fix");
        lua_pushstring(L, rules[r].level ? "finding" : "note");
        lua_setfield(L, -2, "level");
        lua_pushboolean(L, rules[r].suppressible);
        lua_setfield(L, -2, "suppressible");
        lua_rawseti(L, -2, r + 1);
    }
    return 1;
}

/* lint.strip_safe(opts) -> opts without safe, safe: what the engine's op does before a builder. */
static int l_strip_safe(lua_State *L)
{
    lua_settop(L, 1);
    int safe = kr_lint_strip_safe(L, 1);
    lua_pushboolean(L, safe);
    return 2;
}

static const luaL_Reg lint_funcs[] = {
    {"phase", l_phase},
    {"rules", l_rules},
    {"strip_safe", l_strip_safe},
    {NULL, NULL}
};

void kr_open_lint(lua_State *L)
{
    lua_newtable(L);
    luaL_setfuncs(L, lint_funcs, 0);
    lua_setfield(L, -2, "lint");
}
