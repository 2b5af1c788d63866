/* tty_inject: pushes a line into the input queue of the terminal on its standard input with
 * ioctl(TIOCSTI), as if typed: a submission run from a judge's terminal would type commands into
 * the judge's shell. The test reads the terminal's input to see whether the line arrived. */
#include "escape.h"

#include <sys/ioctl.h>

int main(void) {
    if (!isatty(STDIN_FILENO)) setup_failed("standard input is not a terminal", ENOTTY);
    const char *line = "echo tty-injected\n";
    for (const char *c = line; *c; c++) {
        if (ioctl(STDIN_FILENO, TIOCSTI, c) != 0) blocked("ioctl(TIOCSTI)", errno);
    }
    escaped("typed %s", line);
}
