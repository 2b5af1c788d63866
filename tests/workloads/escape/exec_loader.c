/* exec_loader TOKEN: runs a program the policy does not let it execute, through the dynamic
 * loader, which it may (the kernel needs it for every dynamically linked program). Copies its
 * own executable into the work directory as `payload` (a file it may write but not execute)
 * and runs `LOADER ./payload --payload TOKEN`: the loader maps and runs any file it can read.
 * Only the payload prints `loader-payload-ran-TOKEN`. */
#include "escape.h"

#include <fcntl.h>

#if defined(__x86_64__)
#define LOADER "/lib64/ld-linux-x86-64.so.2"
#elif defined(__aarch64__)
#define LOADER "/lib/ld-linux-aarch64.so.1"
#else
#error "which dynamic loader?"
#endif

extern char **environ;

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "--payload") == 0) {
        printf("loader-payload-ran-%s\n", argv[2]);
        escaped("a file of the work directory ran through the loader");
    }
    const char *token = arg(argc, argv, 1, "TOKEN");
    int self = open(argv[0], O_RDONLY);
    if (self < 0) setup_failed("open own executable", errno);
    int payload = open("payload", O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (payload < 0) setup_failed("create ./payload", errno);
    char buf[65536];
    ssize_t n;
    while ((n = read(self, buf, sizeof buf)) > 0)
        if (write(payload, buf, (size_t)n) != n) setup_failed("write ./payload", errno);
    if (n < 0) setup_failed("read own executable", errno);
    close(self);
    close(payload);
    char *loader_argv[] = {LOADER, "./payload", "--payload", (char *)token, NULL};
    execve(LOADER, loader_argv, environ);
    blocked("execve(" LOADER ")", errno);
}
