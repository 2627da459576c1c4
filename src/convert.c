/* Server text -> exact values (see convert.h). */
#include <fenv.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"

/* Days since 1970-01-01 of a proleptic Gregorian date (civil calendar arithmetic). */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long long z, long long *y, int *m, int *d)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Reads exactly n digits (n > 0), or at least one up to max when n == 0. */
static int digits(const char **p, const char *end, int n, int max, long long *v)
{
    int k = 0;
    *v = 0;
    while (*p < end && **p >= '0' && **p <= '9' && k < (n ? n : max)) {
        *v = *v * 10 + (**p - '0');
        (*p)++;
        k++;
    }
    return n ? k == n : k > 0;
}

static int expect(const char **p, const char *end, char c)
{
    if (*p < end && **p == c) { (*p)++; return 1; }
    return 0;
}

static int is_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int two(const char *s) { return (s[0] - '0') * 10 + (s[1] - '0'); }

/* What a UTC session is sent: "YYYY-MM-DD HH:MM:SS[.f{1,6}]+00", a four-digit year, a real
 * calendar date, no leap second. Its UTC form only moves characters; any other text (another
 * offset, BC, a longer year, out-of-range fields) returns 0 and takes the general path, which
 * gives the same result for every text accepted here. */
static size_t iso_utc(const char *in, size_t len, char *out)
{
    static const unsigned char mdays[13] = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (len < 22 || len == 23 || len > 29 || memcmp(in + len - 3, "+00", 3) != 0) return 0;
    if (in[4] != '-' || in[7] != '-' || in[10] != ' ' || in[13] != ':' || in[16] != ':') return 0;
    if (!is_digits(in, 4) || !is_digits(in + 5, 2) || !is_digits(in + 8, 2) || !is_digits(in + 11, 2) ||
        !is_digits(in + 14, 2) || !is_digits(in + 17, 2))
        return 0;
    if (len > 22 && (in[19] != '.' || !is_digits(in + 20, len - 23))) return 0;
    int mo = two(in + 5), d = two(in + 8);
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo] || two(in + 11) > 23 || two(in + 14) > 59 ||
        two(in + 17) > 59)
        return 0;
    if (mo == 2 && d == 29) {
        int y = two(in) * 100 + two(in + 2);
        if (y % 4 != 0 || (y % 100 == 0 && y % 400 != 0)) return 0;
    }
    memcpy(out, in, len - 3);
    out[10] = 'T';
    out[len - 3] = 'Z';
    return len - 2;
}

static size_t iso_general(const char *in, size_t len, char *out)
{
    const char *p = in, *end = in + len, *frac = NULL;
    long long y, mo, d, h, mi, s, oh, om = 0, os = 0;
    size_t fraclen = 0;
    if (!digits(&p, end, 0, 9, &y) || p - in < 4 || !expect(&p, end, '-') || !digits(&p, end, 2, 0, &mo) ||
        !expect(&p, end, '-') || !digits(&p, end, 2, 0, &d) || !expect(&p, end, ' ') ||
        !digits(&p, end, 2, 0, &h) || !expect(&p, end, ':') || !digits(&p, end, 2, 0, &mi) ||
        !expect(&p, end, ':') || !digits(&p, end, 2, 0, &s))
        return 0;
    if (expect(&p, end, '.')) {
        frac = p;
        while (p < end && *p >= '0' && *p <= '9' && fraclen < 6) p++, fraclen++;
        if (fraclen == 0) return 0;
    }
    int sign = p < end && *p == '-' ? -1 : 1;
    if (!(expect(&p, end, '+') || expect(&p, end, '-')) || !digits(&p, end, 2, 0, &oh)) return 0;
    if (expect(&p, end, ':') && !digits(&p, end, 2, 0, &om)) return 0;
    if (expect(&p, end, ':') && !digits(&p, end, 2, 0, &os)) return 0;
    int bc = 0;
    if (p + 3 == end && memcmp(p, " BC", 3) == 0) bc = 1, p = end;
    if (p != end || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return 0;
    if (bc) y = 1 - y; /* ISO 8601 counts 1 BC as year 0 */
    long long t = days_from_civil(y, (int)mo, (int)d) * 86400 + h * 3600 + mi * 60 + s;
    t -= sign * (oh * 3600 + om * 60 + os);
    long long days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    long long secs = t - days * 86400;
    int m2, d2;
    civil_from_days(days, &y, &m2, &d2);
    char *o = out;
    long long ay = y < 0 ? -y : y;
    if (y < 0) *o++ = '-';
    char yb[20];
    int yn = 0;
    do { yb[yn++] = (char)('0' + ay % 10); ay /= 10; } while (ay > 0);
    while (yn < 4) yb[yn++] = '0';
    while (yn > 0) *o++ = yb[--yn];
    int f[5] = {m2, d2, (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60)};
    const char sep[5] = {'-', '-', 'T', ':', ':'};
    for (int i = 0; i < 5; i++) {
        *o++ = sep[i];
        *o++ = (char)('0' + f[i] / 10);
        *o++ = (char)('0' + f[i] % 10);
    }
    if (frac) {
        *o++ = '.';
        memcpy(o, frac, fraclen);
        o += fraclen;
    }
    *o++ = 'Z';
    return (size_t)(o - out);
}

size_t kr_iso_timestamptz(const char *in, size_t len, char *out)
{
    size_t n = iso_utc(in, len, out);
    return n > 0 ? n : iso_general(in, len, out);
}

int kr_hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int kr_unhex_digits(const char *hex, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = kr_hexval(hex[2 * i]), lo = kr_hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return 0;
        out[i] = (char)(hi << 4 | lo);
    }
    return 1;
}

