/* Templated bodies of cpu_kernels.c: included with T (float or double), SUFFIX(name), EXP_NEG,
 * SQRT and LOG defined. Every loop over a tile's columns is unit-stride so that it vectorizes. */

/* r2[j] = |a - z2[j0 + j]|^2 for the tile's m columns; a (D,), z2t (D, n2). */
static inline void SUFFIX(sq_dist)(const T *a, const T *z2t, long n2, long D, long j0, long m, T *r2) {
    for (long j = 0; j < m; j++) r2[j] = 0;
    for (long k = 0; k < D; k++) {
        const T ak = a[k];
        const T *col = z2t + k * n2 + j0;
        for (long j = 0; j < m; j++) {
            const T diff = ak - col[j];
            r2[j] += diff * diff;
        }
    }
}

/* In place: buf holds r2 on entry and k on exit; dk (if not NULL) gets dk/dr2 and da (if not
 * NULL, rq only) dk/dalpha. */
static void SUFFIX(profile)(int profile, T alpha, long m, T *buf, T *dk, T *da) {
    switch (profile) {
    case 0:
        for (long j = 0; j < m; j++) buf[j] = EXP_NEG((T)-0.5 * buf[j]);
        if (dk) for (long j = 0; j < m; j++) dk[j] = (T)-0.5 * buf[j];
        break;
    case 1:
        if (dk) for (long j = 0; j < m; j++) {
            const T r = SQRT(buf[j]);
            const T e = EXP_NEG(-r);
            dk[j] = r > 0 ? (T)-0.5 * e / (r > 0 ? r : (T)1) : (T)0;
            buf[j] = e;
        } else for (long j = 0; j < m; j++) buf[j] = EXP_NEG(-SQRT(buf[j]));
        break;
    case 2:
        for (long j = 0; j < m; j++) {
            const T s = SQRT((T)3 * buf[j]);
            const T e = EXP_NEG(-s);
            buf[j] = (1 + s) * e;
            if (dk) dk[j] = (T)-1.5 * e;
        }
        break;
    case 3:
        for (long j = 0; j < m; j++) {
            const T s = SQRT((T)5 * buf[j]);
            const T e = EXP_NEG(-s);
            buf[j] = (1 + s + s * s * ((T)1 / 3)) * e;
            if (dk) dk[j] = ((T)-5 / 6) * (1 + s) * e;
        }
        break;
    default: {
        const T half_inv = (T)0.5 / alpha;
        for (long j = 0; j < m; j++) {
            const T q = buf[j] * half_inv;
            const T lg = LOG(1 + q);
            const T k = EXP_NEG(-alpha * lg);
            buf[j] = k;
            if (dk) dk[j] = (T)-0.5 * k / (1 + q);
            if (da) da[j] = k * (q / (1 + q) - lg);
        }
    }
    }
}

/* ----- K @ V ------------------------------------------------------------------------------------- */
/* acc[r * t + c] += sum_j kbuf[r][j] vt[c, j0 + j] for the g rows of a group over m columns. */
static inline void SUFFIX(group_products)(T kbuf[GROUP][TILE], long g, const T *vt, long n2, long j0,
                                          long m, long t, T *acc) {
    if (g == GROUP) {
        const T *k0 = kbuf[0], *k1 = kbuf[1], *k2 = kbuf[2], *k3 = kbuf[3];
        for (long c = 0; c < t; c++) {
            const T *v = vt + c * n2 + j0;
            T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (long j = 0; j < m; j++) {
                const T vj = v[j];
                s0 += k0[j] * vj;
                s1 += k1[j] * vj;
                s2 += k2[j] * vj;
                s3 += k3[j] * vj;
            }
            acc[c] += s0;
            acc[t + c] += s1;
            acc[2 * t + c] += s2;
            acc[3 * t + c] += s3;
        }
        return;
    }
    for (long r = 0; r < g; r++) {
        const T *kr = kbuf[r];
        for (long c = 0; c < t; c++) {
            const T *v = vt + c * n2 + j0;
            T s = 0;
            for (long j = 0; j < m; j++) s += kr[j] * v[j];
            acc[r * t + c] += s;
        }
    }
}

/* Columns j0 .. j0 + m of the next tile for the rows of chunk [i0, i1). Symmetric tiles stop at
 * i1, so that each lies wholly inside the diagonal block or wholly beyond it. */
static inline long SUFFIX(tile_width)(long j0, long n2, long i1, int symmetric) {
    const long m = j0 + TILE <= n2 ? TILE : n2 - j0;
    return (symmetric && j0 < i1 && j0 + m > i1) ? i1 - j0 : m;
}

/* K(z1, z2) V by row chunks. Symmetric (z1 = z2, n1 = n2): each pair of chunks I < J evaluated
 * once, by chunk I's item, which adds K[I, J] V[J] to its own rows and K[I, J]^T V[I] to its
 * slot's column sums (cols (slots, B, t, n); see parallel_slots), which the caller adds up; the
 * diagonal blocks are evaluated whole. */
