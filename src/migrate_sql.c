/* SQL text for the version table and the migration lock. It is also produced offline (--sql),
 * so the quoting here needs no connection. */
#include <stdio.h>
#include <string.h>

#include "migrate.h"
#include "sha256.h"
#include "ddl.h"

/* Pushes s quoted by the one quoting kernel (ddl_text.c's kr_ddl_quote). */
static void push_quoted(lua_State *L, char quote, const char *s)
{
    size_t len = strlen(s), need = kr_ddl_quote(quote, s, len, NULL, 0);
    char small[256], *out = need < sizeof small ? small : (char *)lua_newuserdata(L, need + 1);
    kr_ddl_quote(quote, s, len, out, need + 1);
    lua_pushlstring(L, out, need);
    if (out != small) lua_remove(L, -2);
}

void kr_push_ident(lua_State *L, const char *name)
{
    push_quoted(L, '"', name);
}

void kr_push_literal(lua_State *L, const char *value)
{
    push_quoted(L, '\'', value);
}

/* The advisory lock key: the first 8 bytes of SHA-256("kronos:" .. table name), big-endian,
 * as a signed bigint. Stable across PostgreSQL versions, unlike hashtext(). */
long long kr_lock_key(const char *version_table)
{
    size_t len = strlen(version_table);
    char buf[512];
    unsigned char d[32];
    if (len > sizeof buf - 8) len = sizeof buf - 8; /* names are at most 63 bytes; longer ones are rejected earlier */
    memcpy(buf, "kronos:", 7);
    memcpy(buf + 7, version_table, len);
    kr_sha256(buf, len + 7, d);
    unsigned long long k = 0;
    for (int i = 0; i < 8; i++) k = k << 8 | d[i];
    /* two's complement without implementation-defined conversion */
    return k <= 0x7fffffffffffffffULL ? (long long)k : -(long long)(~k) - 1;
}

/* core.migrate.lock_key(name): the lock key as a decimal string (exact under LuaJIT too). */
int kr_migrate_lock_key(lua_State *L)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", kr_lock_key(luaL_optstring(L, 1, "kronos_version")));
    lua_pushstring(L, buf);
    return 1;
}

/* The version table every run and status read uses: opts.version_table, 1 to 63 bytes (what
 * PostgreSQL keeps of an identifier; a longer name would be truncated silently). */
const char *kr_version_table(lua_State *L, int opts)
{
    lua_getfield(L, opts, "version_table");
    int t = lua_type(L, -1);
    if (t != LUA_TNIL && t != LUA_TSTRING) kr_error_raise(L, "bad_argument", "option 'version_table' must be a string");
    const char *name = t == LUA_TSTRING ? lua_tostring(L, -1) : "kronos_version";
    lua_pop(L, 1); /* opts holds the string */
    size_t len = strlen(name);
    if (len == 0 || len > 63) kr_error_raise(L, "bad_argument", "option 'version_table' must be 1 to 63 bytes long");
    kr_push_ident(L, name);
    return name;
}

/* ---- batching ------------------------------------------------------------------------------ */

