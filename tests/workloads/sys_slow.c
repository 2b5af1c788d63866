/* One slow call among fast ones: 500 getppid, one 50 ms nanosleep made in
 * `sleep_once_in_workload`, 500 more getppid. */
#include <time.h>

#include "sys_raw.h"

FW_MEASURED void fast_calls(int n) {
    for (int i = 0; i < n; i++) fw_syscall3(SYS_getppid, 0, 0, 0);
}

FW_MEASURED void sleep_once_in_workload(void) {
    struct timespec t = {0, 50 * 1000 * 1000};
    fw_syscall3(SYS_nanosleep, (long)&t, 0, 0);
}

int main(void) {
    fast_calls(500);
    sleep_once_in_workload();
    fast_calls(500);
    return 0;
}
