/* gelu-quant reference kernel: piecewise polynomial GELU with float16 inputs and outputs
 * (PolySpec with io_dtype = float16; compute_dtype float16 or float32).
 *
 * Portable C99, no allocation. Float16 values are IEEE binary16 bit patterns in uint16_t,
 * as in the spec's generated header: `NAME_breakpoints[K + 1]` (float16), `NAME_origins[K]`
 * and `NAME_coefficients[K][D + 1]` (low order first) in the compute dtype (uint16_t bit
 * patterns for float16, float for float32), K = `NAME_SEGMENTS`, D = `NAME_DEGREE`. For each
 * input x (PolySpec.evaluate):
 *
 *   NaN -> x (the same bits);  x < breakpoints[0] -> +0;  x > breakpoints[K] -> x;
 *   otherwise k = #{ j in 1..K-1 : x >= breakpoints[j] },  t = x - origins[k],
 *   acc = c[k][D];  for j = D-1 .. 0:  acc = acc * t;  acc = acc + c[k][j];
 *   -> acc rounded to float16
 *
 * with every operation rounded to the compute dtype and no fused multiply-add.
 *
 * gelu_poly_f16 (float16 arithmetic) computes each float16 operation in float32 and rounds
 * the result to float16 (round to nearest even). That is the correctly rounded float16
 * operation: for + - * of two binary16 values the exact result rounded to binary32 (24
 * significand bits >= 2 * 11 + 2) and then to binary16 equals the exact result rounded to
 * binary16 directly (double rounding is innocuous when p >= 2q + 2; Figueroa 1995). The
 * products and sums of binary16 values never leave binary32's normal range, and results in
 * binary16's subnormal range only have fewer than 11 bits, which keeps the condition. This
 * is also how numpy evaluates float16 ufuncs, so the kernel matches the numpy reference bit
 * for bit. The conversions use the compiler's _Float16 where it has one (GCC >= 12 on
 * x86-64 with SSE2, hardware with -mf16c or -mavx512fp16; AArch64), otherwise (or with
 * -DGELU_POLY_F16_PORTABLE) exact integer code; gelu_poly_f16_arith() says which.
 * Like the float32 kernel: FLT_EVAL_METHOD 0, no -ffast-math. `out` may equal `in`.
 */
#ifndef GELU_QUANT_GELU_POLY_F16_H
#define GELU_QUANT_GELU_POLY_F16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* io float16, compute float16 */
void gelu_poly_f16(const uint16_t *in, uint16_t *out, size_t n, size_t segments,
                   size_t degree, const uint16_t *breakpoints, const uint16_t *origins,
                   const uint16_t *coefficients);

/* io float16, compute float32 */
void gelu_poly_f16_c32(const uint16_t *in, uint16_t *out, size_t n, size_t segments,
                       size_t degree, const uint16_t *breakpoints, const float *origins,
                       const float *coefficients);

/* Exact binary16 -> binary32, and binary32 -> binary16 rounded to nearest even (NaN keeps
 * its sign and top payload bits and stays NaN, as numpy converts). */
float gelu_f16_to_f32(uint16_t h);
uint16_t gelu_f32_to_f16(float f);

/* How the float16 conversions are done: "_Float16" or "portable". */
const char *gelu_poly_f16_arith(void);

/* The SIMD path of gelu_poly_f16: "avx512fp16" (with -mavx512fp16 -mavx512bw: 32 lanes of
 * native float16 arithmetic, for K <= 32 and D <= 8) or "scalar" (-DGELU_POLY_NO_SIMD). */
const char *gelu_poly_f16_simd(void);

#ifdef __cplusplus
}
#endif

#endif /* GELU_QUANT_GELU_POLY_F16_H */
