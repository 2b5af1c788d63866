/* spinner: a busy process with a distinctive function name, to put beside (or inside) a target.
 *
 * The role picks the function the process spins in, so a profile tells at a glance whose
 * samples it holds:
 *
 *     target-a  spin_in_target_a
 *     target-b  spin_in_target_b
 *     outside   spin_outside_target
 *
 * Usage: spinner ROLE SECONDS   -- spins for SECONDS of wall-clock time (at most 60), then exits,
 * so a spinner a test forgot cannot outlive it by long. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "busy_loop.h"

#define SPIN_UNTIL(deadline)                                                    \
    while (fw_clock_seconds(CLOCK_MONOTONIC) < (deadline)) {                    \
        BUSY_LOOP(100000);                                                      \
    }

FW_MEASURED void spin_in_target_a(double deadline) { SPIN_UNTIL(deadline); }

FW_MEASURED void spin_in_target_b(double deadline) { SPIN_UNTIL(deadline); }

FW_MEASURED void spin_outside_target(double deadline) { SPIN_UNTIL(deadline); }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: spinner target-a|target-b|outside SECONDS\n");
        return 2;
    }
    double seconds = strtod(argv[2], NULL);
    if (!(seconds > 0 && seconds <= 60)) {
        fprintf(stderr, "spinner: SECONDS must be in (0, 60]\n");
        return 2;
    }
    double deadline = fw_clock_seconds(CLOCK_MONOTONIC) + seconds;
    if (strcmp(argv[1], "target-a") == 0) {
        spin_in_target_a(deadline);
    } else if (strcmp(argv[1], "target-b") == 0) {
        spin_in_target_b(deadline);
    } else if (strcmp(argv[1], "outside") == 0) {
        spin_outside_target(deadline);
    } else {
        fprintf(stderr, "spinner: unknown role %s\n", argv[1]);
        return 2;
    }
    return 0;
}
