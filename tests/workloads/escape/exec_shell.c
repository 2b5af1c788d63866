/* exec_shell TOKEN: runs /bin/sh -c 'echo shell-ran-TOKEN'. This program never prints the
 * token itself: `shell-ran-TOKEN` on stdout means a shell ran. */
#include "escape.h"

int main(int argc, char **argv) {
    const char *token = arg(argc, argv, 1, "TOKEN");
    execl("/bin/sh", "sh", "-c", "echo shell-ran-\"$1\"", "sh", token, (char *)NULL);
    blocked("execve /bin/sh", errno);
}
