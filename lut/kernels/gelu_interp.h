/* gelu-quant reference kernel: interpolated small tables (InterpLutSpec).
 *
 * Portable C99, no allocation. `knots` holds N + 1 int32 output codes (`NAME_knots` in the
 * spec's generated header) and `shift` is s = log2(256 / N) (`NAME_SHIFT`). For each 8-bit
 * input code q, with u = q - qmin in [0, 255]:
 *
 *     k = u >> s,  f = u & (2^s - 1)
 *     y = floor((knot[k] * 2^s + (knot[k+1] - knot[k]) * f + 2^(s-1)) / 2^s)   (int32)
 *     y = clip(y, out_qmin, out_qmax)
 *
 * exactly as gelu_quant.lut.interp.InterpLutSpec.lookup computes it, including int32
 * wrap-around for knots far outside the output range (the arithmetic is done in uint32 and
 * the floor division is exact for every int32, with no implementation-defined shifts).
 * `out` may be the same buffer as `in` when both are 8-bit.
 */
#ifndef GELU_QUANT_GELU_INTERP_H
#define GELU_QUANT_GELU_INTERP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void gelu_interp_s8_s8(const int8_t *in, int8_t *out, size_t n, const int32_t *knots,
                       unsigned shift);
void gelu_interp_s8_u8(const int8_t *in, uint8_t *out, size_t n, const int32_t *knots,
                       unsigned shift);
void gelu_interp_s8_s16(const int8_t *in, int16_t *out, size_t n, const int32_t *knots,
                        unsigned shift);
void gelu_interp_u8_s8(const uint8_t *in, int8_t *out, size_t n, const int32_t *knots,
                       unsigned shift);
void gelu_interp_u8_u8(const uint8_t *in, uint8_t *out, size_t n, const int32_t *knots,
                       unsigned shift);
void gelu_interp_u8_s16(const uint8_t *in, int16_t *out, size_t n, const int32_t *knots,
                        unsigned shift);

#ifdef __cplusplus
}
#endif

#endif /* GELU_QUANT_GELU_INTERP_H */
