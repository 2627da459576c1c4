/* The Lua-free core of the DDL generator (see ddl.h): what may reach the server as a name,
 * a literal or a type. Shared by the Lua bindings and the fuzz target. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ddl.h"
#include "utf8.h"

const char *kr_ddl_strerror(int code)
{
    switch (code) {
    case KR_DDL_EEMPTY: return "must not be empty";
    case KR_DDL_ENUL: return "must not contain a NUL byte";
    case KR_DDL_ELONG: return "longer than 63 bytes (PostgreSQL would truncate it)";
    case KR_DDL_EUTF8: return "not valid UTF-8";
    case KR_DDL_ESPACE: return "output buffer too small";
    case KR_DDL_ETYPE: return "unknown type";
    case KR_DDL_ERANGE: return "type modifier out of range";
    case KR_DDL_EACTION: return "expected CASCADE, SET NULL, SET DEFAULT, RESTRICT or NO ACTION";
    default: return "invalid";
    }
}

static int fail(int code, char *out, size_t outsz)
{
    if (outsz > 0) out[0] = '\0';
    return code;
}

int kr_ddl_check_text(const char *s, size_t len)
{
    if (memchr(s, '\0', len) != NULL) return KR_DDL_ENUL;
    return kr_utf8_chars(s, len, NULL, NULL) == KR_UTF8_INVALID ? KR_DDL_EUTF8 : 0;
}

size_t kr_ddl_quote(char quote, const char *in, size_t len, char *out, size_t outsz)
{
    int escape = quote == '\'' && memchr(in, '\\', len) != NULL;
    size_t need = len + 2 + (escape ? 1 : 0);
    for (size_t i = 0; i < len; i++)
        if (in[i] == quote || (escape && in[i] == '\\')) need++;
    if (outsz > need) {
        size_t n = 0;
        if (escape) out[n++] = 'E';
        out[n++] = quote;
        for (size_t i = 0; i < len; i++) {
            if (in[i] == quote || (escape && in[i] == '\\')) out[n++] = in[i];
            out[n++] = in[i];
        }
        out[n++] = quote;
        out[n] = '\0';
    } else if (outsz > 0) {
        out[0] = '\0';
    }
    return need;
}

int kr_ddl_quote_ident(const char *in, size_t len, char *out, size_t outsz)
{
    if (len == 0) return fail(KR_DDL_EEMPTY, out, outsz);
    int bad = kr_ddl_check_text(in, len);
    if (bad) return fail(bad, out, outsz);
    if (len > KR_DDL_NAMEMAX) return fail(KR_DDL_ELONG, out, outsz);
    size_t n = kr_ddl_quote('"', in, len, out, outsz);
    if (n >= outsz) return fail(KR_DDL_ESPACE, out, outsz);
    return (int)n;
}

long kr_ddl_quote_literal(const char *in, size_t len, char *out, size_t outsz)
{
    int bad = kr_ddl_check_text(in, len);
    if (bad) return fail(bad, out, outsz);
    size_t need = kr_ddl_quote('\'', in, len, out, outsz);
    if (need > (size_t)LONG_MAX) return fail(KR_DDL_ESPACE, out, outsz);
    return (long)need;
}

/* ---- type names ---- */

enum { MOD_NONE, MOD_LENGTH, MOD_NUMERIC, MOD_PRECISION };

struct kr_typename {
    const char *name;   /* as written, lowercased, words single-spaced */
    const char *sql;    /* PostgreSQL's name */
    unsigned char mods; /* which modifier list may follow in parentheses */
    unsigned char scalar_only; /* serials are no types of arrays */
};

