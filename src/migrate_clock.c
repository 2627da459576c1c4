/* The run's clock: a step's duration (opts.log, step_done) and the lock wait's deadline, both on
 * the monotonic clock so that a change of the wall clock cannot stretch or cut either. */
#include <errno.h>
#include <time.h>

#include "migrate_run.h"

/* Milliseconds on the monotonic clock, from an arbitrary origin: only differences mean anything. */
double kr_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Sleeps ms milliseconds (nothing for ms <= 0 or NaN), resumed after a signal, so that a signal
 * handler of the host (nginx) cannot turn the lock's backoff into a busy loop. */
void kr_clock_sleep(double ms)
{
    if (!(ms > 0)) return;
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}
