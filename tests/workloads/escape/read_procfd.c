/* read_procfd SECRET: gets an O_PATH descriptor of the secret (an O_PATH open reads nothing, so
 * a sandbox may let it through) and reopens it for reading through /proc/self/fd/N — the
 * classic way to turn a path-only handle into a readable one. */
#include "escape.h"

#include <fcntl.h>

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    int path_fd = open(secret, O_PATH);
    if (path_fd < 0) blocked("open secret O_PATH", errno);
    char proc_path[64];
    snprintf(proc_path, sizeof proc_path, "/proc/self/fd/%d", path_fd);
    int fd = open(proc_path, O_RDONLY);
    if (fd < 0) blocked("open /proc/self/fd/N", errno);
    dump_fd(fd);
    escaped("read %s through %s", secret, proc_path);
}
