/* read_inline SECRET: opens the secret like read_direct, but with the `syscall` instruction
 * inline in open_secret_inline, a function with a frame of its own (it is no leaf: it calls
 * path_of first), so a frame-pointer unwinder sees open_secret_inline <- main <- libc's start,
 * which a glibc wrapper (that may use rbp for anything) would hide. */
#include "escape.h"

#include <fcntl.h>
#include <sys/syscall.h>

__attribute__((noipa)) static const char *path_of(char **argv) { return argv[1]; }

__attribute__((noipa)) static long open_secret_inline(char **argv) {
    const char *path = path_of(argv);
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"((long)SYS_openat), "D"((long)AT_FDCWD), "S"(path), "d"((long)O_RDONLY)
                     : "rcx", "r11", "memory");
    return ret;
}

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    long fd = open_secret_inline(argv);
    if (fd < 0) blocked("openat secret", (int)-fd);
    dump_fd((int)fd);
    escaped("read %s", secret);
}
