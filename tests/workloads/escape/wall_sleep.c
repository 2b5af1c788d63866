/* wall_sleep [SECONDS]: sleeps SECONDS (default 30) of wall time, using no CPU. */
#include "escape.h"

#include <time.h>

int main(int argc, char **argv) {
    long seconds = num_arg(argc, argv, 1, 30);
    struct timespec left = {seconds, 0};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
    escaped("slept %ld s", seconds);
}
