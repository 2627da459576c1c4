/* pqbench: the limit of each benchmark case, libpq driven from C with nothing in between.
 *   pqbench URL select1 N     N round trips of "select 1"
 *   pqbench URL create N      N INSERTs of the bench users, one PQexecParams each, autocommit
 *                             (ids as kronos makes them: getrandom(2), 256 at a time)
 *   pqbench URL create_pipeline N   the same INSERTs in libpq's pipeline mode, a Sync after each
 *   pqbench URL copy N        the same N users with one COPY FROM STDIN: their fields are made
 *                             in memory before the clock starts (as create_many's list exists
 *                             before the call); timed are the ids (getrandom(2), 256 at a time,
 *                             formatted by libuuid), the lines in a 64 KB buffer, each full
 *                             buffer sent, and the server's work
 *   pqbench URL read 0 SQL    PQexec of SQL, PQgetvalue over every field of every row
 *   pqbench URL page N        every user, in pages of N with users:list's statements (the
 *                             server's and libpq's part of paging: its floor)
 * Prints one line: elapsed=<seconds> rows=<n> check=<number>, the check being what the Lua
 * workers compute too (the sum of the lengths of the second column, or of the emails written),
 * so the driver can compare the work. */
#define _GNU_SOURCE /* getrandom */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <libpq-fe.h>
#include <uuid/uuid.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(PGconn *pg, const char *what)
{
    fprintf(stderr, "pqbench: %s: %s", what, PQerrorMessage(pg));
    exit(1);
}

static void check(PGconn *pg, PGresult *r, ExecStatusType want, const char *what)
{
    if (PQresultStatus(r) != want) die(pg, what);
}

/* The same rows as bench/common.lua's user(i). */
static void user_fields(long i, char *email, char *first, char *last)
{
    snprintf(email, 64, "user%07ld@bench.example", i);
    snprintf(first, 32, "First%ld", i);
    snprintf(last, 32, "Last%ld", i);
}

static long run_select1(PGconn *pg, long n, long *sum)
{
    for (long i = 0; i < n; i++) {
        PGresult *r = PQexec(pg, "select 1");
        check(pg, r, PGRES_TUPLES_OK, "select 1");
        *sum += atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    return n;
}

/* The input of the copy mode: the users' fields, made before the clock starts. */
typedef struct {
    char *text;             /* every field, one after another */
    size_t *off;            /* per user: email, first, last offsets (3 each) */
    unsigned char *len;     /* their lengths */
} users_input;

static users_input make_users(long n)
{
    users_input in = {malloc((size_t)n * 64), malloc((size_t)n * 3 * sizeof(size_t)), malloc((size_t)n * 3)};
    if (!in.text || !in.off || !in.len) {
        fprintf(stderr, "pqbench: out of memory\n");
        exit(1);
    }
    size_t pos = 0;
    for (long i = 0; i < n; i++) {
        char f[3][64];
        user_fields(i + 1, f[0], f[1], f[2]);
        for (int k = 0; k < 3; k++) {
            size_t l = strlen(f[k]);
            memcpy(in.text + pos, f[k], l);
            in.off[3 * i + k] = pos;
            in.len[3 * i + k] = (unsigned char)l;
            pos += l;
        }
    }
    return in;
}

/* Version 4 ids as kronos makes them (users:create, create_many): 256 from each getrandom(2) call. */
static void next_id(unsigned char (*pool)[16], int *next, char *out)
{
    if (*next == 256) {
        size_t got = 0;
        while (got < 256 * 16) {
            ssize_t k = getrandom(&pool[0][0] + got, 256 * 16 - got, 0);
            if (k < 0 && errno != EINTR) {
                perror("pqbench: getrandom");
                exit(1);
            }
            if (k > 0) got += (size_t)k;
        }
        for (int i = 0; i < 256; i++) {
            pool[i][6] = (unsigned char)((pool[i][6] & 0x0f) | 0x40);
            pool[i][8] = (unsigned char)((pool[i][8] & 0x3f) | 0x80);
        }
        *next = 0;
    }
    uuid_unparse_lower(pool[(*next)++], out);
}

static long run_create(PGconn *pg, long n, long *sum)
{
    const char *sql = "INSERT INTO users (id, email, first_name, last_name) VALUES ($1, $2, $3, $4)";
    static unsigned char pool[256][16];
    int next = 256;
    for (long i = 1; i <= n; i++) {
        char id[37], email[64], first[32], last[32];
        next_id(pool, &next, id);
        user_fields(i, email, first, last);
        const char *values[4] = {id, email, first, last};
        PGresult *r = PQexecParams(pg, sql, 4, NULL, values, NULL, NULL, 0);
        check(pg, r, PGRES_COMMAND_OK, "insert");
        PQclear(r);
        *sum += (long)strlen(email);
    }
    return n;
}

/* One result of the pipeline: 1 for a Sync, 0 for an INSERT's; anything else fails the run. */
static int pipeline_result(PGconn *pg, PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st != PGRES_PIPELINE_SYNC && st != PGRES_COMMAND_OK) die(pg, "a pipelined insert");
    return st == PGRES_PIPELINE_SYNC;
}