static const struct kr_typename typenames[] = {
    {"uuid", "uuid", MOD_NONE, 0},
    {"string", "varchar", MOD_LENGTH, 0},
    {"varchar", "varchar", MOD_LENGTH, 0},
    {"character varying", "varchar", MOD_LENGTH, 0},
    {"text", "text", MOD_NONE, 0},
    {"boolean", "boolean", MOD_NONE, 0},
    {"bool", "boolean", MOD_NONE, 0},
    {"smallint", "smallint", MOD_NONE, 0},
    {"int2", "smallint", MOD_NONE, 0},
    {"integer", "integer", MOD_NONE, 0},
    {"int", "integer", MOD_NONE, 0},
    {"int4", "integer", MOD_NONE, 0},
    {"bigint", "bigint", MOD_NONE, 0},
    {"int8", "bigint", MOD_NONE, 0},
    {"numeric", "numeric", MOD_NUMERIC, 0},
    {"decimal", "numeric", MOD_NUMERIC, 0},
    {"real", "real", MOD_NONE, 0},
    {"float4", "real", MOD_NONE, 0},
    {"double", "double precision", MOD_NONE, 0},
    {"double precision", "double precision", MOD_NONE, 0},
    {"float8", "double precision", MOD_NONE, 0},
    {"timestamptz", "timestamptz", MOD_PRECISION, 0},
    {"timestamp with time zone", "timestamptz", MOD_PRECISION, 0},
    {"timestamp", "timestamp", MOD_PRECISION, 0},
    {"timestamp without time zone", "timestamp", MOD_PRECISION, 0},
    {"date", "date", MOD_NONE, 0},
    {"time", "time", MOD_PRECISION, 0},
    {"time without time zone", "time", MOD_PRECISION, 0},
    {"interval", "interval", MOD_PRECISION, 0},
    {"json", "json", MOD_NONE, 0},
    {"jsonb", "jsonb", MOD_NONE, 0},
    {"bytea", "bytea", MOD_NONE, 0},
    {"serial", "serial", MOD_NONE, 1},
    {"bigserial", "bigserial", MOD_NONE, 1},
    {"smallserial", "smallserial", MOD_NONE, 1},
};

#define VARCHAR_MAX 10485760L  /* PostgreSQL's limit for varchar(n) */
#define NUMERIC_MAX 1000L
#define PRECISION_MAX 6L
#define ARRAY_DIMS_MAX 6       /* PostgreSQL's MAXDIM */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

static size_t skip_space(const char *s, size_t len, size_t i)
{
    while (i < len && is_space(s[i])) i++;
    return i;
}

/* Reads words separated by whitespace into buf, lowercased and single-spaced. */
static int read_words(const char *s, size_t len, size_t *pos, char *buf, size_t bufsz)
{
    size_t i = *pos, n = 0;
    while (i < len && is_word(s[i])) {
        if (n > 0) {
            if (n + 1 >= bufsz) return 0;
            buf[n++] = ' ';
        }
        while (i < len && is_word(s[i])) {
            if (n + 1 >= bufsz) return 0;
            buf[n++] = kr_utf8_lower(s[i++]);
        }
        size_t j = skip_space(s, len, i);
        if (j < len && is_word(s[j])) i = j;
    }
    buf[n] = '\0';
    *pos = i;
    return n > 0;
}

/* A decimal number of at most 9 digits: 0 when absent, KR_DDL_ERANGE when longer. */
static int read_number(const char *s, size_t len, size_t *pos, long *value)
{
    size_t i = skip_space(s, len, *pos), start = i;
    long v = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (i - start >= 9) return KR_DDL_ERANGE;
        v = v * 10 + (s[i++] - '0');
    }
    if (i == start) return KR_DDL_ETYPE;
    *pos = skip_space(s, len, i);
    *value = v;
    return 0;
}

/* "(a)" or "(a, b)" after a type name; returns how many numbers were read, or an error. */
static int read_mods(const char *s, size_t len, size_t *pos, long mods[2])
{
    size_t i = skip_space(s, len, *pos);
    if (i >= len || s[i] != '(') return 0;
    i++;
    int count = 0;
    for (;;) {
        int rc = read_number(s, len, &i, &mods[count]);
        if (rc) return rc;
        count++;
        if (i < len && s[i] == ',' && count < 2) { i++; continue; }
        if (i < len && s[i] == ')') break;
        return KR_DDL_ETYPE;
    }
    *pos = i + 1;
    return count;
}

