/* fuzz-link: src/convert.c */
/* libFuzzer target: the pure conversions of server text (src/convert.c), with properties.
 * The first input byte picks the converter (mod 4: timestamptz, bytea both ways, int8, float8); the rest
 * is the server's text. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "convert.h"

/* A heap copy with nul extra bytes: without them ASan sees any read past the end of the text. */
static char *copy(const uint8_t *data, size_t size, size_t nul)
{
    char *s = malloc(size + nul ? size + nul : 1);
    if (s == NULL) abort();
    if (size) memcpy(s, data, size);
    if (nul) s[size] = '\0';
    return s;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* "YYYY-MM-DDTHH:MM:SS[.f]Z" with a year of 4 or more digits, optionally negative. */
static void check_iso_shape(const char *o, size_t n)
{
    size_t i = o[0] == '-';
    size_t y = 0;
    while (i < n && is_digit(o[i])) i++, y++;
    CHECK(y >= 4);
    static const char tail[] = "-99-99T99:99:99";
    for (size_t k = 0; tail[k]; k++, i++) {
        CHECK(i < n);
        CHECK(tail[k] == '9' ? is_digit(o[i]) : o[i] == tail[k]);
    }
    if (i < n && o[i] == '.') {
        size_t f = 0;
        for (i++; i < n && is_digit(o[i]); i++) f++;
        CHECK(f >= 1 && f <= 6);
    }
    CHECK(i + 1 == n && o[i] == 'Z');
}

static void fuzz_iso(const char *in, size_t len)
{
    char out[KR_ISO_MAX];
    size_t n = kr_iso_timestamptz(in, len, out);
    if (n == 0) return;
    CHECK(n < KR_ISO_MAX);
    check_iso_shape(out, n);
    if (out[0] == '-' || (size_t)((char *)memchr(out, '-', n) - out) > 9) return; /* input takes 9 digits */
    /* Idempotence: the UTC result, written back as server text, converts to itself. */
    char again[KR_ISO_MAX + 8], out2[KR_ISO_MAX];
    memcpy(again, out, n - 1);
    char *t = memchr(again, 'T', n - 1);
    CHECK(t != NULL);
    *t = ' ';
    memcpy(again + n - 1, "+00", 3);
    size_t n2 = kr_iso_timestamptz(again, n + 2, out2);
    if (strncmp(out, "0000-", 5) == 0) return; /* year 0 is 1 BC on the server's side */
    CHECK(n2 == n && memcmp(out, out2, n) == 0);
}

static void fuzz_bytea(const char *in, size_t len)
{
    size_t cap = len >= 2 ? (len - 2) / 2 : 0;
    char *out = malloc(cap ? cap : 1);
    if (out == NULL) abort();
    size_t n = kr_unhex_bytea(in, len, out);
    int valid = len >= 2 && in[0] == '\\' && in[1] == 'x' && len % 2 == 0;
    for (size_t i = 2; valid && i < len; i++)
        valid = is_digit(in[i]) || (in[i] >= 'a' && in[i] <= 'f') || (in[i] >= 'A' && in[i] <= 'F');
    CHECK(valid ? n == cap : n == (size_t)-1);
    for (size_t i = 0; valid && i < n; i++) {
        char hex[3] = {in[2 + 2 * i], in[3 + 2 * i], 0};
        CHECK((unsigned char)out[i] == (unsigned char)strtoul(hex, NULL, 16));
    }
    /* the writer (kronos.bytea elements of arrays, COPY): the raw input as hex undoes to it */
    char *digits = malloc(2 * len + 1);
    char *back = malloc(len + 1);
    if (digits == NULL || back == NULL) abort();
    kr_hex_digits(in, len, digits);
    for (size_t i = 0; i < 2 * len; i++) CHECK(is_digit(digits[i]) || (digits[i] >= 'a' && digits[i] <= 'f'));
    CHECK(kr_unhex_digits(digits, len, back) && (len == 0 || memcmp(back, in, len) == 0));
    free(digits);
    free(back);
    free(out);
}

static void fuzz_int8(const char *in, size_t len)
{
    long long v = 0;
    int ok = kr_parse_int8(in, len, &v);
    /* The reference: an optional sign, then only digits, and strtoll without overflow. */
    size_t i = len > 0 && (in[0] == '+' || in[0] == '-');
    int shape = i < len;
    for (; shape && i < len; i++) shape = is_digit(in[i]);
    if (!shape) {
        CHECK(!ok);
        return;
    }
    char *z = copy((const uint8_t *)in, len, 1);
    errno = 0;
    long long ref = strtoll(z, NULL, 10);
    free(z);
    int overflow = errno == ERANGE;
    CHECK(ok == !overflow);
    if (ok) CHECK(v == ref);
}

/* kr_parse_double's fast paths against strtod (the C locale here): the same double, bit for bit,
 * for any text (NaN only as NaN). */
static void fuzz_double(const char *in, size_t len)
{
    char *z = copy((const uint8_t *)in, len, 1);
    double got = kr_parse_double(z), ref = strtod(z, NULL);
    free(z);
    if (ref != ref) {
        CHECK(got != got);
        return;
    }
    CHECK(memcmp(&got, &ref, sizeof got) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char *in = copy(data + 1, size - 1, 0);
    switch (data[0] % 4) {
    case 0: fuzz_iso(in, size - 1); break;
    case 1: fuzz_bytea(in, size - 1); break;
    case 2: fuzz_int8(in, size - 1); break;
    default: fuzz_double(in, size - 1); break;
    }
    free(in);
    return 0;
}
