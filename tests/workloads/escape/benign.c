/* benign: a well-behaved solution. Reads integers from stdin; a second thread sorts them while
 * the main thread allocates and touches 64 MiB (a sieve of Eratosthenes over 64 Mi bytes);
 * prints the count, sum, minimum, median, maximum, the ten smallest values and the number of
 * primes below 64 Mi to stdout. Exits 0. */
#include "escape.h"

#include <pthread.h>
#include <stdint.h>

struct numbers {
    long long *v;
    size_t n;
};

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void *sort_numbers(void *p) {
    struct numbers *nums = p;
    qsort(nums->v, nums->n, sizeof *nums->v, cmp);
    return NULL;
}

int main(void) {
    struct numbers nums = {NULL, 0};
    size_t cap = 0;
    long long x;
    while (scanf("%lld", &x) == 1) {
        if (nums.n == cap) {
            cap = cap ? cap * 2 : 1024;
            nums.v = realloc(nums.v, cap * sizeof *nums.v);
            if (!nums.v) setup_failed("realloc", errno);
        }
        nums.v[nums.n++] = x;
    }
    pthread_t sorter;
    int err = pthread_create(&sorter, NULL, sort_numbers, &nums);
    if (err) setup_failed("pthread_create", err);

    const size_t size = 64u << 20;
    unsigned char *composite = calloc(size, 1);
    if (!composite) setup_failed("calloc 64 MiB", errno);
    memset(composite, 0, size); /* touch every page */
    size_t primes = 0;
    for (size_t i = 2; i < size; i++) {
        if (composite[i]) continue;
        primes++;
        for (size_t j = i * i; i < 65536 && j < size; j += i) composite[j] = 1;
    }

    err = pthread_join(sorter, NULL);
    if (err) setup_failed("pthread_join", err);
    long long sum = 0;
    for (size_t i = 0; i < nums.n; i++) sum += nums.v[i];
    printf("count %zu\nsum %lld\n", nums.n, sum);
    if (nums.n) {
        printf("min %lld\nmedian %lld\nmax %lld\nsmallest", nums.v[0], nums.v[nums.n / 2],
               nums.v[nums.n - 1]);
        for (size_t i = 0; i < nums.n && i < 10; i++) printf(" %lld", nums.v[i]);
        printf("\n");
    }
    printf("primes below %zu: %zu\n", size, primes);
    free(composite);
    free(nums.v);
    return 0;
}
