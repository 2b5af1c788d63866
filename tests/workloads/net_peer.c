/* Both ends of the TCP traffic the `flamewarden net` tests measure (IPv4):
 *   net_peer serve PORT RESPONSE     accept forever; per connection read until EOF, write
 *                                    RESPONSE bytes, close
 *   net_peer reset-serve PORT        accept forever; read one byte, then close with
 *                                    SO_LINGER 0 (the peer gets a RST)
 *   net_peer connect HOST PORT N REQUEST RESPONSE
 *                                    N connections one after another: write REQUEST bytes,
 *                                    shut down writing, read until EOF (must be RESPONSE bytes)
 *   net_peer refused HOST PORT       one connect that must fail with ECONNREFUSED
 *   net_peer reset HOST PORT         connect, write a byte, read: must fail with ECONNRESET
 *   net_peer stream HOST PORT SECONDS  write 4 KiB every millisecond for SECONDS, then close
 *                                    like `connect` (the server answers 0 bytes or more)
 *   net_peer bulk HOST PORT BYTES    one connection writing BYTES, then like `connect`
 * Servers print `ready` once listening. Clients print `connects=N bytes_out=B bytes_in=B`
 * and exit 0 when everything went as expected. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buffer[65536];

static struct sockaddr_in address(const char *host, const char *port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(port));
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(2);
    }
    return a;
}

static int listen_on(const char *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = address("0.0.0.0", port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 128) != 0) {
        perror("bind/listen");
        exit(2);
    }
    printf("ready\n");
    fflush(stdout);
    return fd;
}

static int write_all(int fd, long n) {
    while (n > 0) {
        long chunk = n < (long)sizeof buffer ? n : (long)sizeof buffer;
        ssize_t w = write(fd, buffer, (size_t)chunk);
        if (w <= 0) return -1;
        n -= w;
    }
    return 0;
}

static long read_all(int fd) {
    long total = 0;
    for (;;) {
        ssize_t r = read(fd, buffer, sizeof buffer);
        if (r < 0) return -1;
        if (r == 0) return total;
        total += r;
    }
}

__attribute__((noreturn)) static void serve(const char *port, long response, int reset) {
    int listener = listen_on(port);
    for (;;) {
        int c = accept(listener, NULL, NULL);
        if (c < 0) continue;
        if (reset) {
            char byte;
            if (read(c, &byte, 1) < 0) perror("read");
            struct linger l = {1, 0};
            setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        } else if (read_all(c) >= 0) {
            write_all(c, response);
        }
        close(c);
    }
}

/* One exchange: connect, write `request` bytes (for `seconds` > 0: 4 KiB per ms for that long
 * instead), shut down writing, read until EOF. Returns the bytes read, or -1. */
static long exchange(struct sockaddr_in *a, long request, double seconds, long *sent) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)a, sizeof *a) != 0) {
        perror("connect");
        return -1;
    }
    *sent = 0;
    if (seconds > 0) {
        struct timespec start, now, ms = {0, 1000000};
        clock_gettime(CLOCK_MONOTONIC, &start);
        do {
            if (write_all(fd, 4096) != 0) return -1;
            *sent += 4096;
            nanosleep(&ms, NULL);
            clock_gettime(CLOCK_MONOTONIC, &now);
        } while ((now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    } else {
        if (write_all(fd, request) != 0) return -1;
        *sent = request;
    }
    shutdown(fd, SHUT_WR);
    long got = read_all(fd);
    close(fd);
    return got;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    memset(buffer, 'x', sizeof buffer);
    if (argc == 4 && strcmp(argv[1], "serve") == 0) serve(argv[2], atol(argv[3]), 0);
    if (argc == 3 && strcmp(argv[1], "reset-serve") == 0) serve(argv[2], 0, 1);
    if (argc < 4) {
        fprintf(stderr, "usage: see the comment at the top of net_peer.c\n");
        return 2;
    }
    struct sockaddr_in a = address(argv[2], argv[3]);
    if (strcmp(argv[1], "refused") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        printf("connect=%d errno=%d\n", rc, rc ? errno : 0);
        return rc != 0 && errno == ECONNREFUSED ? 0 : 1;
    }
    if (strcmp(argv[1], "reset") == 0) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || write(fd, "x", 1) != 1) return 1;
        long got = read_all(fd);
        printf("read=%ld errno=%d\n", got, got < 0 ? errno : 0);
        return got < 0 && errno == ECONNRESET ? 0 : 1;
    }
    long n = 1, request = 0, response = -1, in = 0, out = 0, sent = 0;
    double seconds = 0;
    if (strcmp(argv[1], "connect") == 0 && argc == 7) {
        n = atol(argv[4]);
        request = atol(argv[5]);
        response = atol(argv[6]);
    } else if (strcmp(argv[1], "stream") == 0 && argc == 5) {
        seconds = atof(argv[4]);
    } else if (strcmp(argv[1], "bulk") == 0 && argc == 5) {
        request = atol(argv[4]);
    } else {
        fprintf(stderr, "usage: see the comment at the top of net_peer.c\n");
        return 2;
    }
    long done = 0;
    for (long i = 0; i < n; i++) {
        long got = exchange(&a, request, seconds, &sent);
        if (got < 0 || (response >= 0 && got != response)) {
            fprintf(stderr, "exchange %ld: read %ld bytes, expected %ld\n", i, got, response);
            return 1;
        }
        in += got;
        out += sent;
        done++;
    }
    printf("connects=%ld bytes_out=%ld bytes_in=%ld\n", done, out, in);
    return 0;
}
