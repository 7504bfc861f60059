/* The sampler's CPU accumulation kernel: monomial sums over a batch of networks.
 *
 * Compiled at first use by nngp_ppl/_native.py (the system C compiler, -O3 -ffp-contract=off)
 * and called through ctypes; nngp_ppl/_native.py builds every table passed here and
 * states the numerics. Per block of NB networks:
 *
 *   1. each network's row of the scratch matrix MT (NB x TP, float64) holds its k outputs
 *      (columns 0..k-1) and then its T materialised products (orders 2, 4, .., columns
 *      k..k+T-1; with odd orders 1, 2, 3, .., order 1 a copy of the outputs), built in
 *      lexicographic tuple order from segments: a segment multiplies
 *      one earlier column (the leading pair's product, or an output) into a contiguous run
 *      of earlier columns (the tails whose first index is >= the pair's second index);
 *   2. each product column's sum, sum of cubes and of fourth powers (and of squares) over
 *      the block, in float64;
 *   3. the covariance-only orders from S, a float32 copy of MT: for each group of tile
 *      rows, acc[o + i*npad + j] += sum_b S[b][prefix_i] S[b][t0 + j], with the prefix and
 *      suffix split of nngp_ppl._shard's module docstring; j runs to npad (a multiple of
 *      8), and the padding entries are never read back.
 *
 * Summation order is fixed by the code and the tables, so a batch's sums are the same bit
 * for bit on every run of the same binary. B must be a multiple of NB.
 */
#include <stdint.h>

#define NB 16 /* networks per block */

typedef double v8d __attribute__((vector_size(64)));

static inline v8d load8(const double *p) { v8d v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void store8(double *p, v8d v) { __builtin_memcpy(p, &v, sizeof v); }

typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef double v4d __attribute__((vector_size(32)));

static inline v16f load16f(const float *p) { v16f v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline v8f load8f(const float *p) { v8f v; __builtin_memcpy(&v, p, sizeof v); return v; }

/* out[8 doubles] += v (8 floats) */
static inline void add8f(double *o, v8f v)
{
    store8(o, load8(o) + __builtin_convertvector(v, v8d));
}

/* out[r*npad + W v + l] += sum_b S[b][pre[r]] S[b][t + W v + l] for r < R, v < V, l < W
 * (W = 16 floats, or 8 for the half tile), S the float32 copy of the products. Even and
 * odd b go to separate partial sums (2 R V independent FMA chains). The float32 sums run
 * over the NB networks of a block only and are added to the float64 out. */
#define TILE(R, V)                                                                         \
    static inline void tile_##R##_##V(const float *restrict S, int64_t TP,                 \
                                      const int64_t *pre, int64_t t, double *restrict out, \
                                      int64_t npad)                                        \
    {                                                                                      \
        v16f c[R][V], e[R][V];                                                             \
        for (int r = 0; r < R; r++)                                                        \
            for (int v = 0; v < V; v++) c[r][v] = e[r][v] = (v16f){0};                     \
        for (int b = 0; b < NB; b += 2) {                                                  \
            const float *row = S + b * TP, *next = row + TP;                               \
            v16f x[V], y[V];                                                               \
            for (int v = 0; v < V; v++) {                                                  \
                x[v] = load16f(row + t + 16 * v);                                          \
                y[v] = load16f(next + t + 16 * v);                                         \
            }                                                                              \
            for (int r = 0; r < R; r++) {                                                  \
                const float s = row[pre[r]], s2 = next[pre[r]];                            \
                for (int v = 0; v < V; v++) {                                              \
                    c[r][v] += s * x[v];                                                   \
                    e[r][v] += s2 * y[v];                                                  \
                }                                                                          \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < R; r++)                                                        \
            for (int v = 0; v < V; v++) {                                                  \
                const v16f sum = c[r][v] + e[r][v];                                        \
                double *o = out + r * npad + 16 * v;                                       \
                add8f(o, (v8f){sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6], sum[7]}); \
                add8f(o + 8, (v8f){sum[8], sum[9], sum[10], sum[11], sum[12], sum[13], sum[14], \
                                   sum[15]});                                              \
            }                                                                              \
    }

#define HALF(R)                                                                            \
    static inline void half_##R(const float *restrict S, int64_t TP, const int64_t *pre,   \
                                int64_t t, double *restrict out, int64_t npad)             \
    {                                                                                      \
        v8f c[R], e[R];                                                                    \
        for (int r = 0; r < R; r++) c[r] = e[r] = (v8f){0};                                \
        for (int b = 0; b < NB; b += 2) {                                                  \
            const float *row = S + b * TP, *next = row + TP;                               \
            const v8f x = load8f(row + t), y = load8f(next + t);                           \
            for (int r = 0; r < R; r++) {                                                  \
                c[r] += row[pre[r]] * x;                                                   \
                e[r] += next[pre[r]] * y;                                                  \
            }                                                                              \
        }                                                                                  \
        for (int r = 0; r < R; r++) add8f(out + r * npad, c[r] + e[r]);                    \
    }
TILE(4, 2)
TILE(4, 1)
TILE(3, 2)
TILE(3, 1)
TILE(2, 2)
TILE(2, 1)
TILE(1, 2)
TILE(1, 1)
HALF(4)
HALF(3)
HALF(2)
HALF(1)

