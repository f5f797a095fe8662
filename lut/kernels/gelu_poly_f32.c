/* gelu-quant reference kernel: piecewise polynomial GELU in float32. See gelu_poly_f32.h. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "gelu_poly_f32.h"

#include <math.h>
#include <stdint.h>

#if defined(__AVX512F__) && !defined(GELU_POLY_NO_SIMD)
#define GELU_POLY_F32_AVX512 1
#include <immintrin.h>
#elif defined(__AVX2__) && !defined(GELU_POLY_NO_SIMD)
#define GELU_POLY_F32_AVX2 1
#include <immintrin.h>
#endif

/* #{ j : base[j] <= x } for the ascending array base[0..m): a branchless upper bound. */
static size_t gelu_poly_f32_segment(float x, const float *base, size_t m)
{
    const float *b = base;
    while (m > 1) {
        const size_t half = m / 2;
        b = (b[half] <= x) ? b + half : b;
        m -= half;
    }
    return (size_t)(b - base) + (size_t)(m == 1 && b[0] <= x);
}

/* One value at a time: the tail of the blocked loop and of the SIMD paths. */
static void gelu_poly_f32_one_by_one(const float *in, float *out, size_t n, size_t segments,
                                     size_t degree, const float *breakpoints,
                                     const float *origins, const float *coefficients)
{
    const float lo = breakpoints[0];
    const float hi = breakpoints[segments];
    const size_t stride = degree + 1;
    size_t i;
    for (i = 0; i < n; i++) {
        const float x = in[i];
        if (x != x || x > hi) {
            out[i] = x; /* NaN keeps its bits; GELU(x) -> x above the range */
        } else if (x < lo) {
            out[i] = 0.0f;
        } else {
            const size_t k = gelu_poly_f32_segment(x, breakpoints + 1, segments - 1);
            const float *c = coefficients + k * stride;
            const float t = x - origins[k];
            float acc = c[degree];
            size_t j = degree;
            while (j-- > 0) {
                acc = acc * t;
                acc = acc + c[j];
            }
            out[i] = acc;
        }
    }
}

/* The portable loop: GELU_POLY_F32_BLOCK values at a time, stage by stage, so that their
 * dependency chains (segment index, Horner) interleave instead of running one after the
 * other, and so that the compiler vectorises the stages without intrinsics (gcc -O2 does with
 * SSE2: fixed-size local arrays, no branches; every value runs the whole sequence and the
 * tails are chosen at the end). Per value the same float32 operations in the same order as
 * gelu_poly_f32_one_by_one, so the same bits. Origins and coefficients are copied once per
 * call into a structure of arrays on the stack (row 0 origins, row 1 + j coefficient j, one
 * column per segment: a lane's k indexes every row). Declines (returns 0) above
 * GELU_POLY_F32_BLOCK_SEGMENTS segments or GELU_POLY_F32_BLOCK_DEGREE.
 *
 * The segment k = #{ j in 1..K-1 : x >= b[j] } comes from one of two exact methods:
 *
 * - counting: K - 1 compares per value against the breakpoints (repeated across the lanes in
 *   a stack table, so that each compare loads a whole vector); for few segments or short n;
 * - grid: cell(v) = min(max((v - b[0]) * s, 0), G - 1) truncated, s = G / (b[K] - b[0]), is
 *   non-decreasing in v (each float32 step is), NaN -> 0. So for cell(x) = c every inner
 *   breakpoint with cell(b[j]) < c is <= x and every one with cell(b[j]) > c is > x: with at
 *   most one breakpoint per cell, k = base[c] + (x >= probe[c]), base[c] the number of inner
 *   breakpoints in cells below c and probe[c] the one in cell c (NaN, never <= x, if none).
 *   Built per call on the stack; a cell holding two breakpoints falls back to counting. */
#define GELU_POLY_F32_BLOCK 4
#define GELU_POLY_F32_BLOCK_SEGMENTS 64
#define GELU_POLY_F32_BLOCK_DEGREE 8
#define GELU_POLY_F32_GRID 256
#define GELU_POLY_F32_GRID_MIN_SEGMENTS 9 /* counting below */
#define GELU_POLY_F32_GRID_MIN_N 1024     /* the grid's set-up pays off from here */