void kr_hex_digits(const char *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[(unsigned char)in[i] >> 4];
        out[2 * i + 1] = hex[(unsigned char)in[i] & 15];
    }
}

size_t kr_unhex_bytea(const char *in, size_t len, char *out)
{
    if (len < 2 || in[0] != '\\' || in[1] != 'x' || (len - 2) % 2 != 0) return (size_t)-1;
    return kr_unhex_digits(in + 2, (len - 2) / 2, out) ? (len - 2) / 2 : (size_t)-1;
}

int kr_parse_int8(const char *in, size_t len, long long *out)
{
    size_t i = 0;
    int neg = 0;
    unsigned long long v = 0, limit;
    if (len > 0 && (in[0] == '-' || in[0] == '+')) neg = in[0] == '-', i = 1;
    if (i == len) return 0;
    if (len - i <= 18) { /* below 10^18: no overflow to check for */
        for (; i < len; i++) {
            unsigned dgt = (unsigned)(unsigned char)in[i] - '0';
            if (dgt > 9) return 0;
            v = v * 10 + dgt;
        }
        *out = neg ? -(long long)v : (long long)v;
        return 1;
    }
    limit = neg ? 9223372036854775808ULL : 9223372036854775807ULL;
    for (; i < len; i++) {
        if (in[i] < '0' || in[i] > '9') return 0;
        unsigned dgt = (unsigned)(in[i] - '0');
        if (v > (limit - dgt) / 10) return 0;
        v = v * 10 + dgt;
    }
    /* -2^63 has no positive twin: negate in unsigned arithmetic, then convert */
    *out = neg ? (long long)(0 - v) : (long long)v;
    return 1;
}

/* Swaps the first occurrence of from for to in buf (both short: decimal points). */
static void swap_point(char *buf, size_t size, const char *from, const char *to)
{
    char *hit = strstr(buf, from);
    size_t fl = strlen(from), tl = strlen(to), rest;
    if (hit == NULL) return;
    rest = strlen(hit + fl);
    if ((size_t)(hit - buf) + tl + rest + 1 > size) return;
    memmove(hit + tl, hit + fl, rest + 1);
    memcpy(hit, to, tl);
}

size_t kr_format_double(double d, char *out)
{
    if (isnan(d)) return (size_t)snprintf(out, KR_DOUBLE_MAX, "NaN");
    if (isinf(d)) return (size_t)snprintf(out, KR_DOUBLE_MAX, d > 0 ? "Infinity" : "-Infinity");
    if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)
        return (size_t)snprintf(out, KR_DOUBLE_MAX, "%.0f", d);
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, KR_DOUBLE_MAX, "%.*g", prec, d);
        if (strtod(out, NULL) == d) break; /* same locale both ways */
    }
    const char *dp = localeconv()->decimal_point;
    if (strcmp(dp, ".") != 0) swap_point(out, KR_DOUBLE_MAX, dp, ".");
    return strlen(out);
}

/* Clinger's fast path: when the digits make an integer m <= 2^53 and the decimal exponent e is
 * within 22, m and 10^|e| are both exact doubles, so the one IEEE multiplication or division
 * m * 10^e (m / 10^-e) rounds the exact decimal value once, as strtod does (in whatever rounding
 * mode is current, as strtod honours it too). Needs double arithmetic without extra precision
 * (FLT_EVAL_METHOD 0). Returns 0 for any other text: strtod then decides. */
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
static int is_digit(char c) { return c >= '0' && c <= '9'; }

#if defined(__SIZEOF_INT128__)
typedef unsigned __int128 u128;

static int bitlen128(u128 x)
{
    unsigned long long hi = (unsigned long long)(x >> 64), lo = (unsigned long long)x;
    return hi ? 128 - __builtin_clzll(hi) : lo ? 64 - __builtin_clzll(lo) : 0;
}

