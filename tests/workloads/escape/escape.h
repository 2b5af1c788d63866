/* Shared by the escape corpus (the .c files beside it): each program tries ONE thing a
 * submission must not do and says whether it got through.
 *
 * Exit status: 0 — the attempt got through ("escaped: ..." on stdout); 1 — it was refused
 * ("blocked: ..." on stdout, with the errno); 2 — the program could not even set up its attempt
 * (bad arguments, a helper call failed). Extra trailing arguments are ignored: the tests append
 * a tag to find the run's processes. The tests never trust the printed claim alone where the
 * effect can be checked (the secret's bytes, a marker file, a listener, a victim process). */
#ifndef FLAMEWARDEN_ESCAPE_H
#define FLAMEWARDEN_ESCAPE_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The attempt got through: says so and exits 0. */
__attribute__((noreturn, format(printf, 1, 2), unused)) static void escaped(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("escaped: ", stdout);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    exit(0);
}

/* The attempt was refused with `err`: says so and exits 1. */
__attribute__((noreturn, unused)) static void blocked(const char *what, int err) {
    printf("blocked: %s: %s (errno %d)\n", what, strerror(err), err);
    fflush(stdout);
    exit(1);
}

/* Something the attempt needs failed before the attempt itself: exits 2. */
__attribute__((noreturn, unused)) static void setup_failed(const char *what, int err) {
    fprintf(stderr, "setup failed: %s: %s (errno %d)\n", what, strerror(err), err);
    exit(2);
}

/* argv[i], or a usage error. */
__attribute__((unused)) static const char *arg(int argc, char **argv, int i, const char *name) {
    if (argc <= i) {
        fprintf(stderr, "usage: %s ... %s ...\n", argv[0], name);
        exit(2);
    }
    return argv[i];
}

/* argv[i] as a non-negative integer, or `fallback` when absent. */
__attribute__((unused)) static long num_arg(int argc, char **argv, int i, long fallback) {
    if (argc <= i) return fallback;
    char *end;
    long v = strtol(argv[i], &end, 10);
    if (*end != '\0' || v < 0) {
        fprintf(stderr, "%s: bad number `%s`\n", argv[0], argv[i]);
        exit(2);
    }
    return v;
}

/* Copies what is left of `fd` (up to 4 KiB) to stdout: what leaked. */
__attribute__((unused)) static void dump_fd(int fd) {
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
        fputs("leaked: ", stdout);
        fwrite(buf, 1, (size_t)n, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
}

#endif
