/* gelu-quant reference kernel: piecewise polynomial GELU in float32. See gelu_poly_f32.h. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "gelu_poly_f32.h"

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

/* The scalar loop, also the tail of the SIMD path. */
static void gelu_poly_f32_scalar(const float *in, float *out, size_t n, size_t segments,
                                 size_t degree, const float *breakpoints, const float *origins,
                                 const float *coefficients)
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

#if defined(GELU_POLY_F32_AVX512)
#define GELU_POLY_F32_SIMD_MAX_SEGMENTS 32
#define GELU_POLY_F32_MAX_DEGREE 8

/* 16 lanes at a time for K <= 32 segments: the segment index counts the inner breakpoints
 * <= x (vector compares), origins and coefficients come from per-coefficient tables by
 * vpermps (K <= 16) or vpermi2ps (K <= 32), Horner is separate vmulps / vaddps (IEEE, rounded
 * to float32, no FMA), and the tails and NaNs are blended in by masks. Lane by lane the same
 * operations as the scalar loop, so the same bits. */
static size_t gelu_poly_f32_avx512(const float *in, float *out, size_t n, size_t segments,
                                   size_t degree, const float *breakpoints, const float *origins,
                                   const float *coefficients)
{
    float tab[GELU_POLY_F32_MAX_DEGREE + 2][GELU_POLY_F32_SIMD_MAX_SEGMENTS];
    __m512 tlo[GELU_POLY_F32_MAX_DEGREE + 2], thi[GELU_POLY_F32_MAX_DEGREE + 2];
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
        tlo[j] = _mm512_loadu_ps(tab[j]);
        thi[j] = _mm512_loadu_ps(tab[j] + 16);
    }
    {
        const __m512 lo = _mm512_set1_ps(breakpoints[0]);
        const __m512 hi = _mm512_set1_ps(breakpoints[segments]);
        const __m512i one = _mm512_set1_epi32(1);
        const __m512 zero = _mm512_setzero_ps();
        const int wide = segments > 16;
        for (; i + 16 <= n; i += 16) {
            const __m512 x = _mm512_loadu_ps(in + i);
            __m512i kv = _mm512_setzero_si512();
            __m512 t, acc;
            __mmask16 keep, below;
            for (k = 1; k < segments; k++) {
                const __mmask16 ge =
                    _mm512_cmp_ps_mask(x, _mm512_set1_ps(breakpoints[k]), _CMP_GE_OQ);
                kv = _mm512_mask_add_epi32(kv, ge, kv, one);
            }
#define GELU_POLY_F32_PICK(r)                                                                 \
    (wide ? _mm512_permutex2var_ps(tlo[r], kv, thi[r]) : _mm512_permutexvar_ps(kv, tlo[r]))
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
/* 8 lanes at a time, any K and D: the segment index by vector compares, origins and
 * coefficients by gathers, Horner by separate vmulps / vaddps, tails and NaNs by blends. */
static size_t gelu_poly_f32_avx2(const float *in, float *out, size_t n, size_t segments,
                                 size_t degree, const float *breakpoints, const float *origins,
                                 const float *coefficients)
{
    const __m256 lo = _mm256_set1_ps(breakpoints[0]);
    const __m256 hi = _mm256_set1_ps(breakpoints[segments]);
    const __m256i stride = _mm256_set1_epi32((int)(degree + 1));
    size_t i = 0, j, k;
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
    gelu_poly_f32_scalar(in + done, out + done, n - done, segments, degree, breakpoints, origins,
                         coefficients);
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
