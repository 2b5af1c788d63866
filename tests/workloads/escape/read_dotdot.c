/* read_dotdot SECRET: opens the secret through a path that starts in a tree whose refusals the
 * shipped policies do not report (`filesystem.quiet`: /sys/devices/system/cpu/, probed by the C
 * library's CPU count) and climbs out of it with `..`: the open must still be refused and, this
 * program not being a runtime probing the CPU count, reported. Prints what it read. */
#include "escape.h"

#include <fcntl.h>

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    char path[4096];
    int n = snprintf(path, sizeof path, "/sys/devices/system/cpu/../../../..%s", secret);
    if (n < 0 || (size_t)n >= sizeof path) setup_failed("path too long", ENAMETOOLONG);
    int fd = open(path, O_RDONLY);
    if (fd < 0) blocked("open secret through /sys/devices/system/cpu/../../../..", errno);
    dump_fd(fd);
    escaped("read %s", path);
}
