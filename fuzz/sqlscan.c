/* fuzz-link: src/sqlscan.c src/utf8.c */
/* libFuzzer target: the SQL scans of src/sqlscan.c over a migration author's text (op.execute).
 * Properties: no crash or overrun (the input is copied to an exact NUL-terminated buffer);
 * txcontrol answers NULL or one of its command names; the terminator is ";" exactly when the
 * text is batchable, else "\n;"; a batchable text followed by ";" and a COMMIT is seen to end the
 * transaction, and prefixing a statement with "SELECT 1;" changes no answer about it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sqlscan.h"

static int known(const char *w)
{
    static const char *const names[] = {"BEGIN", "START TRANSACTION", "COMMIT", "END", "ROLLBACK", "ABORT",
                                        "PREPARE TRANSACTION", NULL};
    for (int i = 0; names[i]; i++)
        if (w == names[i] || strcmp(w, names[i]) == 0) return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (s == NULL) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int batchable = kr_sqlscan_batchable(s);
    const char *tx = kr_sqlscan_txcontrol(s);
    const char *term = kr_sqlscan_terminator(s);
    CHECK(tx == NULL || known(tx));
    CHECK(strcmp(term, batchable ? ";" : "\n;") == 0);
    size_t len = strlen(s);
    char *t = malloc(len + 32);
    if (t) {
        if (batchable) {
            /* the text ends outside any quote or comment: a COMMIT after it is a statement */
            memcpy(t, s, len);
            memcpy(t + len, ";\nCOMMIT", 9);
            CHECK(kr_sqlscan_txcontrol(t) != NULL);
        }
        memcpy(t, "SELECT 1;", 9);
        memcpy(t + 9, s, len + 1);
        const char *tx2 = kr_sqlscan_txcontrol(t);
        CHECK((tx == NULL) == (tx2 == NULL));
        free(t);
    }
    free(s);
    return 0;
}