static float gelu_poly_f32_cell_of(float v, float lo, float scale)
{
    float u = (v - lo) * scale;
    u = u >= 0.0f ? u : 0.0f; /* and NaN -> 0 */
    return u < (float)(GELU_POLY_F32_GRID - 1) ? u : (float)(GELU_POLY_F32_GRID - 1);
}

/* base[] and probe[] of the grid; 0 when a cell holds two breakpoints or s is unusable. */
static int gelu_poly_f32_grid(const float *breakpoints, size_t segments, float scale,
                              uint8_t base[GELU_POLY_F32_GRID], float probe[GELU_POLY_F32_GRID])
{
    uint8_t used[GELU_POLY_F32_GRID];
    size_t c, j;
    unsigned below = 0;
    if (!(scale > 0.0f && scale < 3.0e38f)) {
        return 0;
    }
    for (c = 0; c < GELU_POLY_F32_GRID; c++) {
        used[c] = 0;
        probe[c] = NAN;
    }
    for (j = 1; j < segments; j++) {
        c = (size_t)(int32_t)gelu_poly_f32_cell_of(breakpoints[j], breakpoints[0], scale);
        if (used[c]) {
            return 0;
        }
        used[c] = 1;
        probe[c] = breakpoints[j];
    }
    for (c = 0; c < GELU_POLY_F32_GRID; c++) {
        base[c] = (uint8_t)below;
        below += used[c];
    }
    return 1;
}

static size_t gelu_poly_f32_blocked(const float *in, float *out, size_t n, size_t segments,
                                    size_t degree, const float *breakpoints,
                                    const float *origins, const float *coefficients)
{
    float bpv[GELU_POLY_F32_BLOCK_SEGMENTS][GELU_POLY_F32_BLOCK];
    float soa[GELU_POLY_F32_BLOCK_DEGREE + 2][GELU_POLY_F32_BLOCK_SEGMENTS];
    uint8_t base[GELU_POLY_F32_GRID];
    float probe[GELU_POLY_F32_GRID];
    const float lo = breakpoints[0];
    const float hi = breakpoints[segments];
    const float scale = (float)GELU_POLY_F32_GRID / (hi - lo);
    size_t i = 0, j, l;
    int grid = 0;
    if (segments > GELU_POLY_F32_BLOCK_SEGMENTS || degree > GELU_POLY_F32_BLOCK_DEGREE ||
        n < GELU_POLY_F32_BLOCK) {
        return 0;
    }
    if (segments >= GELU_POLY_F32_GRID_MIN_SEGMENTS && n >= GELU_POLY_F32_GRID_MIN_N) {
        grid = gelu_poly_f32_grid(breakpoints, segments, scale, base, probe);
    }
    for (j = 0; j < segments; j++) {
        for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
            bpv[j][l] = breakpoints[j];
        }
        soa[0][j] = origins[j];
        for (l = 0; l <= degree; l++) {
            soa[1 + l][j] = coefficients[j * (degree + 1) + l];
        }
    }
    for (; i + GELU_POLY_F32_BLOCK <= n; i += GELU_POLY_F32_BLOCK) {
        float x[GELU_POLY_F32_BLOCK], t[GELU_POLY_F32_BLOCK], acc[GELU_POLY_F32_BLOCK];
        float c[GELU_POLY_F32_BLOCK];
        uint32_t k[GELU_POLY_F32_BLOCK];
        for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
            x[l] = in[i + l];
        }
        if (grid) {
            uint32_t cell[GELU_POLY_F32_BLOCK];
            for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
                cell[l] = (uint32_t)(int32_t)gelu_poly_f32_cell_of(x[l], lo, scale);
            }
            for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
                k[l] = (uint32_t)base[cell[l]] + (uint32_t)(x[l] >= probe[cell[l]]);
            }
        } else {
            for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
                k[l] = 0;
            }
            for (j = 1; j < segments; j++) {
                for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
                    k[l] += (uint32_t)(x[l] >= bpv[j][l]); /* NaN: 0 (the result is x) */
                }
            }
        }
        for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
            t[l] = soa[0][k[l]];
            acc[l] = soa[1 + degree][k[l]];
        }
        for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
            t[l] = x[l] - t[l];
        }
        for (j = degree; j-- > 0;) {
            for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
                c[l] = soa[1 + j][k[l]];
            }
            for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
                acc[l] = acc[l] * t[l];
                acc[l] = acc[l] + c[l];
            }
        }
        for (l = 0; l < GELU_POLY_F32_BLOCK; l++) {
            /* NaN or above the range: x itself; below: +0 */
            const float y = x[l] < lo ? 0.0f : acc[l];
            out[i + l] = (x[l] > hi || x[l] != x[l]) ? x[l] : y;
        }
    }
    return i;
}

