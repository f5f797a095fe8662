/* gelu-quant reference kernel: float16 piecewise polynomial GELU. See gelu_poly_f16.h. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "gelu_poly_f16.h"

#include <string.h>

#if defined(__FLT16_MAX__) && !defined(GELU_POLY_F16_PORTABLE)
#define GELU_F16_NATIVE 1
#endif
#if defined(__AVX512FP16__) && defined(__AVX512BW__) && !defined(GELU_POLY_NO_SIMD)
#define GELU_POLY_F16_AVX512FP16 1
#include <immintrin.h>
#endif

static float gelu_bits_f32(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t gelu_f32_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* Portable conversions (integer arithmetic only). */
static float gelu_h2f_portable(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu;
    const uint32_t m = h & 0x3ffu;
    if (e == 0x1fu) {
        return gelu_bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN (payload kept) */
    }
    if (e != 0) {
        return gelu_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    }
    if (m == 0) {
        return gelu_bits_f32(sign); /* +-0 */
    }
    {
        /* subnormal: m * 2^-24, normalised so the leading 1 reaches bit 10 */
        uint32_t ex = 113u, mm = m;
        while (!(mm & 0x400u)) {
            mm <<= 1;
            ex--;
        }
        return gelu_bits_f32(sign | (ex << 23) | ((mm & 0x3ffu) << 13));
    }
}

static uint16_t gelu_f2h_portable(float f)
{
    const uint32_t x = gelu_f32_bits(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) { /* NaN: top payload bits, never turned into inf */
        uint16_t r = (uint16_t)(0x7c00u + ((ax & 0x7fffffu) >> 13));
        if (r == 0x7c00u) {
            r++;
        }
        return (uint16_t)(sign | r);
    }
    if (ax >= 0x477ff000u) { /* >= 65520 (and inf): rounds to inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (ax >= 0x38800000u) { /* normal binary16: round to nearest even at bit 13 */
        const uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u);
        return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
    }
    if (ax < 0x33000000u) { /* below 2^-25: rounds to 0 */
        return sign;
    }
    {
        /* subnormal binary16 result: units of 2^-24, value = m * 2^(e - 150) */
        const uint32_t e = ax >> 23;
        const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        const unsigned shift = (unsigned)(126u - e); /* 14 .. 24 */
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t halfway = 1u << (shift - 1u);
        if (rem > halfway || (rem == halfway && (q & 1u))) {
            q++;
        }
        return (uint16_t)(sign | q);
    }
}

#if defined(GELU_F16_NATIVE)
__extension__ typedef _Float16 gelu_half; /* __extension__: quiet under -pedantic */

