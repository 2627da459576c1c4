/* The text kernels of kronos, free of Lua (the fuzz targets link them): strict UTF-8 decoding and
 * walking, shared by the validators (validate.c) and the DDL builder (ddl_text.c), and the one
 * ASCII case-insensitive comparison. */
#ifndef KRONOS_UTF8_H
#define KRONOS_UTF8_H

#include <stddef.h>

/* Decodes the code point at s (n > 0 bytes available) into *cp; returns its byte length, or 0
 * when malformed: overlong forms, surrogates and code points above U+10FFFF are malformed too,
 * as PostgreSQL's UTF8 encoding holds them. A NUL byte decodes as U+0000 of length 1. */
size_t kr_utf8_next(const unsigned char *s, size_t n, unsigned long *cp);

/* The number of characters in strict UTF-8 text without NUL, or KR_UTF8_INVALID. When mark is
 * not NULL, *marked is set to whether mark(cp) held for some character (e.g. a space). */
#define KR_UTF8_INVALID ((size_t)-1)
size_t kr_utf8_chars(const char *s, size_t len, int (*mark)(unsigned long cp), int *marked);

/* 1 when the len bytes at s equal the lower-case ASCII word `lower`, ASCII letters compared
 * case-insensitively (every other byte exactly). */
int kr_utf8_ieq(const char *s, size_t len, const char *lower);

/* The start of the character that byte i of s is in (i itself when it starts one): where text
 * cut at i keeps only whole characters. */
static inline size_t kr_utf8_boundary(const char *s, size_t i)
{
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* The ASCII lower case of c (other bytes unchanged). */
static inline char kr_utf8_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

#endif