#if defined(GELU_POLY_F32_AVX512)
#define GELU_POLY_F32_SIMD_MAX_SEGMENTS 64
#define GELU_POLY_F32_MAX_DEGREE 8

/* 16 lanes at a time for K <= 64 segments: the segment index counts the inner breakpoints
 * <= x (vector compares), origins and coefficients come from per-coefficient tables by
 * vpermps (K <= 16), vpermi2ps (K <= 32) or two vpermi2ps and a blend on k >= 32 (K <= 64),
 * Horner is separate vmulps / vaddps (IEEE, rounded to float32, no FMA), and the tails and
 * NaNs are blended in by masks. Lane by lane the same operations as the scalar loop, so the
 * same bits. */
static size_t gelu_poly_f32_avx512(const float *in, float *out, size_t n, size_t segments,
                                   size_t degree, const float *breakpoints, const float *origins,
                                   const float *coefficients)
{
    float tab[GELU_POLY_F32_MAX_DEGREE + 2][GELU_POLY_F32_SIMD_MAX_SEGMENTS];
    __m512 tq[4][GELU_POLY_F32_MAX_DEGREE + 2]; /* entries 0-15, 16-31, 32-47, 48-63 */
    const size_t stride = degree + 1;
    size_t i = 0, j, k;
    if (segments > GELU_POLY_F32_SIMD_MAX_SEGMENTS || degree > GELU_POLY_F32_MAX_DEGREE) {
        return 0;
    }
    /* row 0: origins; row 1 + j: coefficient j; unused segments repeat segment 0 */
    for (k = 0; k < GELU_POLY_F32_SIMD_MAX_SEGMENTS; k++) {
        const size_t kk = k < segments ? k : 0;
        tab[0][k] = origins[kk];
        for (j = 0; j <= degree; j++) {
            tab[1 + j][k] = coefficients[kk * stride + j];
        }
    }
    for (j = 0; j < degree + 2; j++) {
        for (k = 0; k < 4; k++) {
            tq[k][j] = _mm512_loadu_ps(tab[j] + 16 * k);
        }
    }
    {
        const __m512 lo = _mm512_set1_ps(breakpoints[0]);
        const __m512 hi = _mm512_set1_ps(breakpoints[segments]);
        const __m512i one = _mm512_set1_epi32(1);
        const __m512i c32 = _mm512_set1_epi32(32);
        const __m512 zero = _mm512_setzero_ps();
        const int width = segments > 32 ? 4 : segments > 16 ? 2 : 1;
        for (; i + 16 <= n; i += 16) {
            const __m512 x = _mm512_loadu_ps(in + i);
            __m512i kv = _mm512_setzero_si512();
            __m512 t, acc;
            __mmask16 keep, below, upper;
            for (k = 1; k < segments; k++) {
                const __mmask16 ge =
                    _mm512_cmp_ps_mask(x, _mm512_set1_ps(breakpoints[k]), _CMP_GE_OQ);
                kv = _mm512_mask_add_epi32(kv, ge, kv, one);
            }
            upper = _mm512_cmpge_epi32_mask(kv, c32);
#define GELU_POLY_F32_PICK(r)                                                                 \
    (width == 1   ? _mm512_permutexvar_ps(kv, tq[0][r])                                        \
     : width == 2 ? _mm512_permutex2var_ps(tq[0][r], kv, tq[1][r])                             \
                  : _mm512_mask_blend_ps(upper, _mm512_permutex2var_ps(tq[0][r], kv, tq[1][r]), \
                                         _mm512_permutex2var_ps(tq[2][r], kv, tq[3][r])))
            t = _mm512_sub_ps(x, GELU_POLY_F32_PICK(0));
            acc = GELU_POLY_F32_PICK(1 + degree);
            for (j = degree; j-- > 0;) {
                acc = _mm512_mul_ps(acc, t);
                acc = _mm512_add_ps(acc, GELU_POLY_F32_PICK(1 + j));
            }
#undef GELU_POLY_F32_PICK
            /* NaN or above the range: x itself; below: +0 */
            keep = _mm512_cmp_ps_mask(x, hi, _CMP_NGT_UQ) & _mm512_cmp_ps_mask(x, x, _CMP_EQ_OQ);
            below = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
            acc = _mm512_mask_mov_ps(x, keep, acc);
            acc = _mm512_mask_mov_ps(acc, below, zero);
            _mm512_storeu_ps(out + i, acc);
        }
    }
    return i;
}
#endif

