/* Pure text conversions of server output, free of Lua so that fuzz targets can call them. */
#ifndef KRONOS_CONVERT_H
#define KRONOS_CONVERT_H

#include <stddef.h>

/* timestamptz text (DateStyle ISO, any offset) -> "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" in UTC.
 * Returns the length written to out (out needs KR_ISO_MAX bytes), or 0 when the text is not
 * in that form (infinity, other DateStyles): the caller then keeps the server's text. */
#define KR_ISO_MAX 48
size_t kr_iso_timestamptz(const char *in, size_t len, char *out);

/* One hex digit's value (either case), -1 for any other byte: the one reading of hex digits
 * (bytea's hex form here, COPY's \xhh escapes in copytext.c). */
int kr_hexval(char c);

/* bytea hex text "\x0a1b..." -> bytes; out needs (len - 2) / 2 bytes. Returns the byte count,
 * or (size_t)-1 when the text is not valid hex output. */
size_t kr_unhex_bytea(const char *in, size_t len, char *out);
/* 2n hex digits -> n bytes; 0 when a digit is not hex. */
int kr_unhex_digits(const char *hex, size_t n, char *out);
/* n bytes -> 2n lower-case hex digits (bytea's hex input form after its "\\x"), not terminated. */
void kr_hex_digits(const char *in, size_t n, char *out);

/* Decimal integer text -> value. Returns 1 when the whole text is an integer in range. */
int kr_parse_int8(const char *in, size_t len, long long *out);

/* double -> the shortest text that reads back as the same double, always with '.' whatever the
 * C locale says; NaN, Infinity and -Infinity as PostgreSQL spells them. Integral values below
 * 2^63 in magnitude ([-2^63, 2^63): both ends of int8) print as integers, so that they also read as int8 (LuaJIT has no 64-bit integers).
 * out needs KR_DOUBLE_MAX bytes; returns the length. */
#define KR_DOUBLE_MAX 48
size_t kr_format_double(double d, char *out);

/* PostgreSQL float text (NUL-terminated, '.' as decimal point, NaN, Infinity) -> double,
 * whatever the C locale says. */
double kr_parse_double(const char *in);

#endif
