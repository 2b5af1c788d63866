/* ptrace_attach PID: attaches to another process with PTRACE_ATTACH; on success it holds the
 * attachment for a second (so a watcher can see TracerPid in /proc/PID/status) and detaches. */
#include "escape.h"

#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    long pid = num_arg(argc, argv, 1, 0);
    if (pid <= 1) setup_failed("usage: ptrace_attach PID", EINVAL);
    if (ptrace(PTRACE_ATTACH, (pid_t)pid, NULL, NULL) != 0) blocked("ptrace(PTRACE_ATTACH)", errno);
    int status;
    waitpid((pid_t)pid, &status, __WALL);
    printf("attached to %ld\n", pid);
    fflush(stdout);
    sleep(1);
    ptrace(PTRACE_DETACH, (pid_t)pid, NULL, NULL);
    escaped("traced process %ld", pid);
}
