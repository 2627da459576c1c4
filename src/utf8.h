/* Strict UTF-8 decoding shared by the validators (validate.c) and the DDL builder (ddl_text.c). */
#ifndef KRONOS_UTF8_H
#define KRONOS_UTF8_H

#include <stddef.h>

/* Decodes the code point at s (n > 0 bytes available) into *cp; returns its byte length, or 0
 * when malformed: overlong forms, surrogates and code points above U+10FFFF are malformed too,
 * as PostgreSQL's UTF8 encoding holds them. A NUL byte decodes as U+0000 of length 1. */
size_t kr_utf8_next(const unsigned char *s, size_t n, unsigned long *cp);

#endif