#if defined(GELU_POLY_F32_AVX2)
#define GELU_POLY_F32_AVX2_MAX_SEGMENTS 64
#define GELU_POLY_F32_AVX2_MAX_DEGREE 8
#if defined(__GNUC__)
#define GELU_POLY_F32_INLINE static inline __attribute__((always_inline))
#else
#define GELU_POLY_F32_INLINE static inline
#endif

/* Two adjacent floats per lane: lane l of *a = tab[stride * k[l]], of *b the float after it.
 * Eight 64-bit loads into (a0 b0 a1 b1 | a4 b4 a5 b5) and (a2 b2 a3 b3 | a6 b6 a7 b7), split
 * by two shufps. */
GELU_POLY_F32_INLINE void gelu_poly_f32_avx2_pairs(const float *tab, size_t stride, const int32_t k[8],
                                     __m256 *a, __m256 *b)
{
    __m256 y0, y1;
#define GELU_POLY_F32_PAIRS(l)                                                                 \
    _mm_loadh_pi(_mm_castsi128_ps(_mm_loadl_epi64(                                            \
                     (const __m128i *)(const void *)(tab + stride * (size_t)k[l]))),             \
                 (const __m64 *)(const void *)(tab + stride * (size_t)k[(l) + 1]))
    y0 = _mm256_insertf128_ps(_mm256_castps128_ps256(GELU_POLY_F32_PAIRS(0)),
                              GELU_POLY_F32_PAIRS(4), 1);
    y1 = _mm256_insertf128_ps(_mm256_castps128_ps256(GELU_POLY_F32_PAIRS(2)),
                              GELU_POLY_F32_PAIRS(6), 1);
#undef GELU_POLY_F32_PAIRS
    *a = _mm256_shuffle_ps(y0, y1, 0x88);
    *b = _mm256_shuffle_ps(y0, y1, 0xDD);
}

/* The lanes' table rows (16 floats per segment) transposed into columns: col[r] = entry r of
 * row kv[l] in lane l, for r < 8 and, if ten, r = 8, 9. Loads and in-lane shuffles instead of
 * one gather per column. */
GELU_POLY_F32_INLINE void gelu_poly_f32_avx2_columns(const float (*rows)[16], __m256i kv, int ten,
                                                     __m256 col[10])
{
    int32_t k[8];
    __m256 y0, y1, y2, y3, t0, t1, t2, t3;
    _mm256_storeu_si256((__m256i *)(void *)k, kv);
    /* lanes l and l + 4 in the two 128-bit halves, entries h .. h + 3; a 4 x 4 transpose in
     * each half */
#define GELU_POLY_F32_HALVES(l, h)                                                             \
    _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(rows[k[l]] + (h))),                \
                         _mm_loadu_ps(rows[k[(l) + 4]] + (h)), 1)
