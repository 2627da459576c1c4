/* fuzz-link: src/pgarray.c src/utf8.c */
/* libFuzzer target: the array literal parser (src/pgarray.c). Properties: it never reads or
 * writes out of bounds; opens and closes balance on success and nest at most
 * KR_PGARRAY_MAXDEPTH; every element fits its scratch and is NUL-terminated; and the events of a
 * parsed array, written back as a literal with every element quoted, parse again to the same
 * events (the writer is kr_pgarray_quote, kronos.array's quoting rule). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pgarray.h"

typedef struct {
    char *out;       /* the re-written literal */
    size_t len, cap;
    int depth, maxdepth, first;
    size_t scratch_len;
    unsigned long hash; /* of the event sequence */
} rec;

static void put(rec *r, const char *s, size_t n)
{
    if (r->len + n > r->cap) {
        r->cap = (r->len + n) * 2 + 16;
        r->out = realloc(r->out, r->cap);
        CHECK(r->out != NULL);
    }
    memcpy(r->out + r->len, s, n);
    r->len += n;
}

static void mix(rec *r, unsigned long v) { r->hash = r->hash * 1000003UL ^ v; }

static int on_open(void *ud)
{
    rec *r = ud;
    if (!r->first) put(r, ",", 1);
    put(r, "{", 1);
    r->first = 1;
    r->depth++;
    CHECK(r->depth <= KR_PGARRAY_MAXDEPTH);
    mix(r, 1);
    return 1;
}

static int on_close(void *ud)
{
    rec *r = ud;
    put(r, "}", 1);
    r->first = 0;
    r->depth--;
    CHECK(r->depth >= 0);
    mix(r, 2);
    return 1;
}

static int on_elem(void *ud, const char *s, size_t len)
{
    rec *r = ud;
    if (!r->first) put(r, ",", 1);
    r->first = 0;
    if (s == NULL) {
        put(r, "NULL", 4);
        mix(r, 3);
        return 1;
    }
    CHECK(len <= r->scratch_len && s[len] == '\0');
    for (size_t i = 0; i < len; i++) mix(r, (unsigned char)s[i] + 16);
    char *q = malloc(2 * len + 2);
    CHECK(q != NULL);
    size_t qn = kr_pgarray_quote(s, len, q);
    CHECK(qn >= len + 2 && qn <= 2 * len + 2);
    put(r, q, qn);
    free(q);
    mix(r, 4);
    return 1;
}

static const kr_pgarray_cb cb = {on_open, on_close, on_elem};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = malloc(size ? size : 1);
    char *scratch = malloc(size + 1);
    CHECK(in && scratch);
    memcpy(in, data, size);
    rec a;
    memset(&a, 0, sizeof a);
    a.first = 1;
    a.scratch_len = size;
    if (kr_pgarray_parse(in, size, scratch, &cb, &a)) {
        CHECK(a.depth == 0);
        rec b;
        memset(&b, 0, sizeof b);
        b.first = 1;
        b.scratch_len = a.len;
        char *scratch2 = malloc(a.len + 1);
        CHECK(scratch2);
        CHECK(kr_pgarray_parse(a.out, a.len, scratch2, &cb, &b) == 1);
        CHECK(b.hash == a.hash && b.len == a.len && memcmp(a.out, b.out, a.len) == 0);
        free(scratch2);
        free(b.out);
    }
    free(a.out);
    free(in);
    free(scratch);
    return 0;
}
