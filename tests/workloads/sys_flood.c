/* A flood of syscalls from many threads: `sys_flood THREADS CALLS` starts THREADS threads that
 * each make CALLS getppid calls at once, and prints the ground truth `calls=THREADS*CALLS`. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "sys_raw.h"

static long per_thread;
static pthread_barrier_t start;

static void *flood(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    for (long i = 0; i < per_thread; i++) fw_syscall3(SYS_getppid, 0, 0, 0);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int threads = atoi(argv[1]);
    per_thread = atol(argv[2]);
    pthread_t ids[256];
    if (threads < 1 || threads > 256) return 2;
    pthread_barrier_init(&start, NULL, threads);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&ids[i], NULL, flood, NULL) != 0) return 1;
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    printf("calls=%ld\n", (long)threads * per_thread);
    return 0;
}
