/* gelu-quant reference kernel: grouped lookup tables. See gelu_lut_grouped.h. */
#include "gelu_lut_grouped.h"

/* Row by row: within a row, channel c reads table channel_group[c] at index code - qmin
 * (code + OFFSET, OFFSET = -qmin). The group's table offset is (size_t)group << LOG2_E. */
#define GELU_LUT_GROUPED(NAME, IN_T, OUT_T, OFFSET, LOG2_E)                                    \
    GELU_LUT_GROUPED_DECL(NAME, IN_T, OUT_T)                                                   \
    {                                                                                          \
        size_t base, c;                                                                        \
        if (channels == 0) {                                                                   \
            return;                                                                            \
        }                                                                                      \
        for (base = 0; base < n; base += channels) {                                           \
            const size_t m = n - base < channels ? n - base : channels;                        \
            const IN_T *x = in + base;                                                         \
            OUT_T *y = out + base;                                                             \
            for (c = 0; c < m; c++) {                                                          \
                const size_t t = ((size_t)channel_group[c] << (LOG2_E));                       \
                y[c] = tables[t + (size_t)((long)x[c] + (OFFSET))];                            \
            }                                                                                  \
        }                                                                                      \
    }

GELU_LUT_GROUPED(gelu_lut_grouped_s8_s8, int8_t, int8_t, 128, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_s8_u8, int8_t, uint8_t, 128, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_s8_s16, int8_t, int16_t, 128, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_s8_f16, int8_t, uint16_t, 128, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_s8_f32, int8_t, float, 128, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_u8_s8, uint8_t, int8_t, 0, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_u8_u8, uint8_t, uint8_t, 0, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_u8_s16, uint8_t, int16_t, 0, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_u8_f16, uint8_t, uint16_t, 0, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_u8_f32, uint8_t, float, 0, 8)
GELU_LUT_GROUPED(gelu_lut_grouped_s16_s8, int16_t, int8_t, 32768, 16)
GELU_LUT_GROUPED(gelu_lut_grouped_s16_u8, int16_t, uint8_t, 32768, 16)
GELU_LUT_GROUPED(gelu_lut_grouped_s16_s16, int16_t, int16_t, 32768, 16)
GELU_LUT_GROUPED(gelu_lut_grouped_s16_f16, int16_t, uint16_t, 32768, 16)
GELU_LUT_GROUPED(gelu_lut_grouped_s16_f32, int16_t, float, 32768, 16)
