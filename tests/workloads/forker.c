/* forker: 20 short-lived children, one after another, like a judge running test cases.
 *
 * Each child burns about 50 ms of CPU in child_busy_work and exits; the parent waits for it
 * before forking the next one. A profile of the whole run must still name child_busy_work
 * although every process that ran it is gone by the time the profiler symbolizes.
 *
 * Usage: forker [CHILDREN] [MILLISECONDS]   (default 20 children, 50 ms each; at most 64) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "busy_loop.h"

FW_MEASURED void child_busy_work(double seconds) {
    /* clock_gettime(CLOCK_PROCESS_CPUTIME_ID) is a real system call: look at it rarely. */
    while (fw_clock_seconds(CLOCK_PROCESS_CPUTIME_ID) < seconds) {
        BUSY_LOOP(200000);
    }
}

int main(int argc, char **argv) {
    int children = argc > 1 ? atoi(argv[1]) : 20;
    double seconds = (argc > 2 ? atof(argv[2]) : 50.0) / 1000.0;
    if (children < 0 || children > 64) {
        fprintf(stderr, "forker: at most 64 children\n");
        return 2;
    }
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0) {
            child_busy_work(seconds);
            _exit(0);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "forker: child %d failed\n", i);
            return 1;
        }
    }
    printf("children=%d\n", children);
    return 0;
}
