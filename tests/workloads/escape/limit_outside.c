/* limit_outside PID: sets the open-file limit of a process outside the sandbox to 3 (soft and
 * hard), which breaks any server it hits at its next accept or open. */
#include "escape.h"

#include <sys/resource.h>

int main(int argc, char **argv) {
    long pid = num_arg(argc, argv, 1, 0);
    if (pid <= 1) setup_failed("usage: limit_outside PID", EINVAL);
    struct rlimit limit = {3, 3};
    if (prlimit((pid_t)pid, RLIMIT_NOFILE, &limit, NULL) != 0)
        blocked("prlimit(PID, RLIMIT_NOFILE, 3)", errno);
    escaped("set the open-file limit of %ld to 3", pid);
}
