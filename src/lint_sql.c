/* The SQL text the DDL safety check reads: a column default's function calls. Lua-free, so that
 * fuzz/lint_sql.c can link it alone. Why a default's calls matter: ADD COLUMN with a volatile
 * default (clock_timestamp(), random(), gen_random_uuid(), nextval()) evaluates it per row, which
 * rewrites the table under an ACCESS EXCLUSIVE lock; a stable one (now()) is evaluated once. */
#include <ctype.h>
#include <string.h>

#include "lint_sql.h"
#include "utf8.h"

/* Functions a column default may call without a rewrite (stable or immutable), and the keywords
 * that a '(' may follow without being a call. Any other call may be volatile: kronos cannot ask
 * the server offline. */
static const char *const stable_functions[] = {
    "now", "transaction_timestamp", "statement_timestamp", "current_date", "current_timestamp",
    "localtimestamp", "lower", "upper", "btrim", "trim", "length", "coalesce", "nullif", "greatest",
    "least", "make_date", "make_time", "make_interval", "make_timestamp", "make_timestamptz",
    "to_timestamp", "to_date", "json_build_object", "jsonb_build_object", "json_build_array",
    "jsonb_build_array", "array", "row", "cast", "in", "interval", "concat", "abs", "round", NULL
};

int kr_lint_sql_stable(const char *name, size_t n)
{
    for (const char *const *f = stable_functions; *f; f++) {
        if (kr_utf8_ieq(name, n, *f)) return 1;
    }
    return 0;
}

static int ident_start(unsigned char c) { return isalpha(c) || c == '_' || c >= 0x80; }
static int ident_char(unsigned char c) { return isalnum(c) || c == '_' || c == '$' || c >= 0x80; }

/* Skips a quoted run starting at expr[i] == q (a doubled q stays inside); returns the index after it. */
static size_t skip_quoted(const char *expr, size_t len, size_t i, char q)
{
    i++;
    while (i < len) {
        if (expr[i] == q) {
            if (i + 1 < len && expr[i + 1] == q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i++;
    }
    return len;
}

int kr_lint_sql_volatile_call(const char *expr, size_t len, size_t *start, size_t *n)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)expr[i];
        if (c == '\'' || c == '"') {
            i = skip_quoted(expr, len, i, (char)c);
            continue;
        }
        if (!ident_start(c)) {
            i++;
            continue;
        }
        size_t s = i; /* the last part of a dotted name */
        while (i < len && (ident_char((unsigned char)expr[i]) || expr[i] == '.')) {
            if (expr[i] == '.') s = i + 1;
            i++;
        }
        size_t e = i, k = i;
        while (k < len && isspace((unsigned char)expr[k])) k++;
        if (e > s && k < len && expr[k] == '(' && !kr_lint_sql_stable(expr + s, e - s)) {
            *start = s;
            *n = e - s;
            return 1;
        }
    }
    return 0;
}
