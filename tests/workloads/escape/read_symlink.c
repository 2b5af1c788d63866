/* read_symlink SECRET: makes a symlink `link-to-secret` in its (writable) working directory
 * pointing at the secret, and reads through it. */
#include "escape.h"

#include <fcntl.h>

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    unlink("link-to-secret");
    if (symlink(secret, "link-to-secret") != 0) setup_failed("symlink", errno);
    int fd = open("link-to-secret", O_RDONLY);
    if (fd < 0) blocked("open link-to-secret", errno);
    dump_fd(fd);
    escaped("read %s through link-to-secret", secret);
}