#define ROWS(R)                                                                            \
    do {                                                                                   \
        int64_t j = 0;                                                                     \
        for (; j + 32 <= npad; j += 32)                                                    \
            tile_##R##_2(S, TP, pre + i, t0 + j, out + i * npad + j, npad);               \
        for (; j + 16 <= npad; j += 16)                                                    \
            tile_##R##_1(S, TP, pre + i, t0 + j, out + i * npad + j, npad);               \
        if (j < npad) half_##R(S, TP, pre + i, t0 + j, out + i * npad + j, npad);         \
    } while (0)

int64_t nngp_block_size(void) { return NB; }

/* f: B x k float32 outputs (row-major), each input a scaled by scale[a] (an exact power
 * of two); mseg: 4 per segment (dst column, src column, length, scalar column, or -1 for
 * a plain copy: the order-1 products of plans with odd orders); grp: 5 per
 * group (first prefix entry, prefix count, first suffix column, npad, acc offset); prefix:
 * the prefixes' product columns, group by group. The batch's sums go to buf, laid out as
 * [mom (TV) | cubes (TV) | fourth powers (TV) | squares (TV, if with_squares) | acc (nacc)]
 * with TV = T rounded up to 8 and every product indexed by (column - k); buf is zeroed
 * first, so a batch is summed from zero, and then added to total (same layout) unless
 * total is NULL. */
/* One clone per vector ISA, chosen at load time by the dynamic loader (GCC/Clang
 * target_clones, x86-64 with ifunc support; -DNNGP_NO_CLONES builds the generic one only).
 * Built with -ffp-contract=off and without -ffast-math, every clone performs the same
 * IEEE operations in the same order (the vector types fix the lanes, nothing is fused or
 * reassociated), so the sums are the same bit for bit whichever clone runs. */
#if defined(__x86_64__) && !defined(NNGP_NO_CLONES)
#define NNGP_CLONES __attribute__((flatten, target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NNGP_CLONES __attribute__((flatten))
#endif

NNGP_CLONES
void nngp_accumulate(int64_t B, int64_t k, const float *restrict f,
                     const double *restrict scale, int64_t T,
                     int64_t nmseg, const int64_t *restrict mseg, int64_t ngroups,
                     const int64_t *restrict grp, const int64_t *restrict prefix,
                     int64_t with_squares, int64_t nacc, double *restrict buf,
                     double *restrict total, double *restrict MT, float *restrict S,
                     int64_t TP)
{
    const int64_t TV = (T + 7) / 8 * 8;
    const int64_t nbuf = (with_squares ? 4 : 3) * TV + nacc;
    double *mom = buf, *tails = buf + TV, *squares = with_squares ? buf + 3 * TV : 0;
    double *acc = buf + (with_squares ? 4 : 3) * TV;
    for (int64_t i = 0; i < nbuf; i++) buf[i] = 0.0;
    for (int64_t base = 0; base + NB <= B; base += NB) {
        for (int b = 0; b < NB; b++)
            for (int64_t a = 0; a < k; a++)
                MT[b * TP + a] = (double)f[(base + b) * k + a] * scale[a];
        for (int64_t s = 0; s < nmseg; s++) {
            /* whole vectors: the up to 7 extra columns written belong to later segments
             * (or the padding), which are written after this one; the same segment for
             * every network in turn keeps the loop's trip count predictable */
            const int64_t dst = mseg[4 * s], src = mseg[4 * s + 1], len = mseg[4 * s + 2];
            const int64_t col = mseg[4 * s + 3];
            for (int b = 0; b < NB; b++) {
                double *row = MT + b * TP;
                const double x = col < 0 ? 1.0 : row[col]; /* col -1: a copy (order 1) */
                for (int64_t j = 0; j < len; j += 8) store8(row + dst + j, x * load8(row + src + j));
            }
        }
        for (int64_t r = 0; r < TV; r += 8) {
            v8d s1 = {0}, s2 = {0}, s3 = {0}, s4 = {0};
            for (int b = 0; b < NB; b++) {
                const v8d x = load8(MT + b * TP + k + r), x2 = x * x;
                s1 += x;
                s2 += x2;
                s3 += x2 * x;
                s4 += x2 * x2;
            }
            store8(mom + r, load8(mom + r) + s1);
            store8(tails + r, load8(tails + r) + s3);
            store8(tails + TV + r, load8(tails + TV + r) + s4);
            if (squares) store8(squares + r, load8(squares + r) + s2);
        }
        if (ngroups) /* float32 copy of the products for the covariance-only orders */
            for (int b = 0; b < NB; b++)
                for (int64_t c = 0; c < TP; c++) S[b * TP + c] = (float)MT[b * TP + c];
        for (int64_t g = 0; g < ngroups; g++) {
            const int64_t *pre = prefix + grp[5 * g], ns = grp[5 * g + 1];
            const int64_t t0 = grp[5 * g + 2], npad = grp[5 * g + 3];
            double *out = acc + grp[5 * g + 4];
            int64_t i = 0;
            for (; i + 4 <= ns; i += 4) ROWS(4);
            if (ns - i == 3) ROWS(3);
            else if (ns - i == 2) ROWS(2);
            else if (ns - i == 1) ROWS(1);
        }
    }
    if (total)
        for (int64_t i = 0; i < nbuf; i++) total[i] += buf[i];
}
