/* Pure validation of user-model values, free of Lua so that fuzz targets can call it.
 * Lengths count characters the way PostgreSQL does for UTF-8 text (code points). */
#ifndef KRONOS_VALIDATE_H
#define KRONOS_VALIDATE_H

#include <stddef.h>

#define KR_EMAIL_MIN 5
#define KR_EMAIL_MAX 255
#define KR_NAME_MAX 100
#define KR_URL_MAX 2048
/* A number macro as a string literal, for messages (KR_TEXT(KR_EMAIL_MIN) is "5"). */
#define KR_TEXT_(x) #x
#define KR_TEXT(x) KR_TEXT_(x)

typedef enum kr_verdict {
    KR_VALID = 0,
    KR_BAD_UTF8,   /* not valid UTF-8 (or a NUL byte, which PostgreSQL text cannot hold) */
    KR_TOO_LONG,   /* more characters than the column holds */
    KR_MALFORMED,  /* well-formed text that is not an acceptable email / URL */
} kr_verdict;

/* Characters are counted in one walk per value that decodes with utf8.h's kr_utf8_next (the one
 * UTF-8 decoder), ASCII handled inline. When escape is not NULL, a valid value also reports
 * whether it holds a byte COPY's text format escapes (backslash, tab, newline, carriage return:
 * copytext.h's kr_copytext_escape), so a writer copies the other values as they are. */

/* Valid UTF-8 of at most max characters. */
kr_verdict kr_check_text(const char *s, size_t len, size_t max, int *escape);

/* Trims ASCII whitespace and lower-cases ASCII letters into out (at least len bytes), sets
 * *outlen, then checks the result: 5..255 characters, exactly one '@' with a non-empty local
 * part and domain, no whitespace or control characters (Unicode spaces included).
 * *why (when not NULL) gets a short reason for a KR_MALFORMED verdict. */
kr_verdict kr_normalize_email(const char *in, size_t len, char *out, size_t *outlen, const char **why, int *escape);

/* An absolute http or https URL of at most 2048 characters with a non-empty host and no
 * whitespace or control characters. */
kr_verdict kr_check_url(const char *s, size_t len, const char **why, int *escape);

/* 1 when s is a UUID in the canonical 8-4-4-4-12 hex form, either case: what kronos stores and
 * PostgreSQL prints. The one UUID check (kronos.is_uuid, the user model's ids, list cursors). */
int kr_check_uuid(const char *s, size_t len);

/* List cursors: base64url (no padding) of "1|<created_at as the server printed it>|<uuid>".
 * kr_cursor_encode writes at most KR_CURSOR_MAX bytes and returns the length (0 when the
 * timestamp text is too long). kr_cursor_decode checks the form and copies the timestamp
 * (NUL-terminated, at most KR_CURSOR_TS_MAX bytes) and the 36-character id (NUL-terminated);
 * it returns 1 when the cursor is well formed. */
#define KR_CURSOR_TS_MAX 48
#define KR_CURSOR_MAX 128
size_t kr_cursor_encode(const char *ts, size_t tslen, const char *id, size_t idlen, char *out);
int kr_cursor_decode(const char *in, size_t len, char *ts, char *id);

#endif
