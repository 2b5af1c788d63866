/* renice_outside PID: lowers the priority (nice 19) of a process outside the sandbox, which a
 * sandbox running as root may do to every root process of the host. */
#include "escape.h"

#include <sys/resource.h>

int main(int argc, char **argv) {
    long pid = num_arg(argc, argv, 1, 0);
    if (pid <= 1) setup_failed("usage: renice_outside PID", EINVAL);
    if (setpriority(PRIO_PROCESS, (id_t)pid, 19) != 0) blocked("setpriority(PRIO_PROCESS, PID, 19)", errno);
    escaped("set the nice value of %ld to 19", pid);
}
