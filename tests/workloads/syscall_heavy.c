/* syscall_heavy: spends most of its time in the kernel, reading /dev/zero.
 *
 * read_zero_loop reads 64 KiB at a time; the kernel zero-fills the buffer (read_zero and
 * friends), so a CPU profile of this process is mostly kernel frames under read_zero_loop.
 *
 * On x86-64 the read is issued with an inline `syscall` instruction rather than through libc's
 * read(): libc's wrapper sets up no frame, so a frame-pointer unwinder would skip its caller and
 * the stack would read main -> read. Inline, the user stack is exactly main -> read_zero_loop.
 *
 * Usage: syscall_heavy [SECONDS]   (default 1.0; wall-clock time) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "busy_loop.h"

static char buffer[64 * 1024];

static inline long read_chunk(int fd, void *buf, unsigned long len) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"((long)SYS_read), "D"((long)fd), "S"(buf), "d"(len)
                     : "rcx", "r11", "memory");
    return ret;
#else
    return read(fd, buf, len);
#endif
}

FW_MEASURED unsigned long read_zero_loop(int fd, double seconds) {
    double deadline = fw_clock_seconds(CLOCK_MONOTONIC) + seconds;
    unsigned long reads = 0;
    while (fw_clock_seconds(CLOCK_MONOTONIC) < deadline) {
        for (int i = 0; i < 64; i++) {
            if (read_chunk(fd, buffer, sizeof buffer) != (long)sizeof buffer) {
                perror("read /dev/zero");
                exit(1);
            }
            reads++;
        }
    }
    return reads;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 1.0;
    int fd = open("/dev/zero", O_RDONLY);
    if (fd < 0) {
        perror("open /dev/zero");
        return 1;
    }
    unsigned long reads = read_zero_loop(fd, seconds);
    printf("reads=%lu cpu_seconds=%.6f\n", reads, fw_clock_seconds(CLOCK_PROCESS_CPUTIME_ID));
    return 0;
}
