/* demo: the program `cargo xtask demo` profiles.
 *
 * It pretends to be a judge submission that reads some input, solves the problem and checks its
 * answer. The work is made up, but its shares of the CPU time are known, so the flamegraph has
 * something to show:
 *
 *     main
 *     |-- parse_input        20 %
 *     |-- solve              70 %
 *     |   |-- score_candidates   50 %
 *     |   `-- (solve itself)     20 %
 *     `-- check_answer       10 %
 *
 * It runs for about 2 s and prints a made-up answer. */
#include <stdio.h>

#include "busy_loop.h"

/* One unit of work; every function below spends a fixed number of units per round. */
#define UNIT 10000UL
#define ROUNDS 18000UL

static unsigned long answer;

FW_MEASURED void parse_input(void) { BUSY_LOOP(2 * UNIT); }

FW_MEASURED void score_candidates(void) { BUSY_LOOP(5 * UNIT); }

FW_MEASURED void solve(void) {
    BUSY_LOOP(2 * UNIT);
    score_candidates();
    answer += fw_sink & 0xff;
}

FW_MEASURED void check_answer(void) { BUSY_LOOP(1 * UNIT); }

int main(void) {
    for (unsigned long round = 0; round < ROUNDS; round++) {
        parse_input();
        solve();
        check_answer();
    }
    printf("answer: %lu\n", answer);
    return 0;
}
