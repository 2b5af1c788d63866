/* disk_fill MIB [SECONDS]: writes MIB MiB into files of 1 MiB each in its working directory
 * (files of 1 MiB stay below any per-file RLIMIT_FSIZE), then sleeps SECONDS (default 0) so
 * that the test can look at what landed. Says `escaped` when all of it was written. */
#include "escape.h"

#include <fcntl.h>
#include <time.h>

int main(int argc, char **argv) {
    long mib = num_arg(argc, argv, 1, -1);
    long seconds = num_arg(argc, argv, 2, 0);
    if (mib <= 0) setup_failed("usage: disk_fill MIB [SECONDS]", EINVAL);
    static char block[1 << 20];
    memset(block, 'd', sizeof block);
    long written = 0;
    int err = 0;
    for (long f = 0; f < mib && !err; f++) {
        char name[32];
        snprintf(name, sizeof name, "fill-%ld", f);
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            err = errno;
            break;
        }
        size_t done = 0;
        while (done < sizeof block) {
            ssize_t w = write(fd, block + done, sizeof block - done);
            if (w < 0) {
                err = errno;
                break;
            }
            done += (size_t)w;
            written += w;
        }
        close(fd);
    }
    struct timespec left = {seconds, 0};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
    if (err) {
        printf("wrote %ld bytes; ", written);
        blocked("write", err);
    }
    escaped("wrote %ld MiB", mib);
}
