/* Loopback TCP load for `cargo xtask bench net`:
 *   net_rate serve PORT            accept forever: read a 64-byte request (or, for a bulk
 *                                  transfer, everything until EOF), answer 64 bytes, close first
 *   net_rate connect PORT SECONDS  connections one after another for SECONDS: connect, write 64
 *                                  bytes, read the 64-byte answer and EOF, close; prints
 *                                  `conns_per_sec=`
 *   net_rate bulk PORT SECONDS     one connection writing 1 MiB blocks for SECONDS; prints
 *                                  `mib_per_sec=` (a fixed time, not a fixed size: a short
 *                                  transfer is mostly scheduling noise)
 * Servers print `ready` once listening.
 *
 * With `CTL ACK SLICE_MS` after SECONDS, the client drives `flamewarden net --control
 * fifo:CTL,ACK`: it splits the time into slices of SLICE_MS, tracing enabled in one and disabled
 * in the next (on, off, off, on, on, off, ...: each pair has one of each, and neither state
 * always comes first), waits for the `ack` of each switch before timing the slice, and prints a
 * line `slice on|off COUNT SECONDS` per slice (COUNT: connections, or bytes written). Host
 * noise (a vCPU's speed changes by 10 % from one tenth of a second to the next) then falls on
 * both states alike. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
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

/* The control FIFOs of `flamewarden net --control`; -1 without. */
static int ctl_fd = -1, ack_fd = -1;

/* Tells flamewarden to enable or disable tracing and waits (30 s at most) for its `ack`. */
static void set_tracing(int on) {
    const char *command = on ? "enable\n" : "disable\n";
    if (write(ctl_fd, command, strlen(command)) != (ssize_t)strlen(command)) {
        perror("write control");
        exit(1);
    }
    char answer[4];
    size_t got = 0;
    while (got < sizeof answer) {
        struct pollfd p = {.fd = ack_fd, .events = POLLIN};
        if (poll(&p, 1, 30000) != 1) {
            fprintf(stderr, "no ack from flamewarden within 30 s\n");
            exit(1);
        }
        ssize_t r = read(ack_fd, answer + got, sizeof answer - got);
        if (r <= 0) {
            perror("read ack");
            exit(1);
        }
        got += (size_t)r;
    }
    if (memcmp(answer, "ack\n", 4) != 0) {
        fprintf(stderr, "flamewarden answered %.4s\n", answer);
        exit(1);
    }
}

/* Slices of a controlled run: which state slice `i` has (on, off, off, on, ...). */
static int slice_on(long i) { return ((i + 1) / 2) % 2 == 0; }

static void connect_once(struct sockaddr_in *a) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)a, sizeof *a)) {
        perror("connect");
        exit(1);
    }
    if (write(fd, buffer, 64) != 64) exit(1);
    while (read(fd, buffer, sizeof buffer) > 0) {
    }
    close(fd);
}

static void write_all(int fd, long n) {
    while (n > 0) {
        ssize_t w = write(fd, buffer, (size_t)n);
        if (w <= 0) exit(1);
        n -= w;
    }
}

/* The controlled runs: connections (bulk == 0) or 256 KiB writes on one connection. */
static int controlled(struct sockaddr_in *a, int bulk, double seconds, double slice) {
    int fd = -1;
    if (bulk) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)a, sizeof *a)) {
            perror("connect");
            return 1;
        }
    }
    long slices = (long)(seconds / slice + 0.5);
    for (long i = 0; i < slices; i++) {
        int on = slice_on(i);
        set_tracing(on);
        long count = 0;
        double start = now(), took;
        while ((took = now() - start) < slice) {
            if (bulk) {
                write_all(fd, 256 << 10);
                count += 256 << 10;
            } else {
                connect_once(a);
                count++;
            }
        }
        printf("slice %s %ld %.6f\n", on ? "on" : "off", count, took);
    }
    set_tracing(1);
    if (bulk) {
        shutdown(fd, SHUT_WR);
        while (read(fd, buffer, sizeof buffer) > 0) {
        }
        close(fd);
    }
    return 0;
}

int main(int argc, char **argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc == 3 && strcmp(argv[1], "serve") == 0) serve(argv[2]);
    if (argc != 4 && argc != 7) {
        fprintf(stderr, "usage: net_rate serve PORT | connect|bulk PORT SECONDS [CTL ACK SLICE_MS]\n");
        return 2;
    }
    struct sockaddr_in a = loopback(argv[2]);
    if (argc == 7) {
        ctl_fd = open(argv[4], O_RDWR);
        ack_fd = open(argv[5], O_RDWR);
        if (ctl_fd < 0 || ack_fd < 0) {
            perror("open control FIFOs");
            return 1;
        }
        int bulk = strcmp(argv[1], "bulk") == 0;
        if (!bulk && strcmp(argv[1], "connect") != 0) return 2;
        return controlled(&a, bulk, atof(argv[3]), atof(argv[6]) / 1000);
    }
    if (strcmp(argv[1], "connect") == 0) {
        double seconds = atof(argv[3]), start = now();
        long conns = 0;
        while (now() - start < seconds) {
            connect_once(&a);
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
        for (; now() - start < seconds; mib++) write_all(fd, sizeof buffer);
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
