/* gelu-quant reference kernel: piecewise polynomial GELU in float32 (PolySpec with
 * io_dtype = compute_dtype = float32).
 *
 * Portable C99, no allocation. The arrays come from the spec's generated header:
 * `NAME_breakpoints[K + 1]`, `NAME_origins[K]`, `NAME_coefficients[K][D + 1]` (low order
 * first), K = `NAME_SEGMENTS`, D = `NAME_DEGREE`. For each input x (PolySpec.evaluate):
 *
 *   NaN -> x (the same bits);  x < breakpoints[0] -> +0;  x > breakpoints[K] -> x;
 *   otherwise k = #{ j in 1..K-1 : x >= breakpoints[j] },  t = x - origins[k],
 *   acc = c[k][D];  for j = D-1 .. 0:  acc = acc * t;  acc = acc + c[k][j];   -> acc
 *
 * every operation rounded to float32, no fused multiply-add. Bit-exact with the numpy
 * reference when float is IEEE binary32 evaluated in its own precision (FLT_EVAL_METHOD 0:
 * SSE2 on x86-64, AArch64, ...) and the compiler does not contract a * b + c into an FMA:
 * compile with -ffp-contract=off (GCC's default in ISO modes such as -std=c99; the source
 * also asks for it with pragmas), never with -ffast-math. `out` may equal `in`.
 *
 * The portable loop (no intrinsics) runs 4 values at a time stage by stage, for K <= 64 and
 * D <= 8, so that their Horner chains interleave and the compiler vectorises it (gcc -O2: SSE2
 * on x86-64); k by counting compares or, for K >= 9 and n >= 1024, by an exact grid lookup
 * (see the source); other K and D, and the last n % 4 values, go one at a time. With AVX-512F
 * (-mavx512f; K <= 64, D <= 8: 16 lanes, table permutes) or AVX2 (-mavx2: 8 lanes; K <= 64,
 * D <= 8: grid index, permutes or transposed table rows; otherwise counting and gathers) the
 * values go through a SIMD path. Every path performs the same operations value by value
 * (bit-identical); -DGELU_POLY_NO_SIMD keeps the portable loop. gelu_poly_f32_simd() names the
 * compiled-in path ("avx512f", "avx2" or "scalar"). All paths assume the default
 * floating-point environment (round to nearest, no flush-to-zero).
 */
#ifndef GELU_QUANT_GELU_POLY_F32_H
#define GELU_QUANT_GELU_POLY_F32_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void gelu_poly_f32(const float *in, float *out, size_t n, size_t segments, size_t degree,
                   const float *breakpoints, const float *origins, const float *coefficients);

const char *gelu_poly_f32_simd(void);

#ifdef __cplusplus
}
#endif

#endif /* GELU_QUANT_GELU_POLY_F32_H */
