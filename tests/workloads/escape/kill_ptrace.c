/* kill_ptrace: writes `before` in its working directory, calls ptrace(PTRACE_TRACEME) through
 * syscall(2), then writes `after`. Under a policy whose `ptrace` rule is `kill`, the process
 * must die at the call: `before` exists, `after` never does. */
#include "escape.h"

#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

static void touch(const char *name) {
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) setup_failed(name, errno);
    close(fd);
}

int main(void) {
    touch("before");
    long r = syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0);
    int err = errno;
    touch("after");
    if (r == 0) escaped("ptrace(PTRACE_TRACEME) succeeded");
    blocked("ptrace", err);
}
