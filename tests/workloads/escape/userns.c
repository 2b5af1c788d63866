/* userns: creates a user namespace with unshare(CLONE_NEWUSER), and stays in it for 300 ms so a
 * watcher outside can see /proc/PID/ns/user change. */
#include "escape.h"

#include <sched.h>

int main(void) {
    if (unshare(CLONE_NEWUSER) != 0) blocked("unshare(CLONE_NEWUSER)", errno);
    usleep(300 * 1000);
    escaped("in a new user namespace");
}
