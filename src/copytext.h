/* COPY's text format (the default of COPY ... FROM STDIN / TO STDOUT), free of Lua so that a fuzz
 * target can call it. A row is its fields joined by tabs and ended by a newline; \N is NULL;
 * backslash escapes the rest. */
#ifndef KRONOS_COPYTEXT_H
#define KRONOS_COPYTEXT_H

#include <stddef.h>

/* Writes the escape of s[0..len) to out (which needs 2 * len bytes); returns the length.
 * Backslash, newline, carriage return and tab are escaped: nothing else is special in a
 * field, so any byte string (but NUL, which text cannot hold) reads back as itself. */
size_t kr_copytext_escape(const char *s, size_t len, char *out);

/* Reads one field of a row as the server writes it: in[0..len) is the raw field (between
 * tabs). Writes its value to out (which needs len bytes) and returns the length, or
 * (size_t)-1 for \N (NULL). Understands every escape COPY reads: \b \f \n \r \t \v, \\, octal
 * \d, \dd, \ddd, hex \xh, \xhh, and \c for any other c (c itself). */
#define KR_COPYTEXT_NULL ((size_t)-1)
size_t kr_copytext_unescape(const char *in, size_t len, char *out);

/* The length of the next field of a row in[0..len): up to the first tab or the end. */
size_t kr_copytext_field(const char *in, size_t len);

#endif