typedef struct {
    const T *z1, *z2t, *vt, *v, *alpha;  /* vt (B, t, n2); v (B, n1, t), symmetric only */
    T *out, *cols;                       /* out (B, n1, t); cols, symmetric only */
    long B, n1, n2, D, t, chunks;
    int profile, symmetric;
    volatile int failed;  /* set when a work item could not allocate its scratch memory */
} SUFFIX(kv_args);

static void SUFFIX(kv_item)(void *p, long item, int slot) {
    SUFFIX(kv_args) *a = (SUFFIX(kv_args) *)p;
    const long b = item / a->chunks, i0 = (item % a->chunks) * CHUNK;
    const long i1 = i0 + CHUNK < a->n1 ? i0 + CHUNK : a->n1;
    const long n2 = a->n2, D = a->D, t = a->t;
    const T *z1 = a->z1 + b * a->n1 * D, *z2t = a->z2t + b * D * n2, *vt = a->vt + b * t * n2;
    const T *v = a->symmetric ? a->v + b * a->n1 * t : NULL;
    const T alpha = a->alpha ? a->alpha[b] : (T)1;
    T *out = a->out + b * a->n1 * t;
    T *cols = a->symmetric ? a->cols + ((long)slot * a->B + b) * t * n2 : NULL;
    T kbuf[GROUP][TILE];
    T *acc = (T *)calloc((size_t)(GROUP * t), sizeof(T));
    if (!acc) {
        a->failed = 1;
        return;
    }
    for (long i = i0; i < i1; i += GROUP) {
        const long g = i + GROUP <= i1 ? GROUP : i1 - i;
        memset(acc, 0, sizeof(T) * (size_t)(GROUP * t));
        for (long j0 = a->symmetric ? i0 : 0, m; j0 < n2; j0 += m) {
            m = SUFFIX(tile_width)(j0, n2, i1, a->symmetric);
            for (long r = 0; r < g; r++) {
                SUFFIX(sq_dist)(z1 + (i + r) * D, z2t, n2, D, j0, m, kbuf[r]);
                SUFFIX(profile)(a->profile, alpha, m, kbuf[r], NULL, NULL);
            }
            SUFFIX(group_products)(kbuf, g, vt, n2, j0, m, t, acc);
            if (!a->symmetric || j0 < i1) continue;  /* beyond the diagonal block: the other side */
            for (long c = 0; c < t; c++) {
                T *col = cols + c * n2 + j0;
                if (g == GROUP) {
                    const T *k0 = kbuf[0], *k1 = kbuf[1], *k2 = kbuf[2], *k3 = kbuf[3];
                    const T v0 = v[i * t + c], v1 = v[(i + 1) * t + c];
                    const T v2 = v[(i + 2) * t + c], v3 = v[(i + 3) * t + c];
                    for (long j = 0; j < m; j++) col[j] += k0[j] * v0 + k1[j] * v1 + k2[j] * v2 + k3[j] * v3;
                } else {
                    for (long r = 0; r < g; r++) {
                        const T vr = v[(i + r) * t + c];
                        const T *kr = kbuf[r];
                        for (long j = 0; j < m; j++) col[j] += kr[j] * vr;
                    }
                }
            }
        }
        for (long r = 0; r < g; r++) memcpy(out + (i + r) * t, acc + r * t, sizeof(T) * (size_t)t);
    }
    free(acc);
}

int SUFFIX(flashgp_kv)(const T *z1, const T *z2t, const T *vt, const T *alpha, T *out, long B,
                       long n1, long n2, long D, long t, int profile, int threads) {
    const long chunks = (n1 + CHUNK - 1) / CHUNK;
    SUFFIX(kv_args) args = {z1, z2t, vt, NULL, alpha, out, NULL, B, n1, n2, D, t, chunks, profile, 0, 0};
    parallel_items(SUFFIX(kv_item), &args, B * chunks, threads);
    return args.failed;
}

int SUFFIX(flashgp_sym_kv)(const T *z, const T *zt, const T *vt, const T *v, const T *alpha, T *out,
                           T *cols, int slots, long B, long n, long D, long t, int profile, int threads) {
    const long chunks = (n + CHUNK - 1) / CHUNK;
    SUFFIX(kv_args) args = {z, zt, vt, v, alpha, out, cols, B, n, n, D, t, chunks, profile, 1, 0};
    parallel_slots(SUFFIX(kv_item), &args, B * chunks, slots, threads);
    return args.failed;
}

/* ----- kernel tiles: out (B, n1, n2) = k(r2), rows ldo >= n2 elements apart ------------------- */
typedef struct {
    const T *z1, *z2t, *alpha;
    T *out;
    long n1, n2, D, ldo, chunks;
    int profile;
} SUFFIX(tile_args);