static int ident_start(unsigned char ch) { return ch == '_' || ch >= 0x80 || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z'); }
static int ident_char(unsigned char ch) { return ident_start(ch) || ch == '$' || (ch >= '0' && ch <= '9'); }

/* The length of a dollar-quote delimiter ($tag$ or $$) at p, or 0 when p does not start one. */
static size_t dollar_tag(const char *p)
{
    if (*p != '$') return 0;
    size_t n = 1;
    if (ident_start((unsigned char)p[1]))
        while (ident_char((unsigned char)p[n]) && p[n] != '$') n++;
    return p[n] == '$' ? n + 1 : 0;
}

/* Past one lexical item at p (*p != '\0'): a word, a quoted string or identifier, a comment, a
 * dollar-quoted string, or one other character. NULL when the item runs to the end of the text
 * (an unterminated quote, comment or dollar quote, or a -- comment with no line break after it)
 * or holds a backslash inside quotes, whose meaning depends on E'' and standard_conforming_strings. */
static const char *sql_item(const char *p)
{
    unsigned char ch = (unsigned char)*p;
    if (ident_start(ch)) {
        while (ident_char((unsigned char)*p)) p++;
        return p;
    }
    if (ch == '\'' || ch == '"') {
        for (p++;; p++) {
            if (*p == '\0' || *p == '\\') return NULL;
            if (*p == (char)ch) {
                if (p[1] != (char)ch) return p + 1;
                p++;
            }
        }
    }
    if (ch == '-' && p[1] == '-') {
        p += strcspn(p, "\n");
        return *p ? p : NULL;
    }
    if (ch == '/' && p[1] == '*') {
        int depth = 1;
        for (p += 2; depth > 0; p++) {
            if (*p == '\0') return NULL;
            if (p[0] == '/' && p[1] == '*') depth++, p++;
            else if (p[0] == '*' && p[1] == '/') depth--, p++;
        }
        return p;
    }
    size_t n = dollar_tag(p);
    if (n) {
        const char *end = p + n;
        for (;; end++) {
            end = strchr(end, '$');
            if (end == NULL) return NULL;
            if (strncmp(end, p, n) == 0) return end + n;
        }
    }
    return p + 1;
}

/* Whether a statement can be joined to others with ";\n" into one simple-protocol query and
 * still be read by the server exactly as on its own: it must end outside any string, quoted
 * identifier, comment or dollar quote. Anything doubtful answers no, and the statement runs alone. */
int kr_sql_batchable(const char *sql)
{
    for (const char *p = sql; *p;)
        if ((p = sql_item(p)) == NULL) return 0;
    return 1;
}

/* Whether the word [p, end) is w (lower case), ignoring case. */
static int word_is(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(end - p) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if ((p[i] | 0x20) != w[i]) return 0;
    return 1;
}

/* The first statement of sql that ends or opens a transaction, by its command: BEGIN, START
 * TRANSACTION, COMMIT, END, ABORT, ROLLBACK (not ROLLBACK [WORK | TRANSACTION] TO a savepoint),
 * PREPARE TRANSACTION; NULL when there is none. Words inside strings, comments and dollar
 * quotes (a DO block's BEGIN ... END) do not count. Doubtful text stops the scan (NULL). */
const char *kr_sql_txcontrol(const char *sql)
{
    enum { NONE, AFTER_ROLLBACK, NEEDS_TRANSACTION } pending = NONE;
    const char *found = NULL;
    int start = 1; /* the next word begins a statement */
    for (const char *p = sql; *p;) {
        unsigned char ch = (unsigned char)*p;
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f') {
            p++;
            continue;
        }
        const char *q = ch == ';' ? p + 1 : sql_item(p);
        if (q == NULL) break;
        if ((ch == '-' && p[1] == '-') || (ch == '/' && p[1] == '*')) {
            p = q;
            continue;
        }
        int word = ident_start(ch);
        if (pending == AFTER_ROLLBACK) {
            if (word && (word_is(p, q, "work") || word_is(p, q, "transaction"))) {
                p = q;
                continue;
            }
            if (!(word && word_is(p, q, "to"))) return found;
            pending = NONE;
        } else if (pending == NEEDS_TRANSACTION) {
            if (word && word_is(p, q, "transaction")) return found;
            pending = NONE;
        } else if (start && word) {
            if (word_is(p, q, "begin")) return "BEGIN";
            if (word_is(p, q, "commit")) return "COMMIT";
            if (word_is(p, q, "end")) return "END";
            if (word_is(p, q, "abort")) return "ABORT";
            if (word_is(p, q, "rollback")) found = "ROLLBACK", pending = AFTER_ROLLBACK;
            if (word_is(p, q, "start")) found = "START TRANSACTION", pending = NEEDS_TRANSACTION;
            if (word_is(p, q, "prepare")) found = "PREPARE TRANSACTION", pending = NEEDS_TRANSACTION;
        }
        start = ch == ';';
        p = q;
    }
    return pending == AFTER_ROLLBACK ? found : NULL;
}

/* What ends a statement in the offline script. A statement whose end is not plain SQL (a
 * trailing -- comment above all, which would swallow a ';' on its line and merge the next
 * statement into this one under psql) gets its ';' on a line of its own. */
const char *kr_sql_terminator(const char *sql)
{
    return kr_sql_batchable(sql) ? ";" : "\n;";
}

/* core.migrate.terminator(sql) -> what follows the statement in the offline script. */
int kr_migrate_terminator(lua_State *L)
{
    lua_pushstring(L, kr_sql_terminator(luaL_checkstring(L, 1)));
    return 1;
}