/* The double nearest x * 2^scale, where x > 0 is an integer and sticky says that the exact value
 * is a little above x (a remainder was dropped): round half to even on 53 bits. 0 when the result
 * would not be a normal double. */
static int round128(u128 x, int sticky, int scale, double *out)
{
    int drop = bitlen128(x) - 53;
    unsigned long long mant;
    if (drop <= 0) {
        if (sticky) return 0; /* not reached: callers keep 55 or more bits when inexact */
        mant = (unsigned long long)x << -drop;
    } else {
        mant = (unsigned long long)(x >> drop);
        u128 rem = x & (((u128)1 << drop) - 1), half = (u128)1 << (drop - 1);
        if (rem > half || (rem == half && (sticky || (mant & 1)))) mant++;
        if (mant == 1ULL << 53) mant >>= 1, drop++;
    }
    int exp = scale + drop + 52 + 1023; /* mant is in [2^52, 2^53) */
    if (exp < 1 || exp > 2046) return 0;
    unsigned long long bits = ((unsigned long long)exp << 52) | (mant & ((1ULL << 52) - 1));
    memcpy(out, &bits, sizeof *out);
    return 1;
}

/* The server prints a float8 with up to 17 significant digits (the shortest text that reads back),
 * past Clinger's 2^53, and strtod's general algorithm costs several times the rest of a row's
 * conversion. With 128-bit integers the exact value of m * 10^e is at hand for m < 2^64 and
 * 0 <= e <= 19 (the product is below 2^128), and m / 10^k for 1 <= k <= 21 as a quotient of at
 * least 57 bits (m shifted to 127 bits over 10^k < 2^70) plus whether a remainder was left: one
 * correct rounding of each gives the nearest double, as strtod does in the default rounding
 * mode. Other modes and exponents go to strtod. */
static int parse_double_wide(unsigned long long m, int e, double *out)
{
    static const unsigned long long pow10u[20] = {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL,
        1000000ULL, 10000000ULL, 100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL,
        1000000000000ULL, 10000000000000ULL, 100000000000000ULL, 1000000000000000ULL,
        10000000000000000ULL, 100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL};
    if (m == 0 || e < -21 || e > 19 || fegetround() != FE_TONEAREST) return 0;
    if (e >= 0) return round128((u128)m * pow10u[e], 0, 0, out);
    u128 d = -e <= 19 ? (u128)pow10u[-e] : (u128)pow10u[19] * pow10u[-e - 19];
    int s = 127 - bitlen128(m);
    u128 n = (u128)m << s;
    return round128(n / d, n % d != 0, -s, out);
}
#else
static int parse_double_wide(unsigned long long m, int e, double *out) { (void)m; (void)e; (void)out; return 0; }
#endif

/* Reads up to 19 significant digits into m (so m < 10^19 < 2^64), then Clinger's path, else the
 * wide one. */
static int parse_double_exact(const char *p, double *out)
{
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    unsigned long long m = 0;
    int neg = *p == '-', digits = 0, e = 0; /* digits: how many went into m, leading zeros too */
    unsigned d;
    p += neg;
    for (; (d = (unsigned)(unsigned char)*p - '0') <= 9; p++, digits++) m = m * 10 + d;
    if (*p == '.')
        for (p++; (d = (unsigned)(unsigned char)*p - '0') <= 9; p++, digits++, e--) m = m * 10 + d;
    /* 19 digits or fewer: m < 10^19 < 2^64, never wrapped */
    if (digits == 0 || digits > 19) return 0;
    if (*p == 'e' || *p == 'E') {
        int eneg = p[1] == '-', x = 0, k = 0;
        p += 1 + (p[1] == '-' || p[1] == '+');
        for (; is_digit(*p) && k < 4; p++, k++) x = x * 10 + (*p - '0');
        if (k == 0) return 0;
        e += eneg ? -x : x;
    }
    if (*p != '\0') return 0;
    double v;
    if (m <= (1ULL << 53) && e >= -22 && e <= 22)
        v = e < 0 ? (double)m / pow10[-e] : (double)m * pow10[e];
    else if (!parse_double_wide(m, e, &v))
        return 0;
    *out = neg ? -v : v;
    return 1;
}
#else
static int parse_double_exact(const char *p, double *out) { (void)p; (void)out; return 0; }
#endif

double kr_parse_double(const char *in)
{
    double fast;
    if (parse_double_exact(in, &fast)) return fast;
    const char *dp = localeconv()->decimal_point;
    if (strcmp(dp, ".") == 0 || strlen(in) >= KR_DOUBLE_MAX) return strtod(in, NULL);
    char buf[KR_DOUBLE_MAX + 8];
    snprintf(buf, sizeof buf, "%s", in);
    swap_point(buf, sizeof buf, ".", dp);
    return strtod(buf, NULL);
}
