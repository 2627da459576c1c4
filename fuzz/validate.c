/* fuzz-link: src/validate.c src/utf8.c */
/* libFuzzer target: the user model's validation (src/validate.c): UTF-8 character counts,
 * emails, URLs and list cursors, each checked against an independent reference or a property.
 * Byte 0 picks the function (and a length limit); the rest is the caller's text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "utf8.h"
#include "validate.h"

/* Reference decoder, written from RFC 3629's table: code points of strict UTF-8, or -1.
 * NUL is refused too, since PostgreSQL text cannot hold it. */
static long ref_utf8_chars(const unsigned char *s, size_t len)
{
    long n = 0;
    for (size_t i = 0; i < len; n++) {
        unsigned char c = s[i];
        if (c == 0) return -1;
        if (c < 0x80) { i++; continue; }
        size_t k;
        unsigned long cp, min;
        if (c >= 0xC2 && c <= 0xDF) k = 1, cp = c & 0x1F, min = 0x80;
        else if (c >= 0xE0 && c <= 0xEF) k = 2, cp = c & 0x0F, min = 0x800;
        else if (c >= 0xF0 && c <= 0xF4) k = 3, cp = c & 0x07, min = 0x10000;
        else return -1;
        if (len - i < k + 1) return -1;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return -1;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return -1;
        i += k + 1;
    }
    return n;
}

static int ascii_ws_or_ctl(unsigned char c) { return c <= 0x20 || c == 0x7F; }

/* Whether the bytes hold one that COPY's text format escapes (copytext.h). */
static int ref_escape(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\\' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') return 1;
    return 0;
}

static void fuzz_text(const char *s, size_t len, size_t max)
{
    long ref = ref_utf8_chars((const unsigned char *)s, len);
    size_t n = kr_utf8_chars(s, len, NULL, NULL);
    CHECK(ref < 0 ? n == KR_UTF8_INVALID : n == (size_t)ref);
    int escape = -1;
    kr_verdict v = kr_check_text(s, len, max, &escape);
    CHECK(v == (ref < 0 ? KR_BAD_UTF8 : (size_t)ref > max ? KR_TOO_LONG : KR_VALID));
    if (v == KR_VALID) CHECK(escape == ref_escape(s, len));
}

static void fuzz_email(const char *s, size_t len)
{
    char *out = malloc(len ? len : 1); /* exactly what the header promises is enough */
    if (out == NULL) abort();
    size_t outlen = (size_t)-1;
    const char *why = NULL;
    int escape = -1;
    kr_verdict v = kr_normalize_email(s, len, out, &outlen, &why, &escape);
    if (v == KR_MALFORMED) CHECK(why != NULL);
    /* trimming takes ASCII spaces only, so the verdict on UTF-8 is the whole text's */
    CHECK((v == KR_BAD_UTF8) == (ref_utf8_chars((const unsigned char *)s, len) < 0));
    if (v == KR_VALID) {
        CHECK(outlen <= len);
        /* out is the trimmed text with ASCII letters lower-cased, nothing else changed */
        size_t lead = 0;
        while (lead < len && strchr(" \t\n\r\v\f", s[lead]) != NULL && s[lead] != '\0') lead++;
        for (size_t i = 0; i < outlen; i++) {
            char c = s[lead + i];
            CHECK(out[i] == ((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c));
        }
        CHECK(escape == ref_escape(out, outlen));
        long chars = ref_utf8_chars((const unsigned char *)out, outlen);
        CHECK(chars >= KR_EMAIL_MIN && chars <= KR_EMAIL_MAX);
        size_t ats = 0, at = 0;
        for (size_t i = 0; i < outlen; i++) {
            unsigned char c = (unsigned char)out[i];
            CHECK(!ascii_ws_or_ctl(c));
            CHECK(!(c >= 'A' && c <= 'Z'));
            if (c == '@') ats++, at = i;
        }
        CHECK(ats == 1 && at > 0 && at + 1 < outlen);
        /* normalizing is idempotent */
        char *again = malloc(outlen);
        size_t againlen = 0;
        if (again == NULL) abort();
        CHECK(kr_normalize_email(out, outlen, again, &againlen, NULL, NULL) == KR_VALID);
        CHECK(againlen == outlen && memcmp(again, out, outlen) == 0);
        free(again);
    }
    free(out);
}

static void fuzz_url(const char *s, size_t len)
{
    const char *why = NULL;
    int escape = -1;
    kr_verdict v = kr_check_url(s, len, &why, &escape);
    if (v == KR_MALFORMED) CHECK(why != NULL);
    CHECK((v == KR_BAD_UTF8) == (ref_utf8_chars((const unsigned char *)s, len) < 0));
    if (v != KR_VALID) return;
    CHECK(escape == ref_escape(s, len));
    long chars = ref_utf8_chars((const unsigned char *)s, len);
    CHECK(chars > 0 && chars <= KR_URL_MAX);
    CHECK((len > 7 && strncasecmp(s, "http://", 7) == 0) || (len > 8 && strncasecmp(s, "https://", 8) == 0));
    for (size_t i = 0; i < len; i++) CHECK(!ascii_ws_or_ctl((unsigned char)s[i]));
}

static void fuzz_cursor(const char *s, size_t len)
{
    char ts[KR_CURSOR_TS_MAX + 1], id[37], cur[KR_CURSOR_MAX + 1];
    if (kr_cursor_decode(s, len, ts, id)) {
        CHECK(strlen(ts) < KR_CURSOR_TS_MAX && strlen(id) == 36);
        size_t n = kr_cursor_encode(ts, strlen(ts), id, 36, cur);
        CHECK(n > 0 && n <= KR_CURSOR_MAX);
        char ts2[KR_CURSOR_TS_MAX + 1], id2[37];
        CHECK(kr_cursor_decode(cur, n, ts2, id2) && strcmp(ts, ts2) == 0 && strcmp(id, id2) == 0);
    }
    /* The input as a timestamp and an id: what encodes must decode to itself. */
    if (len >= 36) {
        size_t tslen = len - 36;
        size_t n = kr_cursor_encode(s, tslen, s + tslen, 36, cur);
        CHECK(n <= KR_CURSOR_MAX);
        if (n > 0) {
            CHECK(kr_cursor_decode(cur, n, ts, id));
            CHECK(strlen(ts) == tslen && memcmp(ts, s, tslen) == 0 && memcmp(id, s + tslen, 36) == 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t len = size - 1;
    char *s = malloc(len ? len : 1); /* exact size: ASan sees any read past the end */
    if (s == NULL) abort();
    if (len) memcpy(s, data + 1, len);
    switch (data[0] % 4) {
    case 0: fuzz_text(s, len, data[0] >> 2); break;
    case 1: fuzz_email(s, len); break;
    case 2: fuzz_url(s, len); break;
    default: fuzz_cursor(s, len); break;
    }
    free(s);
    return 0;
}