#define GELU_POLY_F32_TRANSPOSE(h)                                                             \
    y0 = GELU_POLY_F32_HALVES(0, h);                                                           \
    y1 = GELU_POLY_F32_HALVES(1, h);                                                           \
    y2 = GELU_POLY_F32_HALVES(2, h);                                                           \
    y3 = GELU_POLY_F32_HALVES(3, h);                                                           \
    t0 = _mm256_unpacklo_ps(y0, y1);                                                           \
    t1 = _mm256_unpackhi_ps(y0, y1);                                                           \
    t2 = _mm256_unpacklo_ps(y2, y3);                                                           \
    t3 = _mm256_unpackhi_ps(y2, y3);                                                           \
    col[(h) + 0] = _mm256_shuffle_ps(t0, t2, 0x44);                                            \
    col[(h) + 1] = _mm256_shuffle_ps(t0, t2, 0xEE);                                            \
    col[(h) + 2] = _mm256_shuffle_ps(t1, t3, 0x44);                                            \
    col[(h) + 3] = _mm256_shuffle_ps(t1, t3, 0xEE)
    GELU_POLY_F32_TRANSPOSE(0);
    GELU_POLY_F32_TRANSPOSE(4);
#undef GELU_POLY_F32_TRANSPOSE
#undef GELU_POLY_F32_HALVES
    if (ten) {
        gelu_poly_f32_avx2_pairs(rows[0] + 8, 16, k, &col[8], &col[9]);
    }
}

/* 16 values (two vectors of 8 lanes, their dependency chains interleaved) at a time for
 * K <= 64 segments and D <= 8. The segment index: by the portable loop's exact grid (K >= 9,
 * n >= 1024: the cell by vector arithmetic, base[cell] and probe[cell] by two gathers) or by
 * counting compares. Origins and coefficients: from per-coefficient registers by vpermps
 * (K <= 8) or two vpermps and a blend on k >= 8 (K <= 16); above, from per-segment rows (row
 * k: origin, c0 .. cD) loaded lane by lane and transposed (gelu_poly_f32_avx2_columns), which
 * measured a little faster than one gather per coefficient. Horner is separate vmulps / vaddps
 * (IEEE, rounded to float32, no FMA), tails and NaNs by blends. Lane by lane the same
 * operations as the scalar loop, so the same bits. */