static float gelu_h2f(uint16_t h)
{
    gelu_half v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

static uint16_t gelu_f2h(float f)
{
    /* _Float16 conversions quiet a NaN's payload; keep the portable (numpy) NaN rule */
    if (f != f) {
        return gelu_f2h_portable(f);
    }
    {
        const gelu_half v = (gelu_half)f;
        uint16_t h;
        memcpy(&h, &v, sizeof h);
        return h;
    }
}

/* f rounded to the nearest float16 value, as a float */
static float gelu_r16(float f)
{
    return (float)(gelu_half)f;
}
#else
#define gelu_h2f gelu_h2f_portable
#define gelu_f2h gelu_f2h_portable
static float gelu_r16(float f)
{
    return gelu_h2f_portable(gelu_f2h_portable(f));
}
#endif

float gelu_f16_to_f32(uint16_t h)
{
    return gelu_h2f(h);
}

uint16_t gelu_f32_to_f16(float f)
{
    return gelu_f2h(f);
}

const char *gelu_poly_f16_arith(void)
{
#if defined(GELU_F16_NATIVE)
    (void)gelu_h2f_portable; /* kept compiled (and warning-free) in both configurations */
    return "_Float16";
#else
    return "portable";
#endif
}

/* Order-preserving integer key of a non-NaN binary16 (+0 and -0 equal): a < b as floats
 * exactly when key(a) < key(b). */
static int32_t gelu_h_key(uint16_t h)
{
    /* m = -1 for negative values: (a ^ m) - m is -a then, a otherwise (no branch) */
    const int32_t m = -(int32_t)(h >> 15);
    return ((int32_t)(h & 0x7fffu) ^ m) - m;
}

static int gelu_h_isnan(uint16_t h)
{
    return (h & 0x7fffu) > 0x7c00u;
}

/* #{ j : base[j] <= x } for the ascending breakpoints base[0..m) (branchless). */
static inline size_t gelu_h_segment(int32_t xk, const uint16_t *base, size_t m)
{
    const uint16_t *b = base;
    while (m > 1) {
        const size_t half = m / 2;
        b = (gelu_h_key(b[half]) <= xk) ? b + half : b;
        m -= half;
    }
    return (size_t)(b - base) + (size_t)(m == 1 && gelu_h_key(b[0]) <= xk);
}

static void gelu_poly_f16_scalar(const uint16_t *in, uint16_t *out, size_t n, size_t segments,
                                 size_t degree, const uint16_t *breakpoints,
                                 const uint16_t *origins, const uint16_t *coefficients);

#if defined(GELU_POLY_F16_AVX512FP16)
#define GELU_POLY_F16_SIMD_MAX_SEGMENTS 32
#define GELU_POLY_F16_MAX_DEGREE 8

/* 32 lanes of native float16 arithmetic (AVX512-FP16: vsubph, vmulph, vaddph are the
 * correctly rounded float16 operations, and ignore MXCSR's flush-to-zero and
 * denormals-are-zero), K <= 32: the segment index counts the inner breakpoints <= x (vector
 * compares), origins and coefficients come from 32-entry tables by vpermw, tails and NaNs are
 * blended in by masks. Lane by lane the same rounded operations as the scalar loop. */
static size_t gelu_poly_f16_avx512fp16(const uint16_t *in, uint16_t *out, size_t n,
                                       size_t segments, size_t degree,
                                       const uint16_t *breakpoints, const uint16_t *origins,
                                       const uint16_t *coefficients)
{
    uint16_t tab[GELU_POLY_F16_MAX_DEGREE + 2][GELU_POLY_F16_SIMD_MAX_SEGMENTS];
    __m512i tv[GELU_POLY_F16_MAX_DEGREE + 2], bv[GELU_POLY_F16_SIMD_MAX_SEGMENTS + 1];
    const size_t stride = degree + 1;
    size_t i = 0, j, k;
    if (segments > GELU_POLY_F16_SIMD_MAX_SEGMENTS || degree > GELU_POLY_F16_MAX_DEGREE) {
        return 0;
    }
    /* row 0: origins; row 1 + j: coefficient j; unused segments repeat segment 0 */
    for (k = 0; k < GELU_POLY_F16_SIMD_MAX_SEGMENTS; k++) {
        const size_t kk = k < segments ? k : 0;
        tab[0][k] = origins[kk];
        for (j = 0; j <= degree; j++) {
            tab[1 + j][k] = coefficients[kk * stride + j];
        }
    }
    for (j = 0; j < degree + 2; j++) {
        tv[j] = _mm512_loadu_si512((const void *)tab[j]);
    }
    for (k = 0; k <= segments; k++) {
        bv[k] = _mm512_set1_epi16((short)breakpoints[k]);
    }
    {
        const __m512h lo = _mm512_castsi512_ph(bv[0]);
        const __m512h hi = _mm512_castsi512_ph(bv[segments]);
        const __m512i one = _mm512_set1_epi16(1);
        const __m512i zero = _mm512_setzero_si512();
        for (; i + 32 <= n; i += 32) {
            const __m512i xi = _mm512_loadu_si512((const void *)(in + i));
            const __m512h x = _mm512_castsi512_ph(xi);
            __m512i kv = zero, r;
            __m512h t, acc;
            __mmask32 keep, below;
            for (k = 1; k < segments; k++) {
                const __mmask32 ge = _mm512_cmp_ph_mask(x, _mm512_castsi512_ph(bv[k]), _CMP_GE_OQ);
                kv = _mm512_mask_add_epi16(kv, ge, kv, one);
            }
            t = _mm512_sub_ph(x, _mm512_castsi512_ph(_mm512_permutexvar_epi16(kv, tv[0])));
            acc = _mm512_castsi512_ph(_mm512_permutexvar_epi16(kv, tv[1 + degree]));
            for (j = degree; j-- > 0;) {
                acc = _mm512_mul_ph(acc, t);
                acc = _mm512_add_ph(acc,
                                    _mm512_castsi512_ph(_mm512_permutexvar_epi16(kv, tv[1 + j])));
            }
            /* NaN or above the range: x itself (same bits); below: +0 */
            keep = _mm512_cmp_ph_mask(x, hi, _CMP_NGT_UQ) & _mm512_cmp_ph_mask(x, x, _CMP_EQ_OQ);
            below = _mm512_cmp_ph_mask(x, lo, _CMP_LT_OQ);
            r = _mm512_mask_mov_epi16(xi, keep, _mm512_castph_si512(acc));
            r = _mm512_mask_mov_epi16(r, below, zero);
            _mm512_storeu_si512((void *)(out + i), r);
        }
    }
    return i;
}
#endif

const char *gelu_poly_f16_simd(void)
{
#if defined(GELU_POLY_F16_AVX512FP16)
    return "avx512fp16";
#else
    return "scalar";
#endif
}

void gelu_poly_f16(const uint16_t *in, uint16_t *out, size_t n, size_t segments,
                   size_t degree, const uint16_t *breakpoints, const uint16_t *origins,
                   const uint16_t *coefficients)
{
#if defined(GELU_POLY_F16_AVX512FP16)
    const size_t done = gelu_poly_f16_avx512fp16(in, out, n, segments, degree, breakpoints,
                                                 origins, coefficients);
    in += done;
    out += done;
    n -= done;
#endif
    gelu_poly_f16_scalar(in, out, n, segments, degree, breakpoints, origins, coefficients);
}

static void gelu_poly_f16_scalar(const uint16_t *in, uint16_t *out, size_t n, size_t segments,
                                 size_t degree, const uint16_t *breakpoints,
                                 const uint16_t *origins, const uint16_t *coefficients)
{
    const int32_t lo = gelu_h_key(breakpoints[0]);
    const int32_t hi = gelu_h_key(breakpoints[segments]);
    const size_t stride = degree + 1;
    size_t i;
    for (i = 0; i < n; i++) {
        const uint16_t x = in[i];
        const int32_t xk = gelu_h_key(x);
        if (gelu_h_isnan(x) || xk > hi) {
            out[i] = x;
        } else if (xk < lo) {
            out[i] = 0;
        } else {
            const size_t k = gelu_h_segment(xk, breakpoints + 1, segments - 1);
            const uint16_t *c = coefficients + k * stride;
            const float t = gelu_r16(gelu_h2f(x) - gelu_h2f(origins[k]));
            float acc = gelu_h2f(c[degree]);
            size_t j = degree;
            while (j-- > 0) {
                acc = gelu_r16(acc * t);
                acc = gelu_r16(acc + gelu_h2f(c[j]));
            }
            out[i] = gelu_f2h(acc);
        }
    }
}

void gelu_poly_f16_c32(const uint16_t *in, uint16_t *out, size_t n, size_t segments,
                       size_t degree, const uint16_t *breakpoints, const float *origins,
                       const float *coefficients)
{
    const int32_t lo = gelu_h_key(breakpoints[0]);
    const int32_t hi = gelu_h_key(breakpoints[segments]);
    const size_t stride = degree + 1;
    size_t i;
    for (i = 0; i < n; i++) {
        const uint16_t x = in[i];
        const int32_t xk = gelu_h_key(x);
        if (gelu_h_isnan(x) || xk > hi) {
            out[i] = x;
        } else if (xk < lo) {
            out[i] = 0;
        } else {
            const size_t k = gelu_h_segment(xk, breakpoints + 1, segments - 1);
            const float *c = coefficients + k * stride;
            const float t = gelu_h2f(x) - origins[k];
            float acc = c[degree];
            size_t j = degree;
            while (j-- > 0) {
                acc = acc * t;
                acc = acc + c[j];
            }
            out[i] = gelu_f2h(acc);
        }
    }
}
