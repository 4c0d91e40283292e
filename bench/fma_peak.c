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

/* One function per vector width: `iters` rounds of CHAINS independent FMAs; returns the FLOPs done
 * (2 per lane per FMA). The sum written to `sink` keeps the compiler from dropping the chains. */
#define FMA_CHAINS(NAME, TARGET, VEC, SET1, FMA, STORE, LANES)                          \
    __attribute__((target(TARGET))) static double NAME(long iters, float * sink) {      \
        VEC a[CHAINS];                                                                  \
        const VEC b = SET1(0.999999f), c = SET1(1e-7f);                                 \
        for (int j = 0; j < CHAINS; ++j) a[j] = SET1((float)j);                         \
        for (long i = 0; i < iters; ++i) {                                              \
            _Pragma("GCC unroll 12") for (int j = 0; j < CHAINS; ++j) a[j] = FMA(a[j], b, c); \
        }                                                                               \
        float lanes[LANES], s = 0;                                                      \
        for (int j = 0; j < CHAINS; ++j) {                                              \
            STORE(lanes, a[j]);                                                         \
            s += lanes[0];                                                              \
        }                                                                               \
        *sink = s;                                                                      \
        return (double)iters * CHAINS * LANES * 2;                                      \
    }

FMA_CHAINS(chains512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, 16)
FMA_CHAINS(chains256, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, 8)

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
