/* cpu_mix: three functions with known shares of the CPU time.
 *
 * Every round calls hot_function, warm_function and cold_function with 6, 3 and 1 times the
 * same amount of work, so they take 60 %, 30 % and 10 % of the time spent in them. Rounds are
 * short (0.05 to 0.15 ms) and their length varies pseudo-randomly (the same sequence every run):
 * with rounds of a fixed length, a sampling period close to a multiple of the round would see
 * the same point of the round again and again, and the shares it measured would swing far more
 * than the number of samples suggests.
 *
 * Usage: cpu_mix [ROUNDS]   (default 15000 rounds, about 1.7 s on a ~3 GHz core)
 * At exit it prints `cpu_seconds=S`, the process CPU time, on stdout. */
#include <stdio.h>
#include <stdlib.h>

#include "busy_loop.h"

/* Work per unit of a round's length; a round's length is 1, 2 or 3 units. */
#define UNIT 5000UL

/* xorshift64: a fixed, reproducible sequence of round lengths. */
static unsigned long next_random(void) {
    static unsigned long state = 0x9e3779b97f4a7c15UL;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

FW_MEASURED void hot_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

FW_MEASURED void warm_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

FW_MEASURED void cold_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

int main(int argc, char **argv) {
    unsigned long rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 15000;
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned long length = 1 + next_random() % 3;
        hot_function(6 * length);
        warm_function(3 * length);
        cold_function(1 * length);
    }
    printf("cpu_seconds=%.6f\n", fw_clock_seconds(CLOCK_PROCESS_CPUTIME_ID));
    return 0;
}
