/* Templated body of cpu_kernels.c for the gradient of the symmetric K(z, z): each pair of row
 * chunks (I < J) is evaluated once, by the work item of chunk I, which adds to its own rows' sums
 * and to its slot's column sums (see parallel_slots and flashgp_sym_kv); the diagonal block
 * K[I, I] is evaluated whole by its item. Included after cpu_kernels_body.h with the same macros. */

/* ----- row sums of the bilinear gradient for a symmetric W = u v^T ------------------------------ *
 * The row sums of flashgp_grad(z, z, u, v) when u v^T is symmetric (as [u w][w u]^T is), each
 * pair evaluated once: cols (slots, B, D + 3, n) gets the column sides of h, wk, wda, hz. */
typedef struct {
    const T *z, *zt, *u, *vt, *alpha;
    T *h, *hz, *wk, *wda, *cols;
    long B, n, D, t, chunks;
    int profile;
    volatile int failed;
} SUFFIX(sgrad_args);

static void SUFFIX(sgrad_item)(void *p, long item, int slot) {
    SUFFIX(sgrad_args) *a = (SUFFIX(sgrad_args) *)p;
    const long b = item / a->chunks, i0 = (item % a->chunks) * CHUNK;
    const long n = a->n, D = a->D, t = a->t;
    const long i1 = i0 + CHUNK < n ? i0 + CHUNK : n;
    const T *z = a->z + b * n * D, *zt = a->zt + b * D * n, *vt = a->vt + b * t * n;
    const T *u = a->u + b * n * t;
    const T alpha = a->alpha ? a->alpha[b] : (T)1;
    const int rq = a->profile == 4 && a->wda != NULL;
    T *cols = a->cols + ((long)slot * a->B + b) * (D + 3) * n;
    T *col_h = cols, *col_wk = cols + n, *col_wda = cols + 2 * n, *col_hz = cols + 3 * n;
    T kb[GROUP][TILE], dkb[GROUP][TILE], dab[GROUP][TILE], w[GROUP][TILE];
    T *hz = (T *)malloc(sizeof(T) * (size_t)(GROUP * D));
    if (!hz) {
        a->failed = 1;
        return;
    }
    for (long i = i0; i < i1; i += GROUP) {
        const long g = i + GROUP <= i1 ? GROUP : i1 - i;
        T h[GROUP] = {0}, wk[GROUP] = {0}, wda[GROUP] = {0};
        for (long k = 0; k < GROUP * D; k++) hz[k] = 0;
        for (long j0 = i0, m; j0 < n; j0 += m) {
            m = SUFFIX(tile_width)(j0, n, i1, 1);
            for (long r = 0; r < g; r++) {
                SUFFIX(sq_dist)(z + (i + r) * D, zt, n, D, j0, m, kb[r]);
                SUFFIX(profile)(a->profile, alpha, m, kb[r], dkb[r], rq ? dab[r] : NULL);
            }
            /* w[r][j] = u[i + r] . v[j0 + j] (W is symmetric); each column of v loaded once per group */
            for (long r = 0; r < g; r++) for (long j = 0; j < m; j++) w[r][j] = 0;
            for (long c = 0; c < t; c++) {
                const T *vc = vt + c * n + j0;
                if (g == GROUP) {
                    const T u0 = u[i * t + c], u1 = u[(i + 1) * t + c];
                    const T u2 = u[(i + 2) * t + c], u3 = u[(i + 3) * t + c];
                    for (long j = 0; j < m; j++) {
                        const T vj = vc[j];
                        w[0][j] += u0 * vj;
                        w[1][j] += u1 * vj;
                        w[2][j] += u2 * vj;
                        w[3][j] += u3 * vj;
                    }
                } else {
                    for (long r = 0; r < g; r++) {
                        const T ur = u[(i + r) * t + c];
                        for (long j = 0; j < m; j++) w[r][j] += ur * vc[j];
                    }
                }
            }
            for (long r = 0; r < g; r++) {
                T sh = 0, swk = 0;
                for (long j = 0; j < m; j++) {
                    kb[r][j] *= w[r][j];   /* W K */
                    dkb[r][j] *= w[r][j];  /* H = W dk/dr2 */
                    swk += kb[r][j];
                    sh += dkb[r][j];
                }
                h[r] += sh;
                wk[r] += swk;
                if (rq) {
                    T s = 0;
                    for (long j = 0; j < m; j++) {
                        dab[r][j] *= w[r][j];
                        s += dab[r][j];
                    }
                    wda[r] += s;
                }
                for (long k = 0; k < D; k++) {
                    const T *zk = zt + k * n + j0;
                    T s = 0;
                    for (long j = 0; j < m; j++) s += dkb[r][j] * zk[j];
                    hz[r * D + k] += s;
                }
            }
            if (j0 < i1) continue;  /* the diagonal block: its rows see every entry above */
            for (long r = 0; r < g; r++) {
                const T *zr = z + (i + r) * D;
                for (long j = 0; j < m; j++) {
                    col_h[j0 + j] += dkb[r][j];
                    col_wk[j0 + j] += kb[r][j];
                }
                if (rq) for (long j = 0; j < m; j++) col_wda[j0 + j] += dab[r][j];
                for (long k = 0; k < D; k++) {
                    const T zrk = zr[k];
                    T *ck = col_hz + k * n + j0;
                    for (long j = 0; j < m; j++) ck[j] += dkb[r][j] * zrk;
                }
            }
        }
        for (long r = 0; r < g; r++) {
            const long row = b * n + i + r;
            a->h[row] = h[r];
            memcpy(a->hz + row * D, hz + r * D, sizeof(T) * (size_t)D);
            if (a->wk) a->wk[row] = wk[r];
            if (a->wda) a->wda[row] = wda[r];
        }
    }
    free(hz);
}

int SUFFIX(flashgp_sym_grad)(const T *z, const T *zt, const T *u, const T *vt, const T *alpha, T *h,
                             T *hz, T *wk, T *wda, T *cols, int slots, long B, long n, long D, long t,
                             int profile, int threads) {
    const long chunks = (n + CHUNK - 1) / CHUNK;
    SUFFIX(sgrad_args) args = {z, zt, u, vt, alpha, h, hz, wk, wda, cols, B, n, D, t, chunks, profile, 0};
    parallel_slots(SUFFIX(sgrad_item), &args, B * chunks, slots, threads);
    return args.failed;
}

