/* `pipe_pingpong N`: two processes pinned to CPU 0 pass a byte back and forth N times over two
 * pipes; each round trip is two context switches. Timed from inside the parent; prints
 * `round_trips=N ns_per_switch=X`. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) return 1;
    int ping[2], pong[2];
    if (pipe(ping) != 0 || pipe(pong) != 0) return 1;
    char c = 0;
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        for (long i = 0; i < n; i++)
            if (read(ping[0], &c, 1) != 1 || write(pong[1], &c, 1) != 1) _exit(1);
        _exit(0);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1) return 1;
    clock_gettime(CLOCK_MONOTONIC, &b);
    int status;
    waitpid(child, &status, 0);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("round_trips=%ld ns_per_switch=%.2f\n", n, ns / (2.0 * n));
    return 0;
}
