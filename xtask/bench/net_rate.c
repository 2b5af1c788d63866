/* Loopback TCP load for `cargo xtask bench net`:
 *   net_rate serve PORT            accept forever: read a 64-byte request (or, for a bulk
 *                                  transfer, everything until EOF), answer 64 bytes, close first
 *   net_rate connect PORT SECONDS  connections one after another for SECONDS: connect, write 64
 *                                  bytes, read the 64-byte answer and EOF, close; prints
 *                                  `conns_per_sec=`
 *   net_rate bulk PORT SECONDS     one connection writing 1 MiB blocks for SECONDS; prints
 *                                  `mib_per_sec=` (a fixed time, not a fixed size: a short
 *                                  transfer is mostly scheduling noise)
 * Servers print `ready` once listening. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buffer[1 << 20];

static struct sockaddr_in loopback(const char *port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void serve(const char *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 1024)) {
        perror("bind/listen");
        exit(2);
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        /* A request is 64 bytes; a bulk transfer is read to its end. */
        long total = 0;
        for (;;) {
            ssize_t r = read(c, buffer, sizeof buffer);
            if (r <= 0) break;
            total += r;
            if (total == 64) break;
        }
        if (write(c, buffer, 64) != 64) perror("write");
        close(c);
    }
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "serve") == 0) serve(argv[2]);
    if (argc != 4) {
        fprintf(stderr, "usage: net_rate serve PORT | connect PORT SECONDS | bulk PORT SECONDS\n");
        return 2;
    }
    struct sockaddr_in a = loopback(argv[2]);
    if (strcmp(argv[1], "connect") == 0) {
        double seconds = atof(argv[3]), start = now();
        long conns = 0;
        while (now() - start < seconds) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
                perror("connect");
                return 1;
            }
            if (write(fd, buffer, 64) != 64) return 1;
            while (read(fd, buffer, sizeof buffer) > 0) {
            }
            close(fd);
            conns++;
        }
        printf("conns=%ld conns_per_sec=%.1f\n", conns, conns / (now() - start));
        return 0;
    }
    if (strcmp(argv[1], "bulk") == 0) {
        double seconds = atof(argv[3]);
        long mib = 0;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
            perror("connect");
            return 1;
        }
        double start = now();
        for (; now() - start < seconds; mib++) {
            long left = sizeof buffer;
            while (left > 0) {
                ssize_t w = write(fd, buffer, (size_t)left);
                if (w <= 0) return 1;
                left -= w;
            }
        }
        shutdown(fd, SHUT_WR);
        while (read(fd, buffer, sizeof buffer) > 0) {
        }
        double took = now() - start;
        close(fd);
        printf("mib=%ld mib_per_sec=%.1f\n", mib, mib / took);
        return 0;
    }
    return 2;
}
