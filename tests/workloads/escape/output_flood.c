/* output_flood BYTES: writes BYTES bytes of 'y' lines to stdout in 64 KiB writes. */
#include "escape.h"

int main(int argc, char **argv) {
    long bytes = num_arg(argc, argv, 1, -1);
    if (bytes <= 0) setup_failed("usage: output_flood BYTES", EINVAL);
    static char block[65536];
    for (size_t i = 0; i < sizeof block; i += 2) {
        block[i] = 'y';
        block[i + 1] = '\n';
    }
    long written = 0;
    while (written < bytes) {
        size_t n = sizeof block;
        if ((long)n > bytes - written) n = (size_t)(bytes - written);
        ssize_t w = write(STDOUT_FILENO, block, n);
        if (w < 0) blocked("write to stdout", errno);
        written += w;
    }
    fprintf(stderr, "escaped: wrote %ld bytes\n", written);
    return 0;
}
