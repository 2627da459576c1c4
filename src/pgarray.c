/* Array text output: see pgarray.h. The grammar is array_in's: braces nest, elements are
 * separated by the delimiter, an element is either double-quoted (backslash escapes any
 * character) or bare (backslash escapes too; surrounding white space is dropped; NULL in any
 * case is the null element). */
#include <string.h>

#include "pgarray.h"
#include "utf8.h"

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

typedef struct {
    const char *p, *end;
    char *scratch;
    const kr_pgarray_cb *cb;
    void *ud;
} parser;

static void skip_space(parser *ps)
{
    while (ps->p < ps->end && is_space(*ps->p)) ps->p++;
}

/* One element at ps->p (after white space); stops before the delimiter or '}'. */
static int element(parser *ps)
{
    char *o = ps->scratch;
    if (*ps->p == '"') {
        ps->p++;
        for (;;) {
            if (ps->p >= ps->end) return 0;
            char ch = *ps->p++;
            if (ch == '"') break;
            if (ch == '\\') {
                if (ps->p >= ps->end) return 0;
                ch = *ps->p++;
            }
            *o++ = ch;
        }
        skip_space(ps);
        *o = '\0';
        return ps->cb->elem(ps->ud, ps->scratch, (size_t)(o - ps->scratch));
    }
    char *last = o; /* end of the element without trailing white space (escaped kept) */
    int escaped = 0;
    while (ps->p < ps->end) {
        char ch = *ps->p;
        if (ch == ',' || ch == '}') break;
        if (ch == '{' || ch == '"') return 0;
        ps->p++;
        if (ch == '\\') {
            if (ps->p >= ps->end) return 0;
            *o++ = *ps->p++;
            last = o;
            escaped = 1;
            continue;
        }
        *o++ = ch;
        if (!is_space(ch)) last = o;
    }
    size_t n = (size_t)(last - ps->scratch);
    if (n == 0) return 0; /* an empty bare element is an error in array_in too */
    ps->scratch[n] = '\0';
    if (!escaped && kr_utf8_ieq(ps->scratch, n, "null")) return ps->cb->elem(ps->ud, NULL, 0); /* "NULL" quoted or escaped is text */
    return ps->cb->elem(ps->ud, ps->scratch, n);
}

static int array(parser *ps, int depth)
{
    if (depth > KR_PGARRAY_MAXDEPTH || ps->p >= ps->end || *ps->p != '{') return 0;
    ps->p++;
    if (!ps->cb->open(ps->ud)) return 0;
    skip_space(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        return ps->cb->close(ps->ud);
    }
    for (;;) {
        skip_space(ps);
        if (ps->p >= ps->end) return 0;
        if (*ps->p == '{') {
            if (!array(ps, depth + 1)) return 0;
            skip_space(ps);
        } else if (!element(ps)) {
            return 0;
        }
        if (ps->p >= ps->end) return 0;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == '}') {
            ps->p++;
            return ps->cb->close(ps->ud);
        }
        return 0;
    }
}

int kr_pgarray_parse(const char *in, size_t len, char *scratch, const kr_pgarray_cb *cb, void *ud)
{
    parser ps = {in, in + len, scratch, cb, ud};
    skip_space(&ps);
    if (ps.p < ps.end && *ps.p == '[') { /* dimension decoration: [l:u][l:u]= */
        const char *eq = memchr(ps.p, '=', (size_t)(ps.end - ps.p));
        if (eq == NULL) return 0;
        for (const char *q = ps.p; q < eq; q++)
            if (!((*q >= '0' && *q <= '9') || *q == '[' || *q == ']' || *q == ':' || *q == '-' || *q == '+' || is_space(*q)))
                return 0;
        ps.p = eq + 1;
        skip_space(&ps);
    }
    if (!array(&ps, 1)) return 0;
    skip_space(&ps);
    return ps.p == ps.end;
}

size_t kr_pgarray_quote(const char *s, size_t len, char *out)
{
    size_t n = 0;
    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"' || s[i] == '\\') out[n++] = '\\';
        out[n++] = s[i];
    }
    out[n++] = '"';
    return n;
}
