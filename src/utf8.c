/* The text kernels (see utf8.h). */
#include "utf8.h"

size_t kr_utf8_next(const unsigned char *s, size_t n, unsigned long *cp)
{
    unsigned char c = s[0];
    size_t need;
    unsigned long v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) { need = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { need = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < need) return 0;
    for (size_t k = 1; k < need; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return need;
}

size_t kr_utf8_chars(const char *s, size_t len, int (*mark)(unsigned long cp), int *marked)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t count = 0, i = 0;
    unsigned long cp;
    if (marked) *marked = 0;
    while (i < len) {
        size_t n = kr_utf8_next(u + i, len - i, &cp);
        if (n == 0 || cp == 0) return KR_UTF8_INVALID; /* NUL: never text */
        if (mark && mark(cp)) *marked = 1;
        i += n;
        count++;
    }
    return count;
}

int kr_utf8_ieq(const char *s, size_t len, const char *lower)
{
    size_t i = 0;
    for (; i < len && lower[i] != '\0'; i++)
        if (kr_utf8_lower(s[i]) != lower[i]) return 0;
    return i == len && lower[i] == '\0';
}
