/* This machine's memory read bandwidth, measured: each of N threads allocates and first touches its
 * own 256 MiB (so its pages sit on its own node), then sums it as 64-bit words five times, the threads'
 * passes started together; a pass reads all threads' bytes in its slowest thread's time, and the best
 * pass counts. A decode step of a memory-bound model reads its weights once, so weight bytes per step
 * over this figure is the fastest step the memory allows. Prints one JSON line: the threads, the bytes
 * read per pass and the sum of the threads' GB/s.
 *
 *   cc -O3 -pthread read_bandwidth.c -o read_bandwidth && ./read_bandwidth 2
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define WORDS (32L << 20) /* 256 MiB per thread: far beyond any last-level cache */
#define PASSES 5

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

struct job {
    pthread_barrier_t * start;
    int ok;                  /* the buffer was allocated */
    double seconds[PASSES];  /* each pass's time */
    uint64_t sink;           /* the sums, stored so that the loop is not dropped */
};

/* one thread: first touch, then PASSES timed sums (four accumulators, which the compiler vectorises) */
static void * worker(void * arg) {
    struct job * j = arg;
    uint64_t * a = malloc(WORDS * sizeof(uint64_t));
    if (!a) {  /* still meet the other threads at each pass, so that none waits forever */
        for (int p = 0; p < PASSES; ++p) pthread_barrier_wait(j->start);
        return NULL;
    }
    for (long i = 0; i < WORDS; ++i) a[i] = (uint64_t)i;
    for (int p = 0; p < PASSES; ++p) {
        pthread_barrier_wait(j->start);
        const double t0 = now();
        uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (long i = 0; i < WORDS; i += 4) {
            s0 += a[i];
            s1 += a[i + 1];
            s2 += a[i + 2];
            s3 += a[i + 3];
        }
        j->seconds[p] = now() - t0;
        j->sink += s0 ^ s1 ^ s2 ^ s3;
    }
    free(a);
    j->ok = 1;
    return NULL;
}

int main(int argc, char ** argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 1;
    if (n < 1 || n > 1024) return 2;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    pthread_t t[1024];
    struct job jobs[1024] = {{0}};
    for (int i = 0; i < n; ++i) {
        jobs[i].start = &start;
        pthread_create(&t[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < n; ++i) {
        pthread_join(t[i], NULL);
        if (!jobs[i].ok) {
            printf("{\"error\": \"out of memory\"}\n");
            return 1;
        }
    }
    const long bytes = n * WORDS * (long)sizeof(uint64_t);
    double best = 0;
    for (int p = 0; p < PASSES; ++p) {
        double slowest = 0;
        for (int i = 0; i < n; ++i)
            if (jobs[i].seconds[p] > slowest) slowest = jobs[i].seconds[p];
        if (bytes / slowest / 1e9 > best) best = bytes / slowest / 1e9;
    }
    printf("{\"threads\": %d, \"bytes_per_pass\": %ld, \"gb_per_s\": %.1f}\n", n, bytes, best);
    return 0;
}