static size_t gelu_poly_f32_avx2_tables(const float *in, float *out, size_t n, size_t segments,
                                        size_t degree, const float *breakpoints,
                                        const float *origins, const float *coefficients)
{
    float tab[GELU_POLY_F32_AVX2_MAX_DEGREE + 2][GELU_POLY_F32_AVX2_MAX_SEGMENTS];
    float rows[GELU_POLY_F32_AVX2_MAX_SEGMENTS][16];
    __m256 tp[2][GELU_POLY_F32_AVX2_MAX_DEGREE + 2]; /* entries 0-7 and 8-15 (vpermps) */
    uint8_t base8[GELU_POLY_F32_GRID];
    int32_t base[GELU_POLY_F32_GRID];
    float probe[GELU_POLY_F32_GRID];
    const size_t stride = degree + 1;
    const float flo = breakpoints[0];
    const float fhi = breakpoints[segments];
    const float fscale = (float)GELU_POLY_F32_GRID / (fhi - flo);
    const int width = segments > 16 ? 0 : segments > 8 ? 2 : 1; /* 0: rows */
    size_t i = 0, j, k;
    int grid = 0;
    if (segments >= GELU_POLY_F32_GRID_MIN_SEGMENTS && n >= GELU_POLY_F32_GRID_MIN_N) {
        grid = gelu_poly_f32_grid(breakpoints, segments, fscale, base8, probe);
    }
    if (grid) {
        for (k = 0; k < GELU_POLY_F32_GRID; k++) {
            base[k] = base8[k];
        }
    }
    /* unused segments repeat segment 0 */
    for (k = 0; k < GELU_POLY_F32_AVX2_MAX_SEGMENTS; k++) {
        const size_t kk = k < segments ? k : 0;
        tab[0][k] = origins[kk];
        for (j = 0; j <= degree; j++) {
            tab[1 + j][k] = coefficients[kk * stride + j];
        }
        for (j = 0; j < 16; j++) {
            rows[k][j] = j < degree + 2 ? tab[j][k] : 0.0f;
        }
    }
    if (width) {
        for (j = 0; j < degree + 2; j++) {
            tp[0][j] = _mm256_loadu_ps(tab[j]);
            tp[1][j] = _mm256_loadu_ps(tab[j] + 8);
        }
    }
    {
        const __m256 lo = _mm256_set1_ps(flo);
        const __m256 hi = _mm256_set1_ps(fhi);
        const __m256 scale = _mm256_set1_ps(fscale);
        const __m256 zero = _mm256_setzero_ps();
        const __m256 top = _mm256_set1_ps((float)(GELU_POLY_F32_GRID - 1));
        const __m256i seven = _mm256_set1_epi32(7);
        const int ten = degree + 2 > 8;
        for (; i + 16 <= n; i += 16) {
            const __m256 x0 = _mm256_loadu_ps(in + i), x1 = _mm256_loadu_ps(in + i + 8);
            __m256 c0[GELU_POLY_F32_AVX2_MAX_DEGREE + 2], c1[GELU_POLY_F32_AVX2_MAX_DEGREE + 2];
            __m256 t0, t1, a0, a1, u0 = zero, u1 = zero;
            __m256i k0, k1;
            if (grid) {
                /* gelu_poly_f32_cell_of: max(u, 0) takes 0 for NaN, then min(u, G - 1) */
#define GELU_POLY_F32_INDEX(x, kv)                                                             \
    {                                                                                          \
        const __m256i cell = _mm256_cvttps_epi32(                                              \
            _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(x, lo), scale), zero), top)); \
        kv = _mm256_sub_epi32(_mm256_i32gather_epi32((const int *)base, cell, 4),              \
                              _mm256_castps_si256(_mm256_cmp_ps(                               \
                                  x, _mm256_i32gather_ps(probe, cell, 4), _CMP_GE_OQ)));       \
    }
                GELU_POLY_F32_INDEX(x0, k0)
                GELU_POLY_F32_INDEX(x1, k1)
#undef GELU_POLY_F32_INDEX
            } else {
                k0 = k1 = _mm256_setzero_si256();
                for (k = 1; k < segments; k++) {
                    const __m256 b = _mm256_set1_ps(breakpoints[k]);
                    /* all ones = -1 */
                    k0 = _mm256_sub_epi32(k0, _mm256_castps_si256(_mm256_cmp_ps(x0, b, _CMP_GE_OQ)));
                    k1 = _mm256_sub_epi32(k1, _mm256_castps_si256(_mm256_cmp_ps(x1, b, _CMP_GE_OQ)));
                }
            }
            if (width == 0) {
                gelu_poly_f32_avx2_columns((const float(*)[16])rows, k0, ten, c0);
                gelu_poly_f32_avx2_columns((const float(*)[16])rows, k1, ten, c1);
            } else if (width == 2) {
                u0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k0, seven));
                u1 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k1, seven));
            }
#define GELU_POLY_F32_PICK(r, kv, up, col)                                                     \
    (width == 1   ? _mm256_permutevar8x32_ps(tp[0][r], kv)                                     \
     : width == 2 ? _mm256_blendv_ps(_mm256_permutevar8x32_ps(tp[0][r], kv),                   \
                                     _mm256_permutevar8x32_ps(tp[1][r], kv), up)                \
                  : col[r])
            t0 = _mm256_sub_ps(x0, GELU_POLY_F32_PICK(0, k0, u0, c0));
            t1 = _mm256_sub_ps(x1, GELU_POLY_F32_PICK(0, k1, u1, c1));
            a0 = GELU_POLY_F32_PICK(1 + degree, k0, u0, c0);
            a1 = GELU_POLY_F32_PICK(1 + degree, k1, u1, c1);
            for (j = degree; j-- > 0;) {
                a0 = _mm256_mul_ps(a0, t0);
                a1 = _mm256_mul_ps(a1, t1);
                a0 = _mm256_add_ps(a0, GELU_POLY_F32_PICK(1 + j, k0, u0, c0));
                a1 = _mm256_add_ps(a1, GELU_POLY_F32_PICK(1 + j, k1, u1, c1));
            }
#undef GELU_POLY_F32_PICK
            /* NaN or above the range: x itself; below: +0 */
