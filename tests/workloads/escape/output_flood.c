/* output_flood BYTES [stderr]: writes BYTES bytes of 'y' lines to stdout (or stderr) in 64 KiB
 * writes; says "escaped" on the other stream when all of them went out. */
#include "escape.h"

int main(int argc, char **argv) {
    long bytes = num_arg(argc, argv, 1, -1);
    if (bytes <= 0) setup_failed("usage: output_flood BYTES [stderr]", EINVAL);
    int to_stderr = argc > 2 && strcmp(argv[2], "stderr") == 0;
    int fd = to_stderr ? STDERR_FILENO : STDOUT_FILENO;
    static char block[65536];
    for (size_t i = 0; i < sizeof block; i += 2) {
        block[i] = 'y';
        block[i + 1] = '\n';
    }
    long written = 0;
    while (written < bytes) {
        size_t n = sizeof block;
        if ((long)n > bytes - written) n = (size_t)(bytes - written);
        ssize_t w = write(fd, block, n);
        if (w < 0) blocked(to_stderr ? "write to stderr" : "write to stdout", errno);
        written += w;
    }
    fprintf(to_stderr ? stdout : stderr, "escaped: wrote %ld bytes\n", written);
    return 0;
}
