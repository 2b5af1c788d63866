/* deep_recursion [DEPTH]: a benign solution that recurses DEPTH levels (default 1000000) with
 * about 100 bytes of stack a level, as a depth-first search over a long path does, and prints a
 * checksum of the walk. Needs about 100 MB of stack: the usual 8 MiB ends it with SIGSEGV. */
#include "escape.h"

static long walk(long depth, volatile char *parent) {
    volatile char frame[64];
    frame[0] = (char)(depth & 0x7f);
    frame[63] = parent ? parent[0] : 0;
    if (depth == 0) return frame[0] + frame[63];
    return walk(depth - 1, frame) + (frame[0] & 1);
}

int main(int argc, char **argv) {
    long depth = num_arg(argc, argv, 1, 1000000);
    printf("depth %ld checksum %ld\n", depth, walk(depth, NULL));
    return 0;
}
