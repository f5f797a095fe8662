/* gelu-quant reference kernel: full lookup tables. See gelu_lut.h. */
#include "gelu_lut.h"

#if !defined(GELU_LUT_NO_SIMD)
#if defined(__AVX512VBMI__) && defined(__AVX512BW__)
#define GELU_LUT_AVX512VBMI 1
#include <immintrin.h>
#elif defined(__AVX2__)
#define GELU_LUT_AVX2 1
#include <immintrin.h>
#elif defined(__SSSE3__)
#define GELU_LUT_SSSE3 1
#include <tmmintrin.h>
#elif defined(__ARM_NEON) && defined(__aarch64__)
#define GELU_LUT_NEON 1
#include <arm_neon.h>
#endif
#endif

void gelu_lut_bytes_scalar(const uint8_t *in, uint8_t *out, size_t n, const uint8_t table[256],
                           unsigned flip)
{
    size_t i;
    const unsigned f = flip & 0xffu;
    for (i = 0; i < n; i++) {
        out[i] = table[in[i] ^ f];
    }
}

const char *gelu_lut_simd(void)
{
#if defined(GELU_LUT_AVX512VBMI)
    return "avx512vbmi";
#elif defined(GELU_LUT_AVX2)
    return "avx2";
#elif defined(GELU_LUT_SSSE3)
    return "ssse3";
#elif defined(GELU_LUT_NEON)
    return "neon";
#else
    return "scalar";
#endif
}

/* The 16-shuffle decomposition used by the AVX2 and SSSE3 paths.
 *
 * pshufb(X, v) returns X[v & 15] in each byte whose index byte v has bit 7 clear, 0 otherwise.
 * Write u = 16h + l (h = u >> 4, l = u & 15) and T_h = table[16h .. 16h + 15]. With the index
 * bytes v_j = u - 16j (mod 256) for j = 0..15:
 *   A = xor_{j=0..7} pshufb(X_j, v_j),  X_0 = T_0, X_j = T_j ^ T_{j-1};
 *   B = xor_{j=8..15} pshufb(X_j, v_j), X_8 = T_8, X_j = T_j ^ T_{j-1}.
 * For u < 128, v_j = 16(h - j) + l has bit 7 clear exactly for j <= h among j = 0..7, so A is
 * the telescoping sum X_0 ^ ... ^ X_h = T_h[l]. For u >= 128, v_j for j = 8..15 has bit 7
 * clear exactly for j <= h, so B = X_8 ^ ... ^ X_h = T_h[l]. The result is A where u < 128
 * and B where u >= 128 (a blend on bit 7 of u). */
static void gelu_lut_prefix_xor(const uint8_t table[256], uint8_t x[16][16])
{
    int j, l;
    for (j = 0; j < 16; j++) {
        for (l = 0; l < 16; l++) {
            uint8_t t = table[16 * j + l];
            x[j][l] = (j == 0 || j == 8) ? t : (uint8_t)(t ^ table[16 * (j - 1) + l]);
        }
    }
}

void gelu_lut_bytes(const uint8_t *in, uint8_t *out, size_t n, const uint8_t table[256],
                    unsigned flip)
{
    size_t i = 0;
#if defined(GELU_LUT_AVX512VBMI)
    {
        const __m512i t0 = _mm512_loadu_si512((const void *)(table + 0));
        const __m512i t1 = _mm512_loadu_si512((const void *)(table + 64));
        const __m512i t2 = _mm512_loadu_si512((const void *)(table + 128));
        const __m512i t3 = _mm512_loadu_si512((const void *)(table + 192));
        const __m512i fv = _mm512_set1_epi8((char)(flip & 0xffu));
        for (; i + 64 <= n; i += 64) {
            const __m512i u = _mm512_xor_si512(_mm512_loadu_si512((const void *)(in + i)), fv);
            /* vpermi2b uses bits 0..6 of each index byte: entries 0..127 and 128..255 */
            const __m512i lo = _mm512_permutex2var_epi8(t0, u, t1);
            const __m512i hi = _mm512_permutex2var_epi8(t2, u, t3);
            const __mmask64 m = _mm512_movepi8_mask(u);
            _mm512_storeu_si512((void *)(out + i), _mm512_mask_blend_epi8(m, lo, hi));
        }
    }
#elif defined(GELU_LUT_AVX2)
    {
        uint8_t x[16][16];
        __m256i xv[16];
        int j;
        gelu_lut_prefix_xor(table, x);
        for (j = 0; j < 16; j++) {
            xv[j] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x[j]));
        }
        {
            const __m256i fv = _mm256_set1_epi8((char)(flip & 0xffu));
            const __m256i sixteen = _mm256_set1_epi8(16);
            for (; i + 32 <= n; i += 32) {
                const __m256i u =
                    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(in + i)), fv);
                __m256i v = u, a, b;
                a = _mm256_shuffle_epi8(xv[0], v);
                for (j = 1; j < 8; j++) {
                    v = _mm256_sub_epi8(v, sixteen);
                    a = _mm256_xor_si256(a, _mm256_shuffle_epi8(xv[j], v));
                }
                v = _mm256_sub_epi8(v, sixteen);
                b = _mm256_shuffle_epi8(xv[8], v);
                for (j = 9; j < 16; j++) {
                    v = _mm256_sub_epi8(v, sixteen);
                    b = _mm256_xor_si256(b, _mm256_shuffle_epi8(xv[j], v));
                }
                _mm256_storeu_si256((__m256i *)(out + i), _mm256_blendv_epi8(a, b, u));
            }
        }
    }
