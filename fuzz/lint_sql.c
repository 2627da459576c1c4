/* fuzz-link: src/lint_sql.c src/utf8.c */
/* libFuzzer target: the scanner the DDL safety check runs over a column default's SQL text
 * (src/lint_sql.c). The text is the migration author's. Properties: a call it reports lies
 * inside the input, is a non-empty identifier followed by blanks and '(', is not a known
 * stable function. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "lint_sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *expr = malloc(size ? size : 1); /* exactly the input: ASan sees any overread */
    if (!expr) return 0;
    memcpy(expr, data, size);
    size_t start = 0, n = 0;
    if (kr_lint_sql_volatile_call(expr, size, &start, &n)) {
        CHECK(n > 0 && start < size && n <= size - start);
        for (size_t j = 0; j < n; j++)
            CHECK(expr[start + j] != '(' && expr[start + j] != '.' && expr[start + j] != '\'' &&
                  !isspace((unsigned char)expr[start + j]));
        size_t k = start + n;
        while (k < size && isspace((unsigned char)expr[k])) k++;
        CHECK(k < size && expr[k] == '(');
        CHECK(!kr_lint_sql_stable(expr + start, n));
    }
    free(expr);
    return 0;
}
