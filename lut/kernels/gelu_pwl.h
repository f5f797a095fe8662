/* gelu-quant reference kernel: non-uniform piecewise-linear tables (PwlLutSpec).
 *
 * Portable C99, no allocation. The spec's generated header holds, per segment k < S,
 * `NAME_starts[k]` (first input code of the segment, ascending, starts[0] = qmin),
 * `NAME_bases[k]` and `NAME_slopes[k]` (the segment's line in output codes with `NAME_SHIFT`
 * fraction bits, the rounding half already in the bases). For each input code q:
 *
 *     k   = the largest k with starts[k] <= q
 *     acc = bases[k] + (q - starts[k]) * slopes[k]       (int32)
 *     y   = clip(floor(acc / 2^shift), out_qmin, out_qmax)
 *
 * exactly as gelu_quant.lut.pwl.PwlLutSpec.lookup computes it. A spec guarantees that acc and
 * every partial result fit int32; the kernel computes modulo 2^32 in uint32 anyway (no signed
 * overflow, no implementation-defined shifts), as numpy's int32 arrays would. The segment is
 * found by a branchless binary search over `starts` (ceil(log2 S) rounds). Codes below
 * starts[0] use segment 0. `out` may be the same buffer as `in` when both have the same size.
 */
#ifndef GELU_QUANT_GELU_PWL_H
#define GELU_QUANT_GELU_PWL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GELU_PWL_DECL(NAME, IN_T, OUT_T)                                                       \
    void NAME(const IN_T *in, OUT_T *out, size_t n, const int32_t *starts,                     \
              const int32_t *bases, const int32_t *slopes, unsigned segments, unsigned shift)

GELU_PWL_DECL(gelu_pwl_s8_s8, int8_t, int8_t);
GELU_PWL_DECL(gelu_pwl_s8_u8, int8_t, uint8_t);
GELU_PWL_DECL(gelu_pwl_s8_s16, int8_t, int16_t);
GELU_PWL_DECL(gelu_pwl_u8_s8, uint8_t, int8_t);
GELU_PWL_DECL(gelu_pwl_u8_u8, uint8_t, uint8_t);
GELU_PWL_DECL(gelu_pwl_u8_s16, uint8_t, int16_t);
GELU_PWL_DECL(gelu_pwl_s16_s8, int16_t, int8_t);
GELU_PWL_DECL(gelu_pwl_s16_u8, int16_t, uint8_t);
GELU_PWL_DECL(gelu_pwl_s16_s16, int16_t, int16_t);

/* One output code before clipping, for input code q (any type's codes widened to int32). */
int32_t gelu_pwl_code(int32_t q, const int32_t *starts, const int32_t *bases,
                      const int32_t *slopes, unsigned segments, unsigned shift);

#ifdef __cplusplus
}
#endif

#endif /* GELU_QUANT_GELU_PWL_H */
