/* Exactly known syscall patterns for `flamewarden syscalls`:
 *   sys_calls getppid N        N getppid calls
 *   sys_calls openat N         N openat of a missing path (ENOENT)
 *   sys_calls nanosleep N MS   N nanosleep of MS milliseconds
 *   sys_calls spin SECONDS     getppid in a loop for SECONDS (a process to filter in or out)
 * Prints `calls=N` (the calls of the pattern it made) when done. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>

#include "sys_raw.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s getppid|openat|nanosleep|spin N [MS]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]);
    long calls = 0;
    if (strcmp(argv[1], "getppid") == 0) {
        for (long i = 0; i < n; i++, calls++) fw_syscall3(SYS_getppid, 0, 0, 0);
    } else if (strcmp(argv[1], "openat") == 0) {
        for (long i = 0; i < n; i++, calls++)
            if (fw_syscall3(SYS_openat, AT_FDCWD, (long)"/nonexistent/flamewarden", O_RDONLY) >= 0) return 1;
    } else if (strcmp(argv[1], "nanosleep") == 0 && argc == 4) {
        long ms = atol(argv[3]);
        struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
        for (long i = 0; i < n; i++, calls++) fw_syscall3(SYS_nanosleep, (long)&t, 0, 0);
    } else if (strcmp(argv[1], "spin") == 0) {
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        do {
            for (int i = 0; i < 1000; i++, calls++) fw_syscall3(SYS_getppid, 0, 0, 0);
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while (now.tv_sec - start.tv_sec < n);
    } else {
        fprintf(stderr, "unknown pattern %s\n", argv[1]);
        return 2;
    }
    printf("calls=%ld\n", calls);
    return 0;
}
