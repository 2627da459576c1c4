/* Lexical scans of SQL text (see sqlscan.h): the engine batches statements with them, refuses
 * transaction control inside its transaction, and terminates statements in offline scripts. */
#include <string.h>

#include "sqlscan.h"
#include "utf8.h"

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
int kr_sqlscan_batchable(const char *sql)
{
    for (const char *p = sql; *p;)
        if ((p = sql_item(p)) == NULL) return 0;
    return 1;
}

/* Whether the word [p, end) is w (lower case), ignoring case. */
static int word_is(const char *p, const char *end, const char *w)
{
    return kr_utf8_ieq(p, (size_t)(end - p), w);
}

/* The first statement of sql that ends or opens a transaction, by its command: BEGIN, START
 * TRANSACTION, COMMIT, END, ABORT, ROLLBACK (not ROLLBACK [WORK | TRANSACTION] TO a savepoint),
 * PREPARE TRANSACTION; NULL when there is none. Words inside strings, comments and dollar
 * quotes (a DO block's BEGIN ... END) do not count. Doubtful text stops the scan (NULL). */
const char *kr_sqlscan_txcontrol(const char *sql)
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
const char *kr_sqlscan_terminator(const char *sql)
{
    return kr_sqlscan_batchable(sql) ? ";" : "\n;";
}

