/* gelu-quant reference kernel: full lookup tables (one entry per input code).
 *
 * Portable C99, no allocation, no global state. The table comes from the spec's generated
 * header (`NAME_table`, entry for input code q at index q - qmin):
 *   int8 in  -> 256 entries, index q + 128
 *   uint8 in -> 256 entries, index q
 *   int16 in -> 65536 entries, index q + 32768
 * Output element types: int8_t, uint8_t, int16_t, uint16_t (IEEE binary16 bit patterns for
 * float16 tables) and float.
 *
 * The 8-bit -> 8-bit kernels (s8/u8 in, s8/u8 out) have a SIMD path chosen at compile time,
 * bit-identical to the scalar loop: AVX-512 VBMI (-mavx512vbmi -mavx512bw: two 128-byte
 * vpermi2b lookups and a blend on bit 7), AVX2 (-mavx2: 16 in-lane vpshufb over a prefix-xor
 * decomposition of the table), SSSE3 (-mssse3: the same with 128-bit vectors) or AArch64 NEON
 * (vqtbl4q/vqtbx4q over four 64-byte quarters). Define GELU_LUT_NO_SIMD to force the scalar
 * loop; gelu_lut_simd() names the path that was compiled in.
 *
 * `out` may be the same buffer as `in` only when both have the same element size (8->8 or
 * 16->16 bit); other overlaps are not allowed.
 */
#ifndef GELU_QUANT_GELU_LUT_H
#define GELU_QUANT_GELU_LUT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 8-bit in, 8-bit out: SIMD path where compiled in. */
void gelu_lut_s8_s8(const int8_t *in, int8_t *out, size_t n, const int8_t table[256]);
void gelu_lut_s8_u8(const int8_t *in, uint8_t *out, size_t n, const uint8_t table[256]);
void gelu_lut_u8_s8(const uint8_t *in, int8_t *out, size_t n, const int8_t table[256]);
void gelu_lut_u8_u8(const uint8_t *in, uint8_t *out, size_t n, const uint8_t table[256]);

/* The byte-to-byte core: out[i] = table[in[i] ^ flip]; flip is 0x80 for int8 input codes
 * (q + 128 == (uint8_t)q ^ 0x80) and 0 for uint8. The _scalar variant never uses SIMD. */
void gelu_lut_bytes(const uint8_t *in, uint8_t *out, size_t n, const uint8_t table[256],
                    unsigned flip);
void gelu_lut_bytes_scalar(const uint8_t *in, uint8_t *out, size_t n,
                           const uint8_t table[256], unsigned flip);

/* Name of the compiled-in SIMD path: "avx512vbmi", "avx2", "ssse3", "neon" or "scalar". */
const char *gelu_lut_simd(void);

/* 8-bit in, wider out (scalar). */
void gelu_lut_s8_s16(const int8_t *in, int16_t *out, size_t n, const int16_t table[256]);
void gelu_lut_s8_f16(const int8_t *in, uint16_t *out, size_t n, const uint16_t table[256]);
void gelu_lut_s8_f32(const int8_t *in, float *out, size_t n, const float table[256]);
void gelu_lut_u8_s16(const uint8_t *in, int16_t *out, size_t n, const int16_t table[256]);
void gelu_lut_u8_f16(const uint8_t *in, uint16_t *out, size_t n, const uint16_t table[256]);
void gelu_lut_u8_f32(const uint8_t *in, float *out, size_t n, const float table[256]);

/* int16 in (65536-entry tables, scalar). */
void gelu_lut_s16_s8(const int16_t *in, int8_t *out, size_t n, const int8_t table[65536]);
void gelu_lut_s16_u8(const int16_t *in, uint8_t *out, size_t n, const uint8_t table[65536]);
void gelu_lut_s16_s16(const int16_t *in, int16_t *out, size_t n, const int16_t table[65536]);
void gelu_lut_s16_f16(const int16_t *in, uint16_t *out, size_t n,
                      const uint16_t table[65536]);
void gelu_lut_s16_f32(const int16_t *in, float *out, size_t n, const float table[65536]);

#ifdef __cplusplus
}
#endif

#endif /* GELU_QUANT_GELU_LUT_H */
