/* The unit of CPU work every workload is measured in.
 *
 * BUSY_LOOP(n) runs n iterations of a dependent multiply-add chain: each iteration waits for the
 * previous one, so the cost is the same wherever it is expanded and proportional to n. It is a
 * macro, not a function, so that the cycles are spent in the caller's own frame and a profiler
 * attributes them to the function under test ("self" time).
 *
 * Functions under test are marked FW_MEASURED (noipa): GCC then neither inlines nor clones them
 * (no `.isra`/`.constprop` suffixes) nor merges functions whose bodies are identical.
 *
 * The loop starts with a call (fw_load), so the function that expands it is never a leaf: GCC 12
 * on x86-64 sets up no frame in a leaf function that needs no stack, -fno-omit-frame-pointer
 * or not, and a frame-pointer unwinder then loses the leaf's caller (main would vanish from
 * every stack). */
#ifndef FLAMEWARDEN_BUSY_LOOP_H
#define FLAMEWARDEN_BUSY_LOOP_H

#include <time.h>

#define FW_MEASURED __attribute__((noipa))

/* Read and written once per loop so the loops cannot be removed as dead code. */
static volatile unsigned long fw_sink;

__attribute__((noipa, unused)) static unsigned long fw_load(void) { return fw_sink; }

#define BUSY_LOOP(n)                                                            \
    do {                                                                        \
        unsigned long fw_x_ = fw_load();                                        \
        for (unsigned long fw_i_ = 0; fw_i_ < (unsigned long)(n); fw_i_++) {    \
            fw_x_ = fw_x_ * 6364136223846793005UL + 1442695040888963407UL;      \
            __asm__ volatile("" : "+r"(fw_x_));                                 \
        }                                                                       \
        fw_sink = fw_x_;                                                        \
    } while (0)

static inline double fw_clock_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
