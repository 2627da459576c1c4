/* make bench, case "pipeline": N single-row INSERTs from C over libpq, one round trip each
 * (PQexecParams in a loop) against libpq's pipeline mode with a Sync after every statement
 * (each its own transaction, as kronos's conn:pipeline does by default) or after every K.
 *   pipebench URL loop N | pipeline N K
 * Prints elapsed=<seconds> rows=<rows inserted> check=<sum of ids>. The table is
 * bench_pipe (id int, v text), created (and emptied) here. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(PGconn *pg, const char *what)
{
    fprintf(stderr, "pipebench: %s: %s", what, PQerrorMessage(pg));
    exit(1);
}

static void exec_ok(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) die(pg, sql);
    PQclear(r);
}

static const char *INSERT = "INSERT INTO bench_pipe (id, v) VALUES ($1, $2)";

static void params(long i, char *id, size_t idsize, char *v, size_t vsize, const char *vals[2])
{
    snprintf(id, idsize, "%ld", i);
    snprintf(v, vsize, "value %ld", i);
    vals[0] = id;
    vals[1] = v;
}

static void run_loop(PGconn *pg, long n)
{
    char id[24], v[40];
    const char *vals[2];
    for (long i = 1; i <= n; i++) {
        params(i, id, sizeof id, v, sizeof v, vals);
        PGresult *r = PQexecParams(pg, INSERT, 2, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) die(pg, "insert");
        PQclear(r);
    }
}

/* Reads whatever results are ready; returns how many Syncs came back. */
static long collect(PGconn *pg, int blocking, long *failed)
{
    long syncs = 0;
    for (;;) {
        if (!blocking && PQisBusy(pg)) return syncs;
        PGresult *r = PQgetResult(pg);
        if (r == NULL) {
            if (!blocking) return syncs;
            return syncs; /* a statement's end: the caller loops */
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) syncs++;
        else if (st != PGRES_COMMAND_OK) (*failed)++;
        PQclear(r);
    }
}

static void run_pipeline(PGconn *pg, long n, long every)
{
    char id[24], v[40];
    const char *vals[2];
    long sent_syncs = 0, seen = 0, failed = 0;
    if (!PQenterPipelineMode(pg)) die(pg, "enter pipeline");
    PQsetnonblocking(pg, 1);
    for (long i = 1; i <= n; i++) {
        params(i, id, sizeof id, v, sizeof v, vals);
        if (!PQsendQueryParams(pg, INSERT, 2, NULL, vals, NULL, NULL, 0)) die(pg, "send");
        if (i % every == 0 || i == n) {
            if (!PQpipelineSync(pg)) die(pg, "sync");
            sent_syncs++;
        }
        if (PQflush(pg) < 0) die(pg, "flush");
        if (!PQconsumeInput(pg)) die(pg, "read");
        seen += collect(pg, 0, &failed);
    }
    while (PQflush(pg) == 1) {
        struct pollfd pfd = {PQsocket(pg), POLLIN | POLLOUT, 0};
        poll(&pfd, 1, -1);
        if (!PQconsumeInput(pg)) die(pg, "read");
        seen += collect(pg, 0, &failed);
    }
    PQsetnonblocking(pg, 0);
    while (seen < sent_syncs) seen += collect(pg, 1, &failed);
    if (failed) die(pg, "a pipelined insert failed");
    if (!PQexitPipelineMode(pg)) die(pg, "exit pipeline");
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: pipebench URL loop N | pipeline N K\n");
        return 2;
    }
    PGconn *pg = PQconnectdb(argv[1]);
    if (PQstatus(pg) != CONNECTION_OK) die(pg, "connect");
    long n = atol(argv[3]);
    exec_ok(pg, "CREATE TABLE IF NOT EXISTS bench_pipe (id int, v text)");
    exec_ok(pg, "TRUNCATE bench_pipe");
    double t0 = now();
    if (strcmp(argv[2], "loop") == 0)
        run_loop(pg, n);
    else if (strcmp(argv[2], "pipeline") == 0 && argc > 4)
        run_pipeline(pg, n, atol(argv[4]) > 0 ? atol(argv[4]) : 1);
    else {
        fprintf(stderr, "pipebench: unknown mode %s\n", argv[2]);
        return 2;
    }
    double t1 = now();
    PGresult *r = PQexec(pg, "SELECT count(*), coalesce(sum(id), 0) FROM bench_pipe");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) die(pg, "count");
    printf("elapsed=%.6f rows=%s check=%s\n", t1 - t0, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    PQclear(r);
    PQfinish(pg);
    return 0;
}
