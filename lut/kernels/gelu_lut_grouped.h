/* gelu-quant reference kernel: grouped lookup tables (GroupedLutSpec).
 *
 * Portable C99, no allocation, no global state. A grouped spec has K tables over the channels
 * of the last axis; its generated header holds
 *   `NAME_tables[K][E]`       one table per group, entry for input code q at index q - qmin
 *                             (E = 256 for int8 / uint8 codes, 65536 for int16 codes)
 *   `NAME_channel_group[C]`   the group (0..K-1) of every channel, as uint8_t
 * and the binding header `NAME_kernel.h` passes them as `&NAME_tables[0][0]` and
 * `NAME_channel_group` with `channels` = C.
 *
 * The input is n codes in row-major order with the channel on the last (fastest) axis, i.e.
 * [rows, channels] with rows = n / channels: element i belongs to channel i % channels, and
 *
 *     out[i] = tables[channel_group[i % channels] * E + (in[i] - qmin)]
 *
 * exactly as gelu_quant.lut.grouped.GroupedLutSpec.lookup computes it. n need not be a
 * multiple of channels (a last partial row is computed like the others); channels == 0 writes
 * nothing. Every channel_group entry must be < K (the spec guarantees it).
 * Output element types: int8_t, uint8_t, int16_t, uint16_t (IEEE binary16 bit patterns for
 * float16 tables) and float. `out` may be the same buffer as `in` only when both have the same
 * element size; other overlaps are not allowed.
 */
#ifndef GELU_QUANT_GELU_LUT_GROUPED_H
#define GELU_QUANT_GELU_LUT_GROUPED_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GELU_LUT_GROUPED_DECL(NAME, IN_T, OUT_T)                                               \
    void NAME(const IN_T *in, OUT_T *out, size_t n, size_t channels,                           \
              const uint8_t *channel_group, const OUT_T *tables)

/* 8-bit codes in: tables of 256 entries. */
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s8_s8, int8_t, int8_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s8_u8, int8_t, uint8_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s8_s16, int8_t, int16_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s8_f16, int8_t, uint16_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s8_f32, int8_t, float);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_u8_s8, uint8_t, int8_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_u8_u8, uint8_t, uint8_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_u8_s16, uint8_t, int16_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_u8_f16, uint8_t, uint16_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_u8_f32, uint8_t, float);

/* int16 codes in: tables of 65536 entries. */
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s16_s8, int16_t, int8_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s16_u8, int16_t, uint8_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s16_s16, int16_t, int16_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s16_f16, int16_t, uint16_t);
GELU_LUT_GROUPED_DECL(gelu_lut_grouped_s16_f32, int16_t, float);

#ifdef __cplusplus
}
#endif

#endif /* GELU_QUANT_GELU_LUT_GROUPED_H */
