/* gelu-quant reference kernel: piecewise polynomial GELU in float32. See gelu_poly_f32.h. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "gelu_poly_f32.h"

/* #{ j : base[j] <= x } for the ascending array base[0..m): a branchless upper bound. */
static size_t gelu_poly_f32_segment(float x, const float *base, size_t m)
{
    const float *b = base;
    while (m > 1) {
        const size_t half = m / 2;
        b = (b[half] <= x) ? b + half : b;
        m -= half;
    }
    return (size_t)(b - base) + (size_t)(m == 1 && b[0] <= x);
}

void gelu_poly_f32(const float *in, float *out, size_t n, size_t segments, size_t degree,
                   const float *breakpoints, const float *origins, const float *coefficients)
{
    const float lo = breakpoints[0];
    const float hi = breakpoints[segments];
    const size_t stride = degree + 1;
    size_t i;
    for (i = 0; i < n; i++) {
        const float x = in[i];
        if (x != x || x > hi) {
            out[i] = x; /* NaN keeps its bits; GELU(x) -> x above the range */
        } else if (x < lo) {
            out[i] = 0.0f;
        } else {
            const size_t k = gelu_poly_f32_segment(x, breakpoints + 1, segments - 1);
            const float *c = coefficients + k * stride;
            const float t = x - origins[k];
            float acc = c[degree];
            size_t j = degree;
            while (j-- > 0) {
                acc = acc * t;
                acc = acc + c[j];
            }
            out[i] = acc;
        }
    }
}
