/* User-model validation (see validate.h): plain C over byte strings. */
#include <stdint.h>
#include <string.h>

#include "utf8.h"
#include "validate.h"

/* Whitespace or a control character, in ASCII or beyond: never part of an email or a URL. */
static int is_space_or_control(unsigned long cp)
{
    if (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0)) return 1;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200B) || cp == 0x2028 || cp == 0x2029) return 1;
    return cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

/* What one walk over a value learns: everything its checks and its COPY line need. */
typedef struct {
    size_t chars;  /* characters (code points); KR_UTF8_INVALID when not strict UTF-8 or a NUL */
    int space;     /* some character is whitespace or a control (is_space_or_control) */
    int escape;    /* some byte is one COPY's text format escapes (see validate.h) */
    size_t ats;    /* how many '@' */
    size_t at;     /* the offset of the first '@' */
} text_scan;

/* Eight bytes at a time (SWAR): a word of ASCII printable bytes other than '@' and backslash is
 * counted, and lower-cased, without looking at each byte. */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_ZERO(x) (((x) - ONES) & ~(x) & HIGHS)
#define HAS_BYTE(x, b) HAS_ZERO((x) ^ ((b) * ONES))

static int plain_word(uint64_t w)
{
    /* below 0x21: exact once no byte has its high bit (then no borrow crosses into a flag that matters) */
    return !((w & HIGHS) | (((w - 0x21 * ONES) & ~w) & HIGHS) | HAS_BYTE(w, 0x7F) | HAS_BYTE(w, '@') | HAS_BYTE(w, '\\'));
}

static uint64_t lower_word(uint64_t w)
{
    /* every byte is below 0x80, so no sum carries into the next byte */
    uint64_t upper = ((w + (0x80 - 'A') * ONES) ^ (w + (0x80 - 'Z' - 1) * ONES)) & HIGHS;
    return w | (upper >> 2);
}

/* The one walk of the validators: ASCII bytes (nearly every byte of an email, a name or a URL)
 * are classified inline, eight at a time where they are plain, and every other sequence is
 * decoded by kr_utf8_next, the one UTF-8 decoder. When lower is not NULL the text is copied
 * there with ASCII letters lower-cased (the copy is complete only when the text is valid UTF-8). */
static void scan_text(const char *s, size_t len, char *lower, text_scan *t)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t chars = 0, ats = 0, at = 0, i = 0;
    int space = 0, escape = 0;
    while (i < len) {
        if (len - i >= 8) {
            uint64_t w;
            memcpy(&w, u + i, 8);
            if (plain_word(w)) {
                if (lower) {
                    w = lower_word(w);
                    memcpy(lower + i, &w, 8);
                }
                i += 8;
                chars += 8;
                continue;
            }
        }
        /* byte by byte up to the next word (a sequence may end past it) */
        size_t stop = len - i >= 8 ? i + 8 : len;
        while (i < stop) {
            unsigned char c = u[i];
            if (c < 0x80) {
                if (c >= 0x21 && c <= 0x7E) { /* printable */
                    if (c == '@') {
                        if (ats++ == 0) at = i;
                    } else if (c == '\\') {
                        escape = 1;
                    }
                } else { /* a space or a control */
                    if (c == 0) goto invalid; /* NUL: never text */
                    space = 1;
                    if (c == '\t' || c == '\n' || c == '\r') escape = 1;
                }
                if (lower) lower[i] = kr_utf8_lower((char)c);
                i++;
                chars++;
                continue;
            }
            unsigned long cp;
            size_t n = kr_utf8_next(u + i, len - i, &cp);
            if (n == 0) goto invalid;
            if (is_space_or_control(cp)) space = 1;
            if (lower) memcpy(lower + i, s + i, n);
            i += n;
            chars++;
        }
    }
    t->chars = chars;
    t->space = space;
    t->escape = escape;
    t->ats = ats;
    t->at = at;
    return;
invalid:
    t->chars = KR_UTF8_INVALID;
    t->space = space;
    t->escape = escape;
    t->ats = ats;
    t->at = at;
}

kr_verdict kr_check_text(const char *s, size_t len, size_t max, int *escape)
{
    text_scan t;
    scan_text(s, len, NULL, &t);
    if (t.chars == KR_UTF8_INVALID) return KR_BAD_UTF8;
    if (t.chars > max) return KR_TOO_LONG;
    if (escape) *escape = t.escape;
    return KR_VALID;
}

static int ascii_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static kr_verdict malformed(const char **why, const char *reason)
{
    if (why) *why = reason;
    return KR_MALFORMED;
}

kr_verdict kr_normalize_email(const char *in, size_t len, char *out, size_t *outlen, const char **why, int *escape)
{
    while (len > 0 && ascii_space((unsigned char)in[0])) in++, len--;
    while (len > 0 && ascii_space((unsigned char)in[len - 1])) len--;
    *outlen = len;
    text_scan t;
    scan_text(in, len, out, &t);
    if (t.chars == KR_UTF8_INVALID) return KR_BAD_UTF8;
    if (t.chars > KR_EMAIL_MAX) return KR_TOO_LONG;
    if (t.chars < KR_EMAIL_MIN) return malformed(why, "must be at least " KR_TEXT(KR_EMAIL_MIN) " characters");
    if (t.space) return malformed(why, "must not contain whitespace or control characters");
    if (t.ats == 0) return malformed(why, "must contain an @");
    if (t.ats > 1) return malformed(why, "must contain exactly one @");
    if (t.at == 0) return malformed(why, "must have a local part before the @");
    if (t.at == len - 1) return malformed(why, "must have a domain after the @");
    if (escape) *escape = t.escape;
    return KR_VALID;
}

