/* cpu_mix: three functions with known shares of the CPU time.
 *
 * Every round calls hot_function, warm_function and cold_function with 6, 3 and 1 units of the
 * same work, so they take 60 %, 30 % and 10 % of the time spent in them. Rounds are short
 * (about 0.1 ms), so any sampling profiler sees the three interleaved, whatever its period.
 *
 * Usage: cpu_mix [ROUNDS]   (default 15000 rounds, about 1.7 s on a ~3 GHz core)
 * At exit it prints `cpu_seconds=S`, the process CPU time, on stdout. */
#include <stdio.h>
#include <stdlib.h>

#include "busy_loop.h"

#define UNIT 10000UL

FW_MEASURED void hot_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

FW_MEASURED void warm_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

FW_MEASURED void cold_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

int main(int argc, char **argv) {
    unsigned long rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 15000;
    for (unsigned long r = 0; r < rounds; r++) {
        hot_function(6);
        warm_function(3);
        cold_function(1);
    }
    printf("cpu_seconds=%.6f\n", fw_clock_seconds(CLOCK_PROCESS_CPUTIME_ID));
    return 0;
}
