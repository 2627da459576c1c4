/* PostgreSQL's array text output ("{1,2,NULL}", "{{a,\"b c\"},{d,e}}", "[0:1]={7,8}") and the
 * quoting of an element kronos writes, free of Lua so that a fuzz target can call them. */
#ifndef KRONOS_PGARRAY_H
#define KRONOS_PGARRAY_H

#include <stddef.h>

#define KR_PGARRAY_MAXDEPTH 32

/* Events in document order: open before a (sub-)array's elements, close after them, elem for
 * each element (s NUL-terminated in the caller's scratch, valid until the next event; s is NULL
 * for NULL). A callback returning 0 stops the parse. */
typedef struct {
    int (*open)(void *ud);
    int (*close)(void *ud);
    int (*elem)(void *ud, const char *s, size_t len);
} kr_pgarray_cb;

/* Parses in[0..len) with delimiter ','. scratch needs len + 1 bytes. Returns 1 when the whole
 * text is one well-formed array (an optional "[l:u]...=" dimension prefix, nesting at most
 * KR_PGARRAY_MAXDEPTH), 0 otherwise (events may have been delivered before the error). */
int kr_pgarray_parse(const char *in, size_t len, char *scratch, const kr_pgarray_cb *cb, void *ud);

/* The writer's rule (kronos.array): s[0..len) as a double-quoted element, '"' and '\\' escaped
 * with a backslash, so that no element reads back as NULL, a delimiter or a sub-array. out needs
 * 2 * len + 2 bytes; returns the length written. */
size_t kr_pgarray_quote(const char *s, size_t len, char *out);

#endif
