/* read_direct SECRET: opens the secret file by its path and prints what it read. */
#include "escape.h"

#include <fcntl.h>

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    int fd = open(secret, O_RDONLY);
    if (fd < 0) blocked("open secret", errno);
    dump_fd(fd);
    escaped("read %s", secret);
}
