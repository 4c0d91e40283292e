/* This machine's F32 FMA peak, measured: each of N threads runs 12 independent chains of vector
 * fused multiply-adds held in registers (enough to cover the FMA latency on two ports) for about a
 * quarter of a second after a warm-up, with the widest vectors the CPU has (AVX-512, else AVX2 + FMA).
 * Prints one JSON line: the vector width, the FLOP per FMA instruction, the threads and the sum of the
 * threads' GFLOP/s.
 *
 *   cc -O3 -pthread fma_peak.c -o fma_peak && ./fma_peak 2
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHAINS 12
#define ITERS 60000000L  /* about a quarter of a second per thread at 100+ GFLOP/s */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* returns FLOPs done; the sum keeps the compiler from dropping the chains */
__attribute__((target("avx512f"))) static double chains512(long iters, float * sink) {
    __m512 a[CHAINS];
    const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; ++j) a[j] = _mm512_set1_ps((float)j);
    for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int j = 0; j < CHAINS; ++j) a[j] = _mm512_fmadd_ps(a[j], b, c);
    }
    float s = 0;
    for (int j = 0; j < CHAINS; ++j) s += _mm512_reduce_add_ps(a[j]);
    *sink = s;
    return (double)iters * CHAINS * 32;
}

__attribute__((target("avx2,fma"))) static double chains256(long iters, float * sink) {
    __m256 a[CHAINS];
    const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int j = 0; j < CHAINS; ++j) a[j] = _mm256_set1_ps((float)j);
    for (long i = 0; i < iters; ++i) {
#pragma GCC unroll 12
        for (int j = 0; j < CHAINS; ++j) a[j] = _mm256_fmadd_ps(a[j], b, c);
    }
    float lanes[8], s = 0;
    for (int j = 0; j < CHAINS; ++j) {
        _mm256_storeu_ps(lanes, a[j]);
        s += lanes[0];
    }
    *sink = s;
    return (double)iters * CHAINS * 16;
}

static int wide;

/* one thread: a short warm-up (wide vectors can start at a lower clock), then the timed run; writes
 * the thread's GFLOP/s */
static void * worker(void * out) {
    float sink;
    if (wide) chains512(ITERS / 10, &sink); else chains256(ITERS / 10, &sink);
    const double t0 = now();
    const double flops = wide ? chains512(ITERS, &sink) : chains256(ITERS, &sink);
    *(double *)out = flops / (now() - t0) / 1e9;
    return NULL;
}

int main(int argc, char ** argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 1;
    if (n < 1 || n > 1024) return 2;
    __builtin_cpu_init();
    wide = __builtin_cpu_supports("avx512f");
    if (!wide && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        printf("{\"error\": \"no AVX2 + FMA\"}\n");
        return 1;
    }
    pthread_t t[1024];
    double gflops[1024];
    for (int i = 0; i < n; ++i) pthread_create(&t[i], NULL, worker, &gflops[i]);
    double total = 0;
    for (int i = 0; i < n; ++i) {
        pthread_join(t[i], NULL);
        total += gflops[i];
    }
    printf("{\"isa\": \"%s\", \"flop_per_fma\": %d, \"threads\": %d, \"gflops\": %.1f}\n", wide ? "AVX-512" : "AVX2",
           wide ? 32 : 16, n, total);
    return 0;
}
