/* CPU-bound workload for `cargo xtask bench record`.
 *
 *   cpu_burn -n PROCS -i ROUNDS   PROCS processes each run exactly ROUNDS rounds of integer
 *                                 arithmetic, then exit: a fixed amount of work, to time.
 *   cpu_burn -n PROCS -t SECS     PROCS workers for SECS seconds; each keeps forking a child
 *                                 that burns about 20 ms and exits: a busy multi-process load,
 *                                 with many short-lived processes to symbolize.
 *
 * PROCS defaults to the number of online CPUs. The work runs through a few distinct functions
 * so profiles have several stacks. Built with -O2 -g -fno-omit-frame-pointer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 100000ull
#define CHILD_NS (20ull * 1000 * 1000)

static volatile uint64_t sink;

/* A dependency chain the compiler cannot shorten or vectorise. */
__attribute__((noinline, noclone)) static uint64_t mix(uint64_t x, uint64_t rounds) {
    for (uint64_t i = 0; i < rounds; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x * 0x9E3779B97F4A7C15ull + i;
    }
    return x;
}

__attribute__((noinline, noclone)) static uint64_t parse_input(uint64_t x, uint64_t rounds) {
    return mix(x + 1, rounds);
}

__attribute__((noinline, noclone)) static uint64_t hash_table(uint64_t x, uint64_t rounds) {
    uint64_t half = rounds / 2;
    return mix(x ^ 0x5555, half) + mix(x, rounds - half);
}

__attribute__((noinline, noclone)) static uint64_t sort_keys(uint64_t x, uint64_t rounds) {
    return parse_input(x * 3, rounds);
}

typedef uint64_t (*stage_fn)(uint64_t, uint64_t);
static const stage_fn STAGES[] = {parse_input, hash_table, sort_keys, hash_table};
#define NSTAGES (sizeof STAGES / sizeof STAGES[0])

/* Exactly `rounds` rounds of mix, spread over the stages. */
__attribute__((noinline, noclone)) static void burn_rounds(uint64_t seed, uint64_t rounds) {
    uint64_t x = seed;
    for (uint64_t done = 0, k = 0; done < rounds; done += CHUNK, k++) {
        uint64_t n = rounds - done < CHUNK ? rounds - done : CHUNK;
        x = STAGES[k % NSTAGES](x, n);
    }
    sink = x;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline, noclone)) static void burn_for(uint64_t seed, uint64_t ns) {
    uint64_t end = now_ns() + ns, x = seed;
    for (uint64_t k = 0; now_ns() < end; k++)
        x = STAGES[k % NSTAGES](x, CHUNK);
    sink = x;
}

__attribute__((noinline, noclone)) static void churn(unsigned worker, uint64_t until_ns) {
    for (uint64_t n = 0; now_ns() < until_ns; n++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("cpu_burn: fork");
            _exit(1);
        }
        if (pid == 0) {
            burn_for(worker * 1000003ull + n, CHILD_NS);
            _exit(0);
        }
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
}

static void usage(void) {
    fprintf(stderr, "usage: cpu_burn [-n PROCS] (-i ROUNDS | -t SECS)\n");
    exit(2);
}

int main(int argc, char **argv) {
    long procs = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t rounds = 0;
    double secs = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:i:t:")) != -1) {
        switch (opt) {
        case 'n': procs = strtol(optarg, NULL, 10); break;
        case 'i': rounds = strtoull(optarg, NULL, 10); break;
        case 't': secs = strtod(optarg, NULL); break;
        default: usage();
        }
    }
    if (procs < 1 || (rounds == 0) == (secs <= 0))
        usage();

    uint64_t until = now_ns() + (uint64_t)(secs * 1e9);
    for (long w = 0; w < procs; w++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("cpu_burn: fork");
            return 1;
        }
        if (pid == 0) {
            if (rounds)
                burn_rounds((uint64_t)w + 1, rounds);
            else
                churn((unsigned)w, until);
            _exit(0);
        }
    }
    int failed = 0, status;
    for (long w = 0; w < procs; w++) {
        if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    }
    return failed;
}
