/* A thread blocked on a pipe read for 300 ms: `reader_blocked_on_pipe` reads from a pipe that
 * another thread writes to after sleeping 300 ms. */
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "sys_raw.h"

static int fds[2];

FW_MEASURED void reader_blocked_on_pipe(void) {
    char c;
    if (fw_syscall3(SYS_read, fds[0], (long)&c, 1) != 1) _exit(1);
}

static void *late_writer(void *arg) {
    (void)arg;
    struct timespec t = {0, 300 * 1000 * 1000};
    nanosleep(&t, NULL);
    if (write(fds[1], "x", 1) != 1) _exit(1);
    return NULL;
}

int main(void) {
    pthread_t writer;
    if (pipe(fds) != 0 || pthread_create(&writer, NULL, late_writer, NULL) != 0) return 1;
    reader_blocked_on_pipe();
    pthread_join(writer, NULL);
    return 0;
}