/* The authority [userinfo@]host[:port] must name a host; a port is 1 to 5 digits. */
static int valid_authority(const char *a, size_t n)
{
    for (size_t i = n; i > 0; i--) {
        if (a[i - 1] == '@') {
            a += i;
            n -= i;
            break;
        }
    }
    size_t hostlen = n;
    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (close == NULL || close == a + 1) return 0;
        hostlen = (size_t)(close - a) + 1;
    } else {
        const char *colon = memchr(a, ':', n);
        if (colon) hostlen = (size_t)(colon - a);
    }
    if (hostlen == 0) return 0;
    if (hostlen == n) return 1;
    if (a[hostlen] != ':') return 0;
    size_t digits = n - hostlen - 1;
    if (digits == 0 || digits > 5) return 0;
    for (size_t i = hostlen + 1; i < n; i++)
        if (a[i] < '0' || a[i] > '9') return 0;
    return 1;
}

kr_verdict kr_check_url(const char *s, size_t len, const char **why, int *escape)
{
    text_scan t;
    scan_text(s, len, NULL, &t);
    if (t.chars == KR_UTF8_INVALID) return KR_BAD_UTF8;
    if (t.chars > KR_URL_MAX) return KR_TOO_LONG;
    if (t.space) return malformed(why, "must not contain whitespace or control characters");
    size_t skip;
    if (len >= 7 && kr_utf8_ieq(s, 7, "http://"))
        skip = 7;
    else if (len >= 8 && kr_utf8_ieq(s, 8, "https://"))
        skip = 8;
    else
        return malformed(why, "must be an http:// or https:// URL");
    size_t end = skip;
    while (end < len && s[end] != '/' && s[end] != '?' && s[end] != '#') end++;
    if (!valid_authority(s + skip, end - skip)) return malformed(why, "must name a host (and a numeric port, if any)");
    if (escape) *escape = t.escape;
    return KR_VALID;
}

/* ---- cursors --------------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

static size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned long v = ((unsigned long)in[i] << 16) | ((unsigned long)in[i + 1] << 8) | in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (n - i == 1) {
        unsigned long v = (unsigned long)in[i] << 16;
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned long v = ((unsigned long)in[i] << 16) | ((unsigned long)in[i + 1] << 8);
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
    }
    return o;
}

/* Returns the decoded length, or (size_t)-1 when the text is not unpadded base64url whose
 * unused trailing bits are zero (so each payload has exactly one spelling). */
static size_t b64_decode(const char *in, size_t n, unsigned char *out)
{
    if (n % 4 == 1) return (size_t)-1;
    size_t o = 0;
    unsigned long v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int d = b64val((unsigned char)in[i]);
        if (d < 0) return (size_t)-1;
        v = ((v << 6) | (unsigned long)d) & 0xFFFFFF;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)((v >> bits) & 0xFF);
        }
    }
    if (bits > 0 && (v & ((1UL << bits) - 1)) != 0) return (size_t)-1;
    return o;
}

int kr_check_uuid(const char *s, size_t len)
{
    if (len != 36) return 0;
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return 1;
}

/* The characters of a timestamptz as PostgreSQL prints it in ISO DateStyle. */
static int timestamp_text(const char *s, size_t len)
{
    if (len < 19 || len >= KR_CURSOR_TS_MAX) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || c == '-' || c == ':' || c == '.' || c == ' ' || c == '+'))
            return 0;
    }
    return 1;
}

size_t kr_cursor_encode(const char *ts, size_t tslen, const char *id, size_t idlen, char *out)
{
    unsigned char raw[2 + KR_CURSOR_TS_MAX + 1 + 36];
    if (!timestamp_text(ts, tslen) || !kr_check_uuid(id, idlen)) return 0;
    raw[0] = '1';
    raw[1] = '|';
    memcpy(raw + 2, ts, tslen);
    raw[2 + tslen] = '|';
    memcpy(raw + 3 + tslen, id, 36);
    return b64_encode(raw, 3 + tslen + 36, out);
}

int kr_cursor_decode(const char *in, size_t len, char *ts, char *id)
{
    unsigned char raw[KR_CURSOR_MAX];
    if (len > KR_CURSOR_MAX) return 0;
    size_t n = b64_decode(in, len, raw);
    if (n == (size_t)-1 || n < 3 + 19 + 36 || raw[0] != '1' || raw[1] != '|' || raw[n - 37] != '|') return 0;
    const char *t = (const char *)raw + 2, *u = (const char *)raw + n - 36;
    size_t tslen = n - 39;
    if (!timestamp_text(t, tslen) || !kr_check_uuid(u, 36)) return 0;
    memcpy(ts, t, tslen);
    ts[tslen] = '\0';
    memcpy(id, u, 36);
    id[36] = '\0';
    return 1;
}
