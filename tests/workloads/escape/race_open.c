/* race_open SECRET: a second thread keeps rewriting the path buffer between a benign file in
 * the working directory and the secret while the main thread opens it, hoping that the path a
 * checker looked at is not the one the kernel opens. Bounded: 20000 opens or 3 seconds. */
#include "escape.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define BENIGN "benign-input.txt"
#define BENIGN_TEXT "benign\n"

static char path[4096];
static char secret_path[4096];
static atomic_int stop;

static void *flipper(void *unused) {
    (void)unused;
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        /* Byte by byte through a volatile pointer: the compiler may not merge the stores. */
        volatile char *p = path;
        for (size_t i = 0; i <= strlen(secret_path); i++) p[i] = secret_path[i];
        for (size_t i = 0; i < sizeof BENIGN; i++) p[i] = BENIGN[i];
    }
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *secret = arg(argc, argv, 1, "SECRET");
    if (strlen(secret) >= sizeof secret_path) setup_failed("secret path too long", ENAMETOOLONG);
    strcpy(secret_path, secret);
    strcpy(path, BENIGN);
    int b = open(BENIGN, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (b < 0 || write(b, BENIGN_TEXT, strlen(BENIGN_TEXT)) < 0) setup_failed("benign file", errno);
    close(b);

    pthread_t thread;
    int err = pthread_create(&thread, NULL, flipper, NULL);
    if (err) setup_failed("pthread_create", err);
    double deadline = now() + 3.0;
    int opened = 0, last_errno = 0;
    for (int i = 0; i < 20000 && now() < deadline; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) {
            /* Torn paths give ENOENT; what matters is whether the secret was refused. */
            if (last_errno != EACCES && last_errno != EPERM) last_errno = errno;
            continue;
        }
        opened++;
        char buf[256];
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n >= 0) {
            buf[n] = '\0';
            if (strcmp(buf, BENIGN_TEXT) != 0) {
                atomic_store(&stop, 1);
                pthread_join(thread, NULL);
                printf("leaked: %s\n", buf);
                escaped("read the secret on open %d", i);
            }
        }
    }
    atomic_store(&stop, 1);
    pthread_join(thread, NULL);
    printf("opened the benign file %d times, never the secret\n", opened);
    blocked("open secret during the race", last_errno ? last_errno : EACCES);
}
