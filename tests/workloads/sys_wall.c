/* Half CPU, half sleep: `compute_200ms` burns 200 ms of CPU time, `sleep_200ms` sleeps 200 ms. */
#include <time.h>

#include "sys_raw.h"

static volatile unsigned long sink;

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

FW_MEASURED void compute_200ms(void) {
    double start = cpu_seconds();
    unsigned long x = sink;
    while (cpu_seconds() - start < 0.2)
        for (int i = 0; i < 10000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    sink = x;
}

FW_MEASURED void sleep_200ms(void) {
    struct timespec t = {0, 200 * 1000 * 1000};
    fw_syscall3(SYS_nanosleep, (long)&t, 0, 0);
}

int main(void) {
    compute_200ms();
    sleep_200ms();
    return 0;
}
