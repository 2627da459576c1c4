/* fuzz-link: src/copytext.c src/convert.c */
/* libFuzzer target: COPY's text format (src/copytext.c). Properties: any bytes escape to a
 * field without a raw tab or newline that unescapes to the same bytes; any server text splits
 * into fields and unescapes (in place, as copy.c does) without overrunning, never growing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "copytext.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    /* escape -> unescape is the identity */
    char *esc = malloc(2 * size + 1);
    char *back = malloc(2 * size + 1);
    CHECK(esc && back);
    size_t n = kr_copytext_escape(in, size, esc);
    CHECK(n >= size && n <= 2 * size);
    CHECK(memchr(esc, '\t', n) == NULL && memchr(esc, '\n', n) == NULL && memchr(esc, '\r', n) == NULL);
    CHECK(kr_copytext_field(esc, n) == n);
    size_t m = kr_copytext_unescape(esc, n, back);
    if (size == 0) CHECK(m == 0);
    else CHECK(m == size && memcmp(back, in, size) == 0);
    /* arbitrary row text: fields unescaped in place */
    char *row = malloc(size + 1);
    CHECK(row);
    memcpy(row, in, size);
    size_t pos = 0;
    while (pos <= size) {
        size_t flen = kr_copytext_field(row + pos, size - pos);
        CHECK(pos + flen <= size);
        size_t v = kr_copytext_unescape(row + pos, flen, row + pos);
        CHECK(v == KR_COPYTEXT_NULL || v <= flen);
        pos += flen + 1;
    }
    free(row);
    free(esc);
    free(back);
    return 0;
}
