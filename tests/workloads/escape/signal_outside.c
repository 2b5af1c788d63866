/* signal_outside PID: sends SIGTERM to a process outside the sandbox. */
#include "escape.h"

#include <signal.h>

int main(int argc, char **argv) {
    long pid = num_arg(argc, argv, 1, 0);
    if (pid <= 1) setup_failed("usage: signal_outside PID", EINVAL);
    if (kill((pid_t)pid, SIGTERM) != 0) blocked("kill(PID, SIGTERM)", errno);
    escaped("sent SIGTERM to %ld", pid);
}
