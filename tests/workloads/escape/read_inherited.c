/* read_inherited: reads every file descriptor past the standard streams that it was started
 * with: a judge that opened a secret without O_CLOEXEC would hand it over. */
#include "escape.h"

#include <fcntl.h>
#include <sys/stat.h>

int main(void) {
    char buf[256];
    int found = 0;
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        buf[n] = '\0';
        printf("fd %d: %s\n", fd, buf);
        found = 1;
    }
    if (found) escaped("read inherited file descriptors");
    blocked("no inherited file descriptor", EBADF);
}
