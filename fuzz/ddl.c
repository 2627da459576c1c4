/* fuzz-link: src/ddl_text.c src/utf8.c */
/* libFuzzer target: the Lua-free DDL text builders (src/ddl_text.c behind src/ddl.h): quoted
 * identifiers, literals (defaults), type names, conventional names, foreign key actions.
 * Byte 0 picks the builder, byte 1 the size of the output buffer (allocated exactly, so ASan
 * sees any overrun); the rest is the migration author's (or an attacker's) text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "ddl.h"

/* Every successful result is NUL-terminated inside the buffer at the length it reports. */
static void check_written(const char *out, size_t outsz, long n)
{
    CHECK(n >= 0 && (size_t)n < outsz && out[n] == '\0' && strlen(out) == (size_t)n);
}

static void check_failed(const char *out, size_t outsz, long n)
{
    CHECK(n < 0 && n >= KR_DDL_EACTION);
    CHECK(kr_ddl_strerror((int)n) != NULL);
    if (outsz > 0) CHECK(out[0] == '\0');
}

/* "..." with doubled quotes undoes to exactly the input. */
static void fuzz_ident(const char *s, size_t len, char *out, size_t outsz)
{
    int n = kr_ddl_quote_ident(s, len, out, outsz);
    int text_ok = kr_ddl_check_text(s, len) == 0 && len > 0 && len <= KR_DDL_NAMEMAX;
    if (n < 0) {
        check_failed(out, outsz, n);
        CHECK(!text_ok || n == KR_DDL_ESPACE);
        return;
    }
    CHECK(text_ok);
    check_written(out, outsz, n);
    CHECK(n >= 2 && out[0] == '"' && out[n - 1] == '"' && n <= KR_DDL_QUOTEDMAX);
    size_t k = 0;
    for (int i = 1; i < n - 1; i++, k++) {
        if (out[i] == '"') CHECK(out[++i] == '"'); /* a lone quote would end the identifier */
        CHECK(k < len && out[i] == s[k]);
    }
    CHECK(k == len);
}

/* '...' or E'...' undoes to exactly the input; snprintf-style length when out is too small. */
static void fuzz_literal(const char *s, size_t len, char *out, size_t outsz)
{
    long n = kr_ddl_quote_literal(s, len, out, outsz);
    if (n < 0) {
        CHECK(n == KR_DDL_ENUL || n == KR_DDL_EUTF8 || n == KR_DDL_ESPACE);
        CHECK(kr_ddl_check_text(s, len) != 0 || n == KR_DDL_ESPACE);
        return;
    }
    CHECK(kr_ddl_check_text(s, len) == 0);
    if ((size_t)n >= outsz) return; /* too small: only the length was computed */
    check_written(out, outsz, n);
    int e = out[0] == 'E';
    CHECK(out[e] == '\'' && out[n - 1] == '\'' && n >= 2 + e);
    size_t k = 0;
    for (long i = e + 1; i < n - 1; i++, k++) {
        if (out[i] == '\'') CHECK(out[++i] == '\'');
        else if (e && out[i] == '\\') CHECK(out[++i] == '\\');
        CHECK(k < len && out[i] == s[k]);
    }
    CHECK(k == len);
    if (!e) CHECK(memchr(s, '\\', len) == NULL); /* backslashes always travel in E'' form */
}

/* A parsed type holds only words, digits, spaces, parentheses, commas and brackets, and
 * parses to itself again. */
static void fuzz_type(const char *s, size_t len, char *out, size_t outsz)
{
    int n = kr_ddl_parse_type(s, len, out, outsz);
    if (n < 0) {
        check_failed(out, outsz, n);
        return;
    }
    check_written(out, outsz, n);
    for (int i = 0; i < n; i++) {
        char c = out[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' ' || c == '(' || c == ')' ||
              c == ',' || c == '[' || c == ']' || c == '_');
    }
    char again[KR_DDL_TYPEMAX];
    int m = kr_ddl_parse_type(out, (size_t)n, again, sizeof again);
    CHECK(m == n && memcmp(again, out, (size_t)n) == 0);
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

/* Names are checked as text (kr_ddl_quote_ident) where they are used; fitting only has to keep
 * within the bounds for any bytes, and to keep valid text valid. */
static void fuzz_fit(const char *s, size_t len, char *out, size_t outsz)
{
    int n = kr_ddl_fit_name(s, len, out, outsz);
    if (n < 0) {
        check_failed(out, outsz, n);
        return;
    }
    CHECK(n > 0 && n <= KR_DDL_NAMEMAX && (size_t)n < outsz && out[n] == '\0');
    if (kr_ddl_check_text(s, len) != 0) return;
    check_written(out, outsz, n);
    CHECK(kr_ddl_check_text(out, (size_t)n) == 0);
    if (len <= KR_DDL_NAMEMAX) {
        CHECK((size_t)n == len && memcmp(out, s, len) == 0);
    } else {
        CHECK(n >= 9 && out[n - 9] == '_');
        for (int i = n - 8; i < n; i++) CHECK(is_hex(out[i]));
        CHECK(memcmp(out, s, (size_t)n - 9) == 0);
    }
}

static void fuzz_action(const char *s, size_t len, char *out, size_t outsz)
{
    int n = kr_ddl_fk_action(s, len, out, outsz);
    if (n < 0) {
        check_failed(out, outsz, n);
        return;
    }
    check_written(out, outsz, n);
    static const char *const actions[] = {"CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION", NULL};
    int known = 0;
    for (int i = 0; actions[i]; i++) known |= strcmp(out, actions[i]) == 0;
    CHECK(known);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    size_t len = size - 2;
    /* mostly a roomy buffer, sometimes a tight one (0..63 bytes) to test the bounds */
    size_t outsz = data[1] < 64 ? data[1] : 4 * len + 256;
    char *s = malloc(len ? len : 1), *out = malloc(outsz ? outsz : 1);
    if (s == NULL || out == NULL) abort();
    if (len) memcpy(s, data + 2, len);
    switch (data[0] % 5) {
    case 0: fuzz_ident(s, len, out, outsz); break;
    case 1: fuzz_literal(s, len, out, outsz); break;
    case 2: fuzz_type(s, len, out, outsz); break;
    case 3: fuzz_fit(s, len, out, outsz); break;
    default: fuzz_action(s, len, out, outsz); break;
    }
    free(s);
    free(out);
    return 0;
}
