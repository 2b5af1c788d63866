/* threads: four threads, each spinning in its own function under its own name.
 *
 *     thread name   function
 *     fw-alpha      thread_alpha_spin
 *     fw-beta       thread_beta_spin
 *     fw-gamma      thread_gamma_spin
 *     fw-delta      thread_delta_spin
 *
 * Every thread does the same fixed amount of work, so each gets about a quarter of the
 * process's CPU time whatever the number of cores. The main thread only waits.
 *
 * Usage: threads [UNITS]   (default 40000 units of 10000 iterations per thread) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "busy_loop.h"

#define UNIT 10000UL

static unsigned long units = 40000;
static pthread_barrier_t start_together;

#define THREAD_FUNCTION(fn_name, thread_name)                                  \
    FW_MEASURED void *fn_name(void *arg) {                                      \
        (void)arg;                                                              \
        pthread_setname_np(pthread_self(), thread_name);                        \
        pthread_barrier_wait(&start_together);                                  \
        for (unsigned long u = 0; u < units; u++) {                             \
            BUSY_LOOP(UNIT);                                                    \
        }                                                                       \
        return NULL;                                                            \
    }

THREAD_FUNCTION(thread_alpha_spin, "fw-alpha")
THREAD_FUNCTION(thread_beta_spin, "fw-beta")
THREAD_FUNCTION(thread_gamma_spin, "fw-gamma")
THREAD_FUNCTION(thread_delta_spin, "fw-delta")

int main(int argc, char **argv) {
    if (argc > 1) {
        units = strtoul(argv[1], NULL, 10);
    }
    void *(*functions[])(void *) = {thread_alpha_spin, thread_beta_spin, thread_gamma_spin,
                                    thread_delta_spin};
    pthread_t threads[4];
    pthread_barrier_init(&start_together, NULL, 4);
    for (int i = 0; i < 4; i++) {
        if (pthread_create(&threads[i], NULL, functions[i], NULL) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
    }
    printf("cpu_seconds=%.6f\n", fw_clock_seconds(CLOCK_PROCESS_CPUTIME_ID));
    return 0;
}
