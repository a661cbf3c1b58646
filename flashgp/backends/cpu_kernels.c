/* Fused CPU kernels for stationary kernels: K(z1, z2) @ V, kernel tiles and the row sums of the
 * analytic bilinear gradient, computed tile by tile without storing K, threaded over row chunks.
 *
 * Compiled at first use by flashgp/backends/cpu_native.py (gcc or cc, -O3, loaded through ctypes);
 * the templated bodies live in cpu_kernels_body.h, included once for float and once for double.
 * Layouts (all contiguous, row-major): z1 (B, n1, D); z2t (B, D, n2) (z2 transposed, so that the
 * loops over columns are unit-stride and vectorize); vt (B, t, n2); u (B, n1, t); alpha (B,) or
 * NULL. Profiles (unit outputscale, r2 the squared distance of lengthscale-scaled inputs):
 *   0 rbf       k = exp(-r2 / 2)
 *   1 matern12  k = exp(-r)                        dk/dr2 = -exp(-r) / (2 r), 0 at r = 0
 *   2 matern32  k = (1 + s) exp(-s), s = sqrt(3 r2)
 *   3 matern52  k = (1 + s + s^2 / 3) exp(-s), s = sqrt(5 r2)
 *   4 rq        k = (1 + r2 / (2 alpha))^-alpha
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TILE 256     /* columns per tile: a few tiles of r2, k, dk stay in L1 */
#define GROUP 4      /* rows evaluated together (each column of V is loaded once per group) */
#define CHUNK 32     /* rows per work item handed to a thread */
#define MAX_THREADS 256

/* exp(x) for x <= 0: Cody-Waite reduction by ln 2 and Cephes' minimax polynomials (float) or
 * rational function (double); written out so that the loops calling them vectorize. Arguments
 * below the clamp give a tiny positive value instead of 0 (the kernels never need subnormals). */
static inline float exp_neg_f(float x) {
    x = x < -87.0f ? -87.0f : x;
    float n = rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

static inline double exp_neg_d(double x) {
    x = x < -708.0 ? -708.0 : x;
    double n = rint(x * 1.4426950408889634074);
    double r = x - n * 6.93145751953125e-1;
    r = r - n * 1.42860682030941723212e-6;
    double rr = r * r;
    double px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                     + 9.99999999999999999910e-1);
    double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
    double e = 1.0 + 2.0 * px / (q - px);
    int64_t bits = ((int64_t)n + 1023) << 52;
    double s;
    memcpy(&s, &bits, sizeof s);
    return e * s;
}

/* ----- threads ---------------------------------------------------------------------------------- *
 * parallel_items: work items 0 .. n - 1 spread over the workers, interleaved; each item is told
 * its worker's number. parallel_slots: items go to `slots` fixed slots (item i to slot i % slots),
 * each slot's items run in ascending order on one worker, and an item is told its slot, which
 * owns any scratch output (column sums): what each slot sums, and in what order, is then the
 * same whatever the number of threads, so results are bit-identical across thread counts. */
typedef void (*item_fn)(void *arg, long item, int slot);

typedef struct {
    item_fn fn;
    void *arg;
    long items;
    int threads, id, slots;
} worker_t;

static void *run_worker(void *p) {
    worker_t *w = (worker_t *)p;
    if (w->slots == 0) {
        for (long i = w->id; i < w->items; i += w->threads) w->fn(w->arg, i, w->id);
        return NULL;
    }
    for (int s = w->id; s < w->slots; s += w->threads)
        for (long i = s; i < w->items; i += w->slots) w->fn(w->arg, i, s);
    return NULL;
}

static void run_parallel(item_fn fn, void *arg, long items, int slots, int threads) {
    const long units = slots ? slots : items;
    if (threads > units) threads = (int)units;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    pthread_t ids[MAX_THREADS];
    worker_t workers[MAX_THREADS];
    int started = 0;
    for (int k = 0; k < threads; k++) workers[k] = (worker_t){fn, arg, items, threads, k, slots};
    for (int k = 1; k < threads; k++) {
        if (pthread_create(&ids[k], NULL, run_worker, &workers[k]) != 0) break;
        started = k;
    }
    for (int k = started + 1; k < threads; k++) run_worker(&workers[k]);  /* threads not started */
    run_worker(&workers[0]);
    for (int k = 1; k <= started; k++) pthread_join(ids[k], NULL);
}

static void parallel_items(item_fn fn, void *arg, long items, int threads) {
    run_parallel(fn, arg, items, 0, threads);
}

static void parallel_slots(item_fn fn, void *arg, long items, int slots, int threads) {
    run_parallel(fn, arg, items, slots, threads);
}

/* ----- the templated bodies, once per precision ------------------------------------------------ */
#define T float
#define SUFFIX(name) name##_f
#define EXP_NEG exp_neg_f
#define SQRT sqrtf
#define LOG logf
#include "cpu_kernels_body.h"
#include "cpu_kernels_sym.h"
#undef T
#undef SUFFIX
#undef EXP_NEG
#undef SQRT
#undef LOG

#define T double
#define SUFFIX(name) name##_d
#define EXP_NEG exp_neg_d
#define SQRT sqrt
#define LOG log
#include "cpu_kernels_body.h"
#include "cpu_kernels_sym.h"

int flashgp_cpu_abi(void) { return 6; }