/* The create mode's statements through libpq's pipeline mode, a Sync after each (each its own
 * transaction, as conn:pipeline's default), results read as they come: the floor of a pipeline
 * of user INSERTs, which the server's work per INSERT bounds when round trips are cheap. */
static long run_create_pipeline(PGconn *pg, long n, long *sum)
{
    const char *sql = "INSERT INTO users (id, email, first_name, last_name) VALUES ($1, $2, $3, $4)";
    static unsigned char pool[256][16];
    int next = 256;
    long syncs = 0;
    if (!PQenterPipelineMode(pg) || PQsetnonblocking(pg, 1) != 0) die(pg, "pipeline mode");
    for (long i = 1; i <= n; i++) {
        char id[37], email[64], first[32], last[32];
        next_id(pool, &next, id);
        user_fields(i, email, first, last);
        const char *values[4] = {id, email, first, last};
        if (!PQsendQueryParams(pg, sql, 4, NULL, values, NULL, NULL, 0) || !PQpipelineSync(pg)) die(pg, "send");
        *sum += (long)strlen(email);
        if (PQflush(pg) < 0 || !PQconsumeInput(pg)) die(pg, "pipeline io");
        while (!PQisBusy(pg)) {
            PGresult *r = PQgetResult(pg);
            if (r == NULL) break;
            syncs += pipeline_result(pg, r);
        }
    }
    PQsetnonblocking(pg, 0);
    if (PQflush(pg) != 0) die(pg, "flush");
    while (syncs < n) {
        PGresult *r = PQgetResult(pg);
        if (r != NULL) syncs += pipeline_result(pg, r);
    }
    if (!PQexitPipelineMode(pg)) die(pg, "exit pipeline mode");
    return n;
}

/* The timed part of the copy mode. noinline: bench.lua counts its instructions by name
 * (callgrind --toggle-collect=run_copy*: the compiler may suffix the name). */
__attribute__((noinline)) static long run_copy(PGconn *pg, const users_input *in, long n, long *sum)
{
    PGresult *r = PQexec(pg, "COPY users (id, email, first_name, last_name) FROM STDIN");
    check(pg, r, PGRES_COPY_IN, "copy");
    PQclear(r);
    static unsigned char pool[256][16];
    int next = 256;
    static char buf[65536 + 512];
    size_t len = 0;
    for (long i = 0; i < n; i++) {
        char id[37];
        next_id(pool, &next, id);
        memcpy(buf + len, id, 36);
        len += 36;
        for (int k = 0; k < 3; k++) {
            buf[len++] = '\t';
            memcpy(buf + len, in->text + in->off[3 * i + k], in->len[3 * i + k]);
            len += in->len[3 * i + k];
        }
        buf[len++] = '\n';
        *sum += in->len[3 * i];
        if (len >= 65536) {
            if (PQputCopyData(pg, buf, (int)len) != 1) die(pg, "copy data");
            len = 0;
        }
    }
    if (len > 0 && PQputCopyData(pg, buf, (int)len) != 1) die(pg, "copy data");
    if (PQputCopyEnd(pg, NULL) != 1) die(pg, "copy end");
    r = PQgetResult(pg);
    check(pg, r, PGRES_COMMAND_OK, "copy result");
    PQclear(r);
    while ((r = PQgetResult(pg)) != NULL) PQclear(r);
    return n;
}

/* Every field of every row is read; the check sums the lengths of column `col`. */
static long read_all(PGconn *pg, const char *sql, int col, long *sum)
{
    PGresult *r = PQexec(pg, sql);
    check(pg, r, PGRES_TUPLES_OK, "select");
    long rows = PQntuples(r);
    int cols = PQnfields(r);
    size_t touched = 0;
    for (long i = 0; i < rows; i++) {
        for (int j = 0; j < cols; j++) {
            if (PQgetisnull(r, (int)i, j)) continue;
            const char *v = PQgetvalue(r, (int)i, j);
            touched += (size_t)(unsigned char)v[0];
        }
        *sum += PQgetlength(r, (int)i, col);
    }
    PQclear(r);
    if (touched == 0 && rows > 0) fprintf(stderr, "pqbench: no data\n");
    return rows;
}