static void SUFFIX(tile_item)(void *p, long item, int slot) {
    (void)slot;
    const SUFFIX(tile_args) *a = (const SUFFIX(tile_args) *)p;
    const long b = item / a->chunks, i0 = (item % a->chunks) * CHUNK;
    const long i1 = i0 + CHUNK < a->n1 ? i0 + CHUNK : a->n1;
    const long n2 = a->n2, D = a->D;
    const T *z1 = a->z1 + b * a->n1 * D, *z2t = a->z2t + b * D * n2;
    const T alpha = a->alpha ? a->alpha[b] : (T)1;
    for (long i = i0; i < i1; i++) {
        T *row = a->out + (b * a->n1 + i) * a->ldo;
        for (long j0 = 0; j0 < n2; j0 += TILE) {
            const long m = j0 + TILE <= n2 ? TILE : n2 - j0;
            SUFFIX(sq_dist)(z1 + i * D, z2t, n2, D, j0, m, row + j0);
            SUFFIX(profile)(a->profile, alpha, m, row + j0, NULL, NULL);
        }
    }
}

int SUFFIX(flashgp_tile)(const T *z1, const T *z2t, const T *alpha, T *out, long B, long n1,
                         long n2, long D, long ldo, int profile, int threads) {
    const long chunks = (n1 + CHUNK - 1) / CHUNK;
    SUFFIX(tile_args) args = {z1, z2t, alpha, out, n1, n2, D, ldo, chunks, profile};
    parallel_items(SUFFIX(tile_item), &args, B * chunks, threads);
    return 0;
}

/* ----- row sums of the bilinear gradient ------------------------------------------------------ *
 * W = u v^T, H = W * dk/dr2: h[a] = sum_b H_ab, hz[a, :] = sum_b H_ab z2[b, :], wk[a] = sum_b W_ab
 * K_ab, wda[a] = sum_b W_ab dK_ab/dalpha (rq). wk, wda may be NULL. */
typedef struct {
    const T *z1, *z2t, *u, *vt, *alpha;
    T *h, *hz, *wk, *wda;
    long n1, n2, D, t, chunks;
    int profile;
    volatile int failed;
} SUFFIX(grad_args);

static void SUFFIX(grad_item)(void *p, long item, int slot) {
    (void)slot;
    SUFFIX(grad_args) *a = (SUFFIX(grad_args) *)p;
    const long b = item / a->chunks, i0 = (item % a->chunks) * CHUNK;
    const long i1 = i0 + CHUNK < a->n1 ? i0 + CHUNK : a->n1;
    const long n2 = a->n2, D = a->D, t = a->t;
    const T *z1 = a->z1 + b * a->n1 * D, *z2t = a->z2t + b * D * n2, *vt = a->vt + b * t * n2;
    const T *u = a->u + b * a->n1 * t;
    const T alpha = a->alpha ? a->alpha[b] : (T)1;
    const int rq = a->profile == 4 && a->wda != NULL;
    T kb[TILE], dkb[TILE], dab[TILE], w[TILE];
    T *hz = (T *)malloc(sizeof(T) * (size_t)D);
    if (!hz) {
        a->failed = 1;
        return;
    }
    for (long i = i0; i < i1; i++) {
        T h = 0, wk = 0, wda = 0;
        for (long k = 0; k < D; k++) hz[k] = 0;
        const T *ui = u + i * t;
        for (long j0 = 0; j0 < n2; j0 += TILE) {
            const long m = j0 + TILE <= n2 ? TILE : n2 - j0;
            SUFFIX(sq_dist)(z1 + i * D, z2t, n2, D, j0, m, kb);
            SUFFIX(profile)(a->profile, alpha, m, kb, dkb, rq ? dab : NULL);
            for (long j = 0; j < m; j++) w[j] = 0;
            for (long c = 0; c < t; c++) {
                const T uc = ui[c];
                const T *v = vt + c * n2 + j0;
                for (long j = 0; j < m; j++) w[j] += uc * v[j];
            }
            for (long j = 0; j < m; j++) {
                wk += w[j] * kb[j];
                dkb[j] *= w[j];
                h += dkb[j];
            }
            if (rq) for (long j = 0; j < m; j++) wda += w[j] * dab[j];
            for (long k = 0; k < D; k++) {
                const T *col = z2t + k * n2 + j0;
                T s = 0;
                for (long j = 0; j < m; j++) s += dkb[j] * col[j];
                hz[k] += s;
            }
        }
        const long row = b * a->n1 + i;
        a->h[row] = h;
        memcpy(a->hz + row * D, hz, sizeof(T) * (size_t)D);
        if (a->wk) a->wk[row] = wk;
        if (a->wda) a->wda[row] = wda;
    }
    free(hz);
}

int SUFFIX(flashgp_grad)(const T *z1, const T *z2t, const T *u, const T *vt, const T *alpha,
                         T *h, T *hz, T *wk, T *wda, long B, long n1, long n2, long D, long t,
                         int profile, int threads) {
    const long chunks = (n1 + CHUNK - 1) / CHUNK;
    SUFFIX(grad_args) args = {z1, z2t, u, vt, alpha, h, hz, wk, wda, n1, n2, D, t, chunks, profile, 0};
    parallel_items(SUFFIX(grad_item), &args, B * chunks, threads);
    return args.failed;
}
