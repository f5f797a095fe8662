/* The per-value work of gelu_quant.calib.stats.TensorStats.update, compiled.
 *
 * Two functions, each one pass over a C-contiguous float32 or float64 buffer, run without the
 * GIL (so several statistics workers and ONNX Runtime share the cores):
 *
 *   channel_extremes(x, is_double, channels, out_min, out_max) -> nonfinite
 *       per-channel (last axis) minimum and maximum of the finite values of x, written to the
 *       float64 buffers out_min / out_max (+inf / -inf for a channel without finite values);
 *       returns the number of non-finite values (NaN, +inf, -inf).
 *
 *   histogram(x, is_double, scale, offset, counts) -> outside
 *       for every finite value v: counts[floor(v * scale) - offset] += 1, in float64 arithmetic
 *       (exact: scale is a power of two and |v * scale| < 2**24); returns the number of finite
 *       values whose bin falls outside counts (they are not counted; the caller treats any as
 *       a bug).
 *
 * The results are, bit for bit, those of the numpy implementation in stats.py (tests compare
 * the two); that implementation is used when this module is not built.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- channel extremes ----------------------------------------------------------------- */

/* A fast pass, whose min/max ignore NaN (a comparison with NaN is false) but would take +-inf,
 * counts the non-finite values; when there are any, a second, careful pass runs. The fast
 * loop is written without branches so that compilers vectorise it. */
