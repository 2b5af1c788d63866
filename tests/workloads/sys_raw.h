/* Syscalls made with the `syscall` instruction in the caller's own frame.
 *
 * A libc wrapper (read, nanosleep, syscall) sets up no frame pointer, so a frame-pointer unwinder
 * that starts inside it loses the wrapper's caller; the workloads that check which function made
 * a call make it themselves, inline, so that function is the leaf of the user stack. */
#ifndef FLAMEWARDEN_SYS_RAW_H
#define FLAMEWARDEN_SYS_RAW_H

#include <sys/syscall.h>

#define FW_MEASURED __attribute__((noipa))

static inline long fw_syscall3(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

#endif
