/* read_dirfd SECRET: opens the secret's directory as an O_PATH descriptor (which Landlock does
 * not check) and then the secret relative to it, hoping that a checker judging the relative
 * name by the working directory lets it through. */
#include "escape.h"

#include <fcntl.h>
#include <libgen.h>

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    char dir[4096], base[4096];
    if (strlen(secret) >= sizeof dir) setup_failed("secret path too long", ENAMETOOLONG);
    strcpy(dir, secret);
    strcpy(base, secret);
    int dfd = open(dirname(dir), O_PATH | O_DIRECTORY);
    if (dfd < 0) blocked("open the secret's directory with O_PATH", errno);
    int fd = openat(dfd, basename(base), O_RDONLY);
    if (fd < 0) blocked("openat secret beneath the directory descriptor", errno);
    dump_fd(fd);
    escaped("read %s through a directory descriptor", secret);
}
