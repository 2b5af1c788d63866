/* ci_bench: a benchmark for `flamewarden ci` tests, built in variants.
 *
 * Every round calls hot_function, warm_function and cold_function with 6, 3 and 1 units of
 * work, so they take 60 %, 30 % and 10 % of the time. Round lengths vary pseudo-randomly, as in
 * cpu_mix.c, so that the sampling period never locks onto the round.
 *
 * Build-time variants:
 *   -DHOT_FACTOR=2  hot_function does twice the work (the "regressed" build);
 *   -DPADDING       a large unused function before the measured ones moves every address.
 *
 * Usage: ci_bench [ROUNDS]   (default 5000 rounds, about 0.6 s on a ~3 GHz core) */
#include <stdio.h>
#include <stdlib.h>

#include "busy_loop.h"

#ifndef HOT_FACTOR
#define HOT_FACTOR 1
#endif

#define UNIT 5000UL

static unsigned long next_random(void) {
    static unsigned long state = 0x9e3779b97f4a7c15UL;
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

#ifdef PADDING
/* Never called with a nonzero argument; only its size matters. */
FW_MEASURED unsigned long padding_function(unsigned long n) {
    unsigned long x = n;
#define PAD8 x = x * 31 + 7; x ^= x >> 3; x = x * 17 + 1; x ^= x << 5; \
             x = x * 13 + 3; x ^= x >> 7; x = x * 11 + 5; x ^= x << 2;
#define PAD64 PAD8 PAD8 PAD8 PAD8 PAD8 PAD8 PAD8 PAD8
    if (n) { PAD64 PAD64 PAD64 PAD64 }
    return x;
}
#endif

FW_MEASURED void hot_function(unsigned long units) { BUSY_LOOP(units * UNIT * HOT_FACTOR); }

FW_MEASURED void warm_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

FW_MEASURED void cold_function(unsigned long units) { BUSY_LOOP(units * UNIT); }

int main(int argc, char **argv) {
    unsigned long rounds = argc > 1 ? strtoul(argv[1], NULL, 10) : 5000;
#ifdef PADDING
    fw_sink += padding_function(0);
#endif
    for (unsigned long r = 0; r < rounds; r++) {
        unsigned long length = 1 + next_random() % 3;
        hot_function(6 * length);
        warm_function(3 * length);
        cold_function(1 * length);
    }
    return 0;
}