static int check_mods(int kind, int count, const long mods[2])
{
    if (count == 0) return 0;
    switch (kind) {
    case MOD_LENGTH:
        if (count != 1) return KR_DDL_ETYPE;
        return mods[0] >= 1 && mods[0] <= VARCHAR_MAX ? 0 : KR_DDL_ERANGE;
    case MOD_NUMERIC:
        if (mods[0] < 1 || mods[0] > NUMERIC_MAX) return KR_DDL_ERANGE;
        return count == 1 || mods[1] <= mods[0] ? 0 : KR_DDL_ERANGE;
    case MOD_PRECISION:
        if (count != 1) return KR_DDL_ETYPE;
        return mods[0] <= PRECISION_MAX ? 0 : KR_DDL_ERANGE;
    default:
        return KR_DDL_ETYPE;
    }
}

int kr_ddl_parse_type(const char *in, size_t len, char *out, size_t outsz)
{
    char words[40];
    long mods[2] = {0, 0};
    size_t i = skip_space(in, len, 0);
    if (!read_words(in, len, &i, words, sizeof words)) return fail(KR_DDL_ETYPE, out, outsz);
    const struct kr_typename *t = NULL;
    for (size_t k = 0; k < sizeof typenames / sizeof typenames[0]; k++)
        if (strcmp(words, typenames[k].name) == 0) t = &typenames[k];
    if (t == NULL) return fail(KR_DDL_ETYPE, out, outsz);
    int count = read_mods(in, len, &i, mods);
    if (count < 0) return fail(count, out, outsz);
    int rc = check_mods(t->mods, count, mods);
    if (rc) return fail(rc, out, outsz);
    int dims = 0;
    for (i = skip_space(in, len, i); i < len && in[i] == '['; i = skip_space(in, len, i)) {
        i = skip_space(in, len, i + 1);
        if (i >= len || in[i] != ']' || t->scalar_only || ++dims > ARRAY_DIMS_MAX)
            return fail(KR_DDL_ETYPE, out, outsz);
        i++;
    }
    if (i != len) return fail(KR_DDL_ETYPE, out, outsz);

    char mod[32] = "";
    if (count == 1) snprintf(mod, sizeof mod, "(%ld)", mods[0]);
    if (count == 2) snprintf(mod, sizeof mod, "(%ld,%ld)", mods[0], mods[1]);
    int n = snprintf(out, outsz, "%s%s%.*s", t->sql, mod, dims * 2, "[][][][][][]");
    if (n < 0 || (size_t)n >= outsz) return fail(KR_DDL_ESPACE, out, outsz);
    return n;
}

/* ---- conventional names ---- */

#define FIT_KEEP (KR_DDL_NAMEMAX - 9)  /* bytes kept before "_" and 8 hex digits */

static uint32_t fnv1a(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

int kr_ddl_fit_name(const char *in, size_t len, char *out, size_t outsz)
{
    if (len == 0) return fail(KR_DDL_EEMPTY, out, outsz);
    if (len <= KR_DDL_NAMEMAX) {
        if (outsz <= len) return fail(KR_DDL_ESPACE, out, outsz);
        memcpy(out, in, len);
        out[len] = '\0';
        return (int)len;
    }
    size_t keep = kr_utf8_boundary(in, FIT_KEEP);
    if (outsz < keep + 10) return fail(KR_DDL_ESPACE, out, outsz);
    memcpy(out, in, keep);
    snprintf(out + keep, outsz - keep, "_%08lx", (unsigned long)fnv1a(in, len));
    return (int)(keep + 9);
}

/* ---- foreign key actions ---- */

int kr_ddl_fk_action(const char *in, size_t len, char *out, size_t outsz)
{
    static const char *const actions[] = {"CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION"};
    char words[KR_DDL_ACTIONMAX];
    size_t i = skip_space(in, len, 0);
    if (!read_words(in, len, &i, words, sizeof words) || skip_space(in, len, i) != len)
        return fail(KR_DDL_EACTION, out, outsz);
    for (char *c = words; *c; c++)
        if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
    for (size_t k = 0; k < sizeof actions / sizeof actions[0]; k++) {
        if (strcmp(words, actions[k]) == 0) {
            size_t n = strlen(words);
            if (outsz <= n) return fail(KR_DDL_ESPACE, out, outsz);
            memcpy(out, words, n + 1);
            return (int)n;
        }
    }
    return fail(KR_DDL_EACTION, out, outsz);
}
