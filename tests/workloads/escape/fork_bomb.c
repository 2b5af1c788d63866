/* fork_bomb: forks as fast as it can, at most 2000 times in all and for at most 5 seconds; each
 * child sleeps 100 ms and exits (children do not fork). When fork fails it waits a millisecond
 * and tries again. Exits 0 ("escaped") only if all 2000 forks succeeded. */
#include "escape.h"

#include <sys/wait.h>
#include <time.h>

#define MAX_FORKS 2000

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void) {
    double deadline = now() + 5.0;
    int forks = 0, failures = 0, last_errno = 0;
    while (forks < MAX_FORKS && now() < deadline) {
        pid_t pid = fork();
        if (pid == 0) {
            struct timespec nap = {0, 100 * 1000 * 1000};
            nanosleep(&nap, NULL);
            _exit(0);
        }
        if (pid < 0) {
            failures++;
            last_errno = errno;
            struct timespec nap = {0, 1000 * 1000};
            nanosleep(&nap, NULL);
        } else {
            forks++;
        }
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
    }
    while (wait(NULL) > 0) {
    }
    printf("%d forks, %d failed\n", forks, failures);
    if (forks < MAX_FORKS) blocked("fork", last_errno ? last_errno : ETIMEDOUT);
    escaped("forked %d times", forks);
}