#define EXTREMES(T, ABS, BIG)                                                                   \
    static void reset_##T(Py_ssize_t c, T *restrict lo, T *restrict hi) {                       \
        for (Py_ssize_t j = 0; j < c; j++) {                                                    \
            lo[j] = (T)INFINITY;                                                                \
            hi[j] = (T)-INFINITY;                                                               \
        }                                                                                       \
    }                                                                                           \
    static Py_ssize_t extremes_##T(const T *restrict x, Py_ssize_t rows, Py_ssize_t c,          \
                                   T *restrict lo, T *restrict hi) {                            \
        Py_ssize_t nonfinite = 0;                                                               \
        reset_##T(c, lo, hi);                                                                   \
        for (Py_ssize_t r = 0; r < rows; r++) {                                                 \
            const T *restrict row = x + r * c;                                                  \
            int bad = 0;                                                                        \
            for (Py_ssize_t j = 0; j < c; j++) {                                                \
                T v = row[j];                                                                   \
                lo[j] = v < lo[j] ? v : lo[j];                                                  \
                hi[j] = v > hi[j] ? v : hi[j];                                                  \
                bad |= !(ABS(v) <= (BIG));                                                      \
            }                                                                                   \
            if (bad) {                                                                          \
                for (Py_ssize_t j = 0; j < c; j++) nonfinite += !(ABS(row[j]) <= (BIG));        \
            }                                                                                   \
        }                                                                                       \
        if (nonfinite == 0) return 0;                                                           \
        reset_##T(c, lo, hi); /* the careful pass: finite values only */                        \
        for (Py_ssize_t r = 0; r < rows; r++) {                                                 \
            const T *restrict row = x + r * c;                                                  \
            for (Py_ssize_t j = 0; j < c; j++) {                                                \
                T v = row[j];                                                                   \
                if (ABS(v) <= (BIG)) {                                                          \
                    lo[j] = v < lo[j] ? v : lo[j];                                              \
                    hi[j] = v > hi[j] ? v : hi[j];                                              \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return nonfinite;                                                                       \
    }

EXTREMES(float, fabsf, FLT_MAX)
EXTREMES(double, fabs, DBL_MAX)

static PyObject *channel_extremes(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, out_min, out_max;
    int is_double;
    Py_ssize_t c;
    if (!PyArg_ParseTuple(args, "y*pnw*w*", &x, &is_double, &c, &out_min, &out_max)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t item = is_double ? 8 : 4;
    if (c <= 0 || x.len % (item * c) != 0 || out_min.len != 8 * c || out_max.len != 8 * c) {
        PyErr_SetString(PyExc_ValueError, "channel_extremes: buffer sizes do not match");
        goto done;
    }
    Py_ssize_t rows = x.len / (item * c);
    double *omin = (double *)out_min.buf, *omax = (double *)out_max.buf;
    Py_ssize_t nonfinite = 0;
    void *scratch = malloc((size_t)(2 * c * item));
    if (scratch == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    if (is_double) {
        double *lo = (double *)scratch, *hi = lo + c;
        nonfinite = extremes_double((const double *)x.buf, rows, c, lo, hi);
        for (Py_ssize_t j = 0; j < c; j++) {
            omin[j] = lo[j];
            omax[j] = hi[j];
        }
    } else {
        float *lo = (float *)scratch, *hi = lo + c;
        nonfinite = extremes_float((const float *)x.buf, rows, c, lo, hi);
        for (Py_ssize_t j = 0; j < c; j++) {
            omin[j] = (double)lo[j];
            omax[j] = (double)hi[j];
        }
    }
    Py_END_ALLOW_THREADS;
    free(scratch);
    result = PyLong_FromSsize_t(nonfinite);
done:
    PyBuffer_Release(&x);
    PyBuffer_Release(&out_min);
    PyBuffer_Release(&out_max);
    return result;
}

/* ---- histogram ------------------------------------------------------------------------- */

/* Values are binned a block at a time: first every value's bin number goes into a small
 * buffer (a loop without branches, which compilers vectorise), then the bins are counted.
 * Two extra slots catch the rest: SLOT_NONFINITE for NaN/inf (not counted; the caller counts
 * them in channel_extremes) and SLOT_OUTSIDE for a finite value whose bin lies outside
 * [0, bins) (the caller guarantees there are none). Counting goes into 32-bit counters that
 * are added to the caller's 64-bit counts every FLUSH_EVERY values, before they could wrap. */
#define BLOCK 4096
#define FLUSH_EVERY ((Py_ssize_t)1 << 30)
#define SLOT_NONFINITE(bins) (bins)
#define SLOT_OUTSIDE(bins) ((bins) + 1)

/* floor(v * scale) - offset as an index (float32 arithmetic: exact when scale >= 1 and the
 * result is below 2**24 in magnitude, as for numpy's float32 path). */
static void bins_float(const float *restrict x, Py_ssize_t n, float scale, int32_t offset,
                       uint32_t bins, uint32_t *restrict idx) {
    const float lim = 1073741824.0f; /* 2**30: keeps the conversion to int32 defined */
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = x[i];
        uint32_t finite = -(uint32_t)(fabsf(v) <= FLT_MAX); /* all ones or zero */
        float f = v * scale;
        f = f > -lim ? f : -lim; /* NaN becomes -lim; it goes to SLOT_NONFINITE anyway */
        f = f < lim ? f : lim;
        int32_t t = (int32_t)f;
        t -= (f < (float)t); /* truncation went up: floor is one less */
        uint32_t b = (uint32_t)(t - offset);
        uint32_t inside = -(uint32_t)(b < bins);
        b = (b & inside) | (SLOT_OUTSIDE(bins) & ~inside);
        idx[i] = (b & finite) | (SLOT_NONFINITE(bins) & ~finite);
    }
}

/* The same in float64 arithmetic (float64 data, or float32 data with scale < 1). */
#define BINS_DOUBLE(T, ABS, BIG)                                                                \
    static void bins_double_##T(const T *restrict x, Py_ssize_t n, double scale,                \
                                int64_t offset, uint32_t bins, uint32_t *restrict idx) {        \
        const double lim = 4611686018427387904.0; /* 2**62 */                                   \
        for (Py_ssize_t i = 0; i < n; i++) {                                                    \
            uint32_t finite = -(uint32_t)(ABS(x[i]) <= (BIG));                                  \
            double f = (double)x[i] * scale;                                                    \
            f = f > -lim ? f : -lim;                                                            \
            f = f < lim ? f : lim;                                                              \
            int64_t t = (int64_t)f;                                                             \
            t -= (f < (double)t);                                                               \
            uint64_t b64 = (uint64_t)(t - offset);                                              \
            uint32_t inside = -(uint32_t)(b64 < bins);                                          \
            uint32_t b = ((uint32_t)b64 & inside) | (SLOT_OUTSIDE(bins) & ~inside);             \
            idx[i] = (b & finite) | (SLOT_NONFINITE(bins) & ~finite);                           \
        }                                                                                       \
    }

BINS_DOUBLE(float, fabsf, FLT_MAX)
BINS_DOUBLE(double, fabs, DBL_MAX)

/* Count x into counts[0..bins); returns the number of finite values outside. */
static Py_ssize_t count_bins(const void *x, int is_double, Py_ssize_t n, double scale,
                             int64_t offset, int64_t *counts, uint32_t bins, uint32_t *local) {
    uint32_t idx[BLOCK];
    int float_math = !is_double && scale >= 1.0;
    Py_ssize_t outside = 0;
    for (Py_ssize_t start = 0; start < n; start += FLUSH_EVERY) {
        Py_ssize_t stop = n - start < FLUSH_EVERY ? n : start + FLUSH_EVERY;
        memset(local, 0, sizeof(uint32_t) * ((size_t)bins + 2));
        for (Py_ssize_t s = start; s < stop; s += BLOCK) {
            Py_ssize_t m = stop - s < BLOCK ? stop - s : BLOCK;
            if (float_math) {
                bins_float((const float *)x + s, m, (float)scale, (int32_t)offset, bins, idx);
            } else if (is_double) {
                bins_double_double((const double *)x + s, m, scale, offset, bins, idx);
            } else {
                bins_double_float((const float *)x + s, m, scale, offset, bins, idx);
            }
            for (Py_ssize_t i = 0; i < m; i++) local[idx[i]] += 1;
        }
        for (uint32_t b = 0; b < bins; b++) counts[b] += local[b];
        outside += local[SLOT_OUTSIDE(bins)];
    }
    return outside;
}

static PyObject *histogram(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, counts;
    int is_double;
    double scale;
    long long offset;
    if (!PyArg_ParseTuple(args, "y*pdLw*", &x, &is_double, &scale, &offset, &counts)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t item = is_double ? 8 : 4;
    if (x.len % item != 0 || counts.len % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "histogram: buffer sizes do not match");
        goto done;
    }
    Py_ssize_t n = x.len / item, bins = counts.len / 8, outside = 0;
    if (bins > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "histogram: too many bins");
        goto done;
    }
    /* float32 arithmetic needs the offset and |v * scale| below 2**24, as the caller keeps */
    if (!is_double && scale >= 1.0 && (offset > (1 << 24) || offset < -(1 << 24))) {
        PyErr_SetString(PyExc_ValueError, "histogram: offset out of float32 range");
        goto done;
    }
    uint32_t *local = malloc(sizeof(uint32_t) * ((size_t)bins + 2));
    if (local == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    outside = count_bins(x.buf, is_double, n, scale, (int64_t)offset, (int64_t *)counts.buf,
                         (uint32_t)bins, local);
    Py_END_ALLOW_THREADS;
    free(local);
    result = PyLong_FromSsize_t(outside);
done:
    PyBuffer_Release(&x);
    PyBuffer_Release(&counts);
    return result;
}

static PyMethodDef methods[] = {
    {"channel_extremes", channel_extremes, METH_VARARGS,
     "channel_extremes(x, is_double, channels, out_min, out_max) -> nonfinite count"},
    {"histogram", histogram, METH_VARARGS,
     "histogram(x, is_double, scale, offset, counts) -> count of values outside counts"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_statskernel",
    .m_doc = "Compiled per-value loops of TensorStats.update (see stats.py).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__statskernel(void) { return PyModule_Create(&module); }
