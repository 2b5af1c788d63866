/* cpu_spin [SECONDS]: burns CPU until it has used SECONDS (default 30) of CPU time. */
#include "escape.h"

#include <time.h>

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long seconds = num_arg(argc, argv, 1, 30);
    volatile unsigned long counter = 0;
    while (cpu_seconds() < (double)seconds)
        for (int i = 0; i < 100000; i++) counter = counter * 6364136223846793005UL + 1;
    escaped("used %ld s of CPU time", seconds);
}
