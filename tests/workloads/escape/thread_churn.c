/* thread_churn [THREADS]: a benign solution that starts THREADS (default 400) short-lived
 * threads, eight at a time, each summing a slice of a range, and prints the total — hundreds of
 * threads a second, never more than nine tasks at once. A thread pool is not a fork bomb: under
 * judge.toml (64 tasks, 50 forks per second) it must end `ok`. Exits 0 with the sum; 2 when a
 * thread cannot be started. */
#include "escape.h"

#include <pthread.h>
#include <stdint.h>

#define BATCH 8
#define SLICE 20000

struct slice {
    uint64_t first, sum;
};

static void *sum_slice(void *arg) {
    struct slice *s = arg;
    s->sum = 0;
    for (uint64_t i = s->first; i < s->first + SLICE; i++) s->sum += i * i % 1000003;
    return NULL;
}

int main(int argc, char **argv) {
    long threads = num_arg(argc, argv, 1, 400);
    uint64_t total = 0;
    for (long started = 0; started < threads; started += BATCH) {
        pthread_t ids[BATCH];
        struct slice slices[BATCH];
        int n = threads - started < BATCH ? (int)(threads - started) : BATCH;
        for (int i = 0; i < n; i++) {
            slices[i].first = (uint64_t)(started + i) * SLICE;
            int err = pthread_create(&ids[i], NULL, sum_slice, &slices[i]);
            if (err != 0) setup_failed("pthread_create", err);
        }
        for (int i = 0; i < n; i++) {
            pthread_join(ids[i], NULL);
            total += slices[i].sum;
        }
    }
    printf("threads %ld total %llu\n", threads, (unsigned long long)total);
    return 0;
}