#elif defined(GELU_LUT_SSSE3)
    {
        uint8_t x[16][16];
        __m128i xv[16];
        int j;
        gelu_lut_prefix_xor(table, x);
        for (j = 0; j < 16; j++) {
            xv[j] = _mm_loadu_si128((const __m128i *)x[j]);
        }
        {
            const __m128i fv = _mm_set1_epi8((char)(flip & 0xffu));
            const __m128i sixteen = _mm_set1_epi8(16);
            const __m128i zero = _mm_setzero_si128();
            for (; i + 16 <= n; i += 16) {
                const __m128i u = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(in + i)), fv);
                const __m128i hi = _mm_cmplt_epi8(u, zero); /* bit 7 of u set */
                __m128i v = u, a, b;
                a = _mm_shuffle_epi8(xv[0], v);
                for (j = 1; j < 8; j++) {
                    v = _mm_sub_epi8(v, sixteen);
                    a = _mm_xor_si128(a, _mm_shuffle_epi8(xv[j], v));
                }
                v = _mm_sub_epi8(v, sixteen);
                b = _mm_shuffle_epi8(xv[8], v);
                for (j = 9; j < 16; j++) {
                    v = _mm_sub_epi8(v, sixteen);
                    b = _mm_xor_si128(b, _mm_shuffle_epi8(xv[j], v));
                }
                _mm_storeu_si128((__m128i *)(out + i),
                                 _mm_or_si128(_mm_and_si128(hi, b), _mm_andnot_si128(hi, a)));
            }
        }
    }
#elif defined(GELU_LUT_NEON)
    /* Written for AArch64, not compiled in gelu-quant's own tests (no ARM compiler there).
     * vqtbl4q_u8 looks up 64 bytes and returns 0 for indices >= 64; vqtbx4q_u8 keeps the
     * previous byte for them. The quarter k is indexed with u - 64k (mod 256), which is < 64
     * exactly for the bytes of that quarter. */
    {
        uint8x16x4_t q0, q1, q2, q3;
        const uint8x16_t fv = vdupq_n_u8((uint8_t)(flip & 0xffu));
        const uint8x16_t c64 = vdupq_n_u8(64), c128 = vdupq_n_u8(128), c192 = vdupq_n_u8(192);
        int k;
        for (k = 0; k < 4; k++) {
            q0.val[k] = vld1q_u8(table + 16 * k);
            q1.val[k] = vld1q_u8(table + 64 + 16 * k);
            q2.val[k] = vld1q_u8(table + 128 + 16 * k);
            q3.val[k] = vld1q_u8(table + 192 + 16 * k);
        }
        for (; i + 16 <= n; i += 16) {
            const uint8x16_t u = veorq_u8(vld1q_u8(in + i), fv);
            uint8x16_t r = vqtbl4q_u8(q0, u);
            r = vqtbx4q_u8(r, q1, vsubq_u8(u, c64));
            r = vqtbx4q_u8(r, q2, vsubq_u8(u, c128));
            r = vqtbx4q_u8(r, q3, vsubq_u8(u, c192));
            vst1q_u8(out + i, r);
        }
    }
#endif
#if !defined(GELU_LUT_AVX2) && !defined(GELU_LUT_SSSE3)
    (void)gelu_lut_prefix_xor;
#endif
    gelu_lut_bytes_scalar(in + i, out + i, n - i, table, flip);
}

void gelu_lut_s8_s8(const int8_t *in, int8_t *out, size_t n, const int8_t table[256])
{
    gelu_lut_bytes((const uint8_t *)in, (uint8_t *)out, n, (const uint8_t *)table, 0x80u);
}

void gelu_lut_s8_u8(const int8_t *in, uint8_t *out, size_t n, const uint8_t table[256])
{
    gelu_lut_bytes((const uint8_t *)in, out, n, table, 0x80u);
}

void gelu_lut_u8_s8(const uint8_t *in, int8_t *out, size_t n, const int8_t table[256])
{
    gelu_lut_bytes(in, (uint8_t *)out, n, (const uint8_t *)table, 0u);
}

void gelu_lut_u8_u8(const uint8_t *in, uint8_t *out, size_t n, const uint8_t table[256])
{
    gelu_lut_bytes(in, out, n, table, 0u);
}

/* Scalar kernels for the other type pairs: index = code - qmin. */
#define GELU_LUT_SCALAR(NAME, IN_T, OUT_T, OFFSET, N)                                          \
    void NAME(const IN_T *in, OUT_T *out, size_t n, const OUT_T table[N])                      \
    {                                                                                         \
        size_t i;                                                                             \
        for (i = 0; i < n; i++) {                                                             \
            out[i] = table[(long)in[i] + (OFFSET)];                                           \
        }                                                                                     \
    }

GELU_LUT_SCALAR(gelu_lut_s8_s16, int8_t, int16_t, 128, 256)
GELU_LUT_SCALAR(gelu_lut_s8_f16, int8_t, uint16_t, 128, 256)
GELU_LUT_SCALAR(gelu_lut_s8_f32, int8_t, float, 128, 256)
GELU_LUT_SCALAR(gelu_lut_u8_s16, uint8_t, int16_t, 0, 256)
GELU_LUT_SCALAR(gelu_lut_u8_f16, uint8_t, uint16_t, 0, 256)
GELU_LUT_SCALAR(gelu_lut_u8_f32, uint8_t, float, 0, 256)
GELU_LUT_SCALAR(gelu_lut_s16_s8, int16_t, int8_t, 32768, 65536)
GELU_LUT_SCALAR(gelu_lut_s16_u8, int16_t, uint8_t, 32768, 65536)
GELU_LUT_SCALAR(gelu_lut_s16_s16, int16_t, int16_t, 32768, 65536)
GELU_LUT_SCALAR(gelu_lut_s16_f16, int16_t, uint16_t, 32768, 65536)
GELU_LUT_SCALAR(gelu_lut_s16_f32, int16_t, float, 32768, 65536)
