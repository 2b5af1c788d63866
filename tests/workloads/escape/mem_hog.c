/* mem_hog [MIB]: allocates and touches memory in 8 MiB steps up to MIB (default 1024) MiB,
 * keeping all of it. When an allocation fails it aborts, as `new` would. */
#include "escape.h"

#define STEP (8L << 20)

int main(int argc, char **argv) {
    long limit_mib = num_arg(argc, argv, 1, 1024);
    long total = 0;
    while (total < (limit_mib << 20)) {
        char *p = malloc(STEP);
        if (!p) {
            fprintf(stderr, "malloc failed after %ld MiB\n", total >> 20);
            abort();
        }
        for (long i = 0; i < STEP; i += 4096) p[i] = (char)(i >> 12 | 1);
        total += STEP;
    }
    escaped("touched %ld MiB", total >> 20);
}