#define GELU_POLY_F32_STORE(x, acc, at)                                                        \
    _mm256_storeu_ps(                                                                          \
        at, _mm256_andnot_ps(                                                                  \
                _mm256_cmp_ps(x, lo, _CMP_LT_OQ),                                              \
                _mm256_blendv_ps(x, acc,                                                       \
                                 _mm256_and_ps(_mm256_cmp_ps(x, hi, _CMP_NGT_UQ),              \
                                               _mm256_cmp_ps(x, x, _CMP_EQ_OQ)))))
            GELU_POLY_F32_STORE(x0, a0, out + i);
            GELU_POLY_F32_STORE(x1, a1, out + i + 8);
#undef GELU_POLY_F32_STORE
        }
    }
    return i;
}

/* 8 lanes at a time, any K and D (above the table path's limits): the segment index by vector
 * compares, origins and coefficients by gathers from the arrays themselves, Horner by separate
 * vmulps / vaddps, tails and NaNs by blends. */
static size_t gelu_poly_f32_avx2(const float *in, float *out, size_t n, size_t segments,
                                 size_t degree, const float *breakpoints, const float *origins,
                                 const float *coefficients)
{
    const __m256 lo = _mm256_set1_ps(breakpoints[0]);
    const __m256 hi = _mm256_set1_ps(breakpoints[segments]);
    const __m256i stride = _mm256_set1_epi32((int)(degree + 1));
    size_t i = 0, j, k;
    if (segments <= GELU_POLY_F32_AVX2_MAX_SEGMENTS && degree <= GELU_POLY_F32_AVX2_MAX_DEGREE) {
        return gelu_poly_f32_avx2_tables(in, out, n, segments, degree, breakpoints, origins,
                                         coefficients);
    }
    if (segments > 0x7fffu || degree > 0x7fffu) {
        return 0; /* int32 gather indices */
    }
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(in + i);
        __m256i kv = _mm256_setzero_si256(), ks;
        __m256 t, acc, keep;
        for (k = 1; k < segments; k++) {
            const __m256 ge = _mm256_cmp_ps(x, _mm256_set1_ps(breakpoints[k]), _CMP_GE_OQ);
            kv = _mm256_sub_epi32(kv, _mm256_castps_si256(ge)); /* all ones = -1 */
        }
        ks = _mm256_mullo_epi32(kv, stride);
        t = _mm256_sub_ps(x, _mm256_i32gather_ps(origins, kv, 4));
        acc = _mm256_i32gather_ps(coefficients + degree, ks, 4);
        for (j = degree; j-- > 0;) {
            acc = _mm256_mul_ps(acc, t);
            acc = _mm256_add_ps(acc, _mm256_i32gather_ps(coefficients + j, ks, 4));
        }
        /* NaN or above the range: x itself; below: +0 */
        keep = _mm256_and_ps(_mm256_cmp_ps(x, hi, _CMP_NGT_UQ), _mm256_cmp_ps(x, x, _CMP_EQ_OQ));
        acc = _mm256_blendv_ps(x, acc, keep);
        acc = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), acc);
        _mm256_storeu_ps(out + i, acc);
    }
    return i;
}
#endif

void gelu_poly_f32(const float *in, float *out, size_t n, size_t segments, size_t degree,
                   const float *breakpoints, const float *origins, const float *coefficients)
{
    size_t done = 0;
#if defined(GELU_POLY_F32_AVX512)
    done = gelu_poly_f32_avx512(in, out, n, segments, degree, breakpoints, origins,
                                coefficients);
#elif defined(GELU_POLY_F32_AVX2)
    done = gelu_poly_f32_avx2(in, out, n, segments, degree, breakpoints, origins, coefficients);
#endif
    /* what the SIMD path left (all of it without one, or when it declines K or D) */
    done += gelu_poly_f32_blocked(in + done, out + done, n - done, segments, degree, breakpoints,
                                  origins, coefficients);
    gelu_poly_f32_one_by_one(in + done, out + done, n - done, segments, degree, breakpoints,
                             origins, coefficients);
}

const char *gelu_poly_f32_simd(void)
{
#if defined(GELU_POLY_F32_AVX512)
    return "avx512f";
#elif defined(GELU_POLY_F32_AVX2)
    return "avx2";
#else
    return "scalar";
#endif
}
