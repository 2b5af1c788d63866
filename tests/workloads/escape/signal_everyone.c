/* signal_everyone: kill(-1, SIGURG) — a signal to every process the caller may signal, the
 * judge's among them. SIGURG because it is harmless where it lands (ignored unless handled; Go
 * runtimes take it as a preemption hint): the test's victim blocks it, so that it stays pending
 * where the test can see it. Landlock's signal scope refuses each process outside the sandbox
 * one by one, and the call still returns 0 when it reached any process at all: the program
 * cannot tell whether it got through; the test looks at the victim. */
#include "escape.h"

#include <signal.h>

int main(void) {
    if (kill(-1, SIGURG) != 0) blocked("kill(-1, SIGURG)", errno);
    escaped("sent SIGURG to every process it may signal");
}
