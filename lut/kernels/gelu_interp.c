/* gelu-quant reference kernel: interpolated small tables. See gelu_interp.h. */
#include "gelu_interp.h"

/* The int32 value of a uint32 bit pattern (two's complement), without implementation-defined
 * conversions. */
static int32_t gelu_interp_to_i32(uint32_t v)
{
    return v <= 0x7fffffffu ? (int32_t)v : (int32_t)(v - 0x80000000u) - 0x7fffffff - 1;
}

/* floor(v / 2^s) for every int32 v (s <= 30), without branches or shifts of negative values:
 * for v < 0, floor(v / 2^s) = ~(~v >> s) and ~v = -v - 1 >= 0. With m = all ones for v < 0 and
 * 0 otherwise, v ^ m is v or ~v, shifted as an unsigned value, and ^ m undoes the complement. */
static int32_t gelu_interp_floor_shift(int32_t v, unsigned s)
{
    const uint32_t m = 0u - (uint32_t)(v < 0);
    return gelu_interp_to_i32((((uint32_t)v ^ m) >> s) ^ m);
}

/* One output code for the table index u = q - qmin (0..255), before clipping. */
static int32_t gelu_interp_code(unsigned u, const int32_t *knots, unsigned s)
{
    const unsigned k = u >> s;
    const uint32_t f = (uint32_t)(u & ((1u << s) - 1u));
    const uint32_t lo = (uint32_t)knots[k];
    const uint32_t hi = (uint32_t)knots[k + 1];
    const uint32_t half = s ? (1u << (s - 1u)) : 0u;
    /* int32 arithmetic modulo 2^32, as numpy's int32 arrays do it */
    const uint32_t num = (lo << s) + (hi - lo) * f + half;
    return gelu_interp_floor_shift(gelu_interp_to_i32(num), s);
}

#define GELU_INTERP(NAME, IN_T, OUT_T, FLIP, QMIN, QMAX)                                      \
    void NAME(const IN_T *in, OUT_T *out, size_t n, const int32_t *knots, unsigned shift)    \
    {                                                                                         \
        size_t i;                                                                             \
        for (i = 0; i < n; i++) {                                                             \
            int32_t y = gelu_interp_code((unsigned)((uint8_t)in[i] ^ (FLIP)), knots, shift);  \
            y = y < (QMIN) ? (QMIN) : (y > (QMAX) ? (QMAX) : y);                              \
            out[i] = (OUT_T)y;                                                                \
        }                                                                                     \
    }

/* int8 codes: q - qmin = q + 128 = (uint8_t)q ^ 0x80 */
GELU_INTERP(gelu_interp_s8_s8, int8_t, int8_t, 0x80u, -128, 127)
GELU_INTERP(gelu_interp_s8_u8, int8_t, uint8_t, 0x80u, 0, 255)
GELU_INTERP(gelu_interp_s8_s16, int8_t, int16_t, 0x80u, -32768, 32767)
GELU_INTERP(gelu_interp_u8_s8, uint8_t, int8_t, 0u, -128, 127)
GELU_INTERP(gelu_interp_u8_u8, uint8_t, uint8_t, 0u, 0, 255)
GELU_INTERP(gelu_interp_u8_s16, uint8_t, int16_t, 0u, -32768, 32767)
