/* clone3_ns: raw clone3 with namespace flags (user, mount, pid, net, uts, ipc). The child stays
 * 300 ms (so a watcher outside can see its namespaces) and exits 42 when it is pid 1 of a new pid
 * namespace. */
#include "escape.h"

#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/wait.h>

int main(void) {
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS |
                 CLONE_NEWIPC;
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0) blocked("clone3 with namespace flags", errno);
    if (pid == 0) {
        int code = getpid() == 1 ? 42 : 43;
        usleep(300 * 1000);
        syscall(SYS_exit_group, code);
    }
    int status;
    if (waitpid((pid_t)pid, &status, 0) != pid) setup_failed("waitpid", errno);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 42)
        setup_failed("the child was not pid 1 of a new pid namespace", EINVAL);
    escaped("made a child in new user, mount, pid, net, uts and ipc namespaces");
}
