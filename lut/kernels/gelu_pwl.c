/* gelu-quant reference kernel: non-uniform piecewise-linear tables. See gelu_pwl.h. */
#include "gelu_pwl.h"

/* The int32 value of a uint32 bit pattern (two's complement), without implementation-defined
 * conversions. */
static int32_t gelu_pwl_to_i32(uint32_t v)
{
    return v <= 0x7fffffffu ? (int32_t)v : (int32_t)(v - 0x80000000u) - 0x7fffffff - 1;
}

/* floor(v / 2^s) for every int32 v (s <= 30) without shifting a negative value: for v < 0,
 * floor(v / 2^s) = ~(~v >> s) with ~v >= 0; m is all ones for v < 0 and 0 otherwise. */
static int32_t gelu_pwl_floor_shift(int32_t v, unsigned s)
{
    const uint32_t m = 0u - (uint32_t)(v < 0);
    return gelu_pwl_to_i32((((uint32_t)v ^ m) >> s) ^ m);
}

int32_t gelu_pwl_code(int32_t q, const int32_t *starts, const int32_t *bases,
                      const int32_t *slopes, unsigned segments, unsigned shift)
{
    /* k = the largest index with starts[k] <= q (0 if none): binary search on the count */
    unsigned k = 0, step = 1;
    while (step * 2u <= segments) {
        step *= 2u;
    }
    for (; step; step >>= 1) {
        const unsigned probe = k + step;
        k += (probe < segments && starts[probe] <= q) ? step : 0u;
    }
    {
        /* int32 arithmetic modulo 2^32, as numpy's int32 arrays do it */
        const uint32_t d = (uint32_t)q - (uint32_t)starts[k];
        const uint32_t acc = (uint32_t)bases[k] + d * (uint32_t)slopes[k];
        return gelu_pwl_floor_shift(gelu_pwl_to_i32(acc), shift);
    }
}

#define GELU_PWL_DEF(NAME, IN_T, OUT_T, QMIN, QMAX)                                            \
    GELU_PWL_DECL(NAME, IN_T, OUT_T)                                                           \
    {                                                                                          \
        size_t i;                                                                              \
        for (i = 0; i < n; i++) {                                                              \
            int32_t y = gelu_pwl_code((int32_t)in[i], starts, bases, slopes, segments, shift); \
            y = y < (QMIN) ? (QMIN) : (y > (QMAX) ? (QMAX) : y);                               \
            out[i] = (OUT_T)y;                                                                 \
        }                                                                                      \
    }

GELU_PWL_DEF(gelu_pwl_s8_s8, int8_t, int8_t, -128, 127)
GELU_PWL_DEF(gelu_pwl_s8_u8, int8_t, uint8_t, 0, 255)
GELU_PWL_DEF(gelu_pwl_s8_s16, int8_t, int16_t, -32768, 32767)
GELU_PWL_DEF(gelu_pwl_u8_s8, uint8_t, int8_t, -128, 127)
GELU_PWL_DEF(gelu_pwl_u8_u8, uint8_t, uint8_t, 0, 255)
GELU_PWL_DEF(gelu_pwl_u8_s16, uint8_t, int16_t, -32768, 32767)
GELU_PWL_DEF(gelu_pwl_s16_s8, int16_t, int8_t, -128, 127)
GELU_PWL_DEF(gelu_pwl_s16_u8, int16_t, uint8_t, 0, 255)
GELU_PWL_DEF(gelu_pwl_s16_s16, int16_t, int16_t, -32768, 32767)