/* src/users_list.c's two statements: the smallest created_at, then each page (the rows of
 * created_at $3 after id $4, then later ones), unnamed as there, so each page is planned with its
 * values. Every field of every row is read, as read_all does; the next page starts after the
 * last row, as the cursor does (the created_at and id texts the server printed). */
#define PAGE_COLS "id, email, first_name, last_name, is_active, profile_image_url, last_login, created_at, updated_at"
static long run_pages(PGconn *pg, long n, long *sum)
{
    const char *first = "SELECT min(created_at) FROM users WHERE ($1::boolean IS NULL OR is_active = $1)";
    const char *page = "SELECT " PAGE_COLS " FROM ("
        "(SELECT " PAGE_COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"
        " AND created_at = $3::timestamptz AND ($4::uuid IS NULL OR id > $4::uuid) ORDER BY id LIMIT $2)"
        " UNION ALL "
        "(SELECT " PAGE_COLS " FROM users WHERE ($1::boolean IS NULL OR is_active = $1)"
        " AND created_at > $3::timestamptz ORDER BY created_at, id LIMIT $2)"
        ") page ORDER BY created_at, id LIMIT $2";
    char limit[24], ts[64], id[40];
    snprintf(limit, sizeof limit, "%ld", n + 1);
    const char *values[4] = {NULL, limit, ts, NULL};
    PGresult *r = PQexecParams(pg, first, 1, NULL, values, NULL, NULL, 0);
    check(pg, r, PGRES_TUPLES_OK, "first");
    long rows = 0;
    int more = !PQgetisnull(r, 0, 0);
    snprintf(ts, sizeof ts, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    while (more) {
        r = PQexecParams(pg, page, 4, NULL, values, NULL, NULL, 0);
        check(pg, r, PGRES_TUPLES_OK, "page");
        int got = PQntuples(r), cols = PQnfields(r);
        more = got > n;
        if (more) got = (int)n;
        size_t touched = 0;
        for (int i = 0; i < got; i++) {
            for (int j = 0; j < cols; j++)
                if (!PQgetisnull(r, i, j)) touched += (size_t)(unsigned char)PQgetvalue(r, i, j)[0];
            *sum += PQgetlength(r, i, 1);
        }
        if (touched == 0 && got > 0) fprintf(stderr, "pqbench: no data\n");
        if (more) {
            snprintf(ts, sizeof ts, "%s", PQgetvalue(r, got - 1, 7));
            snprintf(id, sizeof id, "%s", PQgetvalue(r, got - 1, 0));
            values[3] = id;
        }
        rows += got;
        PQclear(r);
    }
    return rows;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: pqbench URL select1|create|create_pipeline|copy|page N | read 0 SQL\n");
        return 2;
    }
    const char *mode = argv[2];
    long n = argc > 3 ? atol(argv[3]) : 0;
    PGconn *pg = PQconnectdb(argv[1]);
    if (PQstatus(pg) != CONNECTION_OK) die(pg, "connect");
    long sum = 0, rows;
    users_input in = {NULL, NULL, NULL};
    if (strcmp(mode, "copy") == 0) in = make_users(n); /* before the clock: the caller's input */
    double t0 = now();
    if (strcmp(mode, "select1") == 0)
        rows = run_select1(pg, n, &sum);
    else if (strcmp(mode, "create") == 0)
        rows = run_create(pg, n, &sum);
    else if (strcmp(mode, "create_pipeline") == 0)
        rows = run_create_pipeline(pg, n, &sum);
    else if (strcmp(mode, "copy") == 0)
        rows = run_copy(pg, &in, n, &sum);
    else if (strcmp(mode, "page") == 0 && n > 0)
        rows = run_pages(pg, n, &sum);
    else if (strcmp(mode, "read") == 0 && argc > 4)
        rows = read_all(pg, argv[4], 1, &sum);
    else {
        fprintf(stderr, "pqbench: unknown mode %s\n", mode);
        return 2;
    }
    double t1 = now();
    printf("elapsed=%.6f rows=%ld check=%ld\n", t1 - t0, rows, sum);
    PQfinish(pg);
    free(in.text);
    free(in.off);
    free(in.len);
    return 0;
}
