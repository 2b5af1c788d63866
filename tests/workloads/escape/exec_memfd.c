/* exec_memfd TOKEN: fileless execution. Copies its own executable into a memfd and runs it with
 * execveat(memfd, "", AT_EMPTY_PATH) as `exec_memfd --payload TOKEN`; only that payload prints
 * `memfd-payload-ran-TOKEN`, so that line on stdout means the fileless exec happened. */
#include "escape.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "--payload") == 0) {
        printf("memfd-payload-ran-%s\n", argv[2]);
        escaped("running from a memfd");
    }
    const char *token = arg(argc, argv, 1, "TOKEN");
    int mem = (int)syscall(SYS_memfd_create, "payload", 0);
    if (mem < 0) blocked("memfd_create", errno);
    /* Our own executable: argv[0] is the path we were started with; /proc/self/exe otherwise. */
    int self = open(argv[0], O_RDONLY);
    if (self < 0) self = open("/proc/self/exe", O_RDONLY);
    if (self < 0) setup_failed("open own executable", errno);
    char buf[65536];
    ssize_t n;
    while ((n = read(self, buf, sizeof buf)) > 0)
        if (write(mem, buf, (size_t)n) != n) setup_failed("write memfd", errno);
    if (n < 0) setup_failed("read own executable", errno);
    close(self);
    char *payload_argv[] = {"exec_memfd", "--payload", (char *)token, NULL};
    syscall(SYS_execveat, mem, "", payload_argv, environ, AT_EMPTY_PATH);
    blocked("execveat memfd", errno);
}
