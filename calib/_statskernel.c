/* The per-value work of gelu_quant.calib.stats.TensorStats.update, compiled.
 *
 * Three functions, each one pass over a C-contiguous float32 or float64 buffer, run without the
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
 *   channel_histograms(x, is_double, channels, scales, offsets, counts) -> outside
 *       for every finite value v of channel c (position modulo channels):
 *       counts[c, floor(v * scales[c]) - offsets[c]] += 1 (float64 arithmetic, exact as above;
 *       counts is C-contiguous int64 [channels, bins]); returns the number of finite values
 *       outside their channel's window.
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

/* ---- per-channel histograms ------------------------------------------------------------ */

/* Row by row: first every value's counter index into a buffer (a loop without branches,
 * which compilers vectorise; two extra slots per channel catch a finite value outside the
 * window and a non-finite one), then the counters are incremented. The counters are 16-bit
 * local ones (all-MiniLM-L6-v2: 1536 x 514 x 2 bytes, within L2), added to the 64-bit counts
 * every CHANNEL_FLUSH rows, before they could wrap. floor is the truncation corrected by one,
 * as in bins_float / bins_double: in float32 arithmetic (4 or 8 lanes at a time) for float32
 * data when every channel's scale is >= 1 (exact, as for the tensor histogram), else in
 * float64. */
#define CHANNEL_FLUSH 65535
#define CHANNEL_SLOTS(bins) ((bins) + 2)

static void channel_index_float(const float *restrict row, Py_ssize_t c,
                                const float *restrict scales, const int32_t *restrict offsets,
                                uint32_t bins, uint32_t *restrict idx) {
    const float lim = 1073741824.0f; /* 2**30 */
    const uint32_t stride = CHANNEL_SLOTS(bins);
    for (Py_ssize_t j = 0; j < c; j++) {
        float v = row[j];
        uint32_t finite = -(uint32_t)(fabsf(v) <= FLT_MAX);
        float f = v * scales[j];
        f = f > -lim ? f : -lim;
        f = f < lim ? f : lim;
        int32_t t = (int32_t)f;
        t -= (f < (float)t);
        uint32_t b = (uint32_t)(t - offsets[j]);
        uint32_t inside = -(uint32_t)(b < bins);
        b = (b & inside) | (bins & ~inside);
        b = (b & finite) | ((bins + 1) & ~finite);
        idx[j] = (uint32_t)j * stride + b;
    }
}

#define CHANNEL_INDEX_DOUBLE(NAME, T, ABS, BIG)                                                 \
    static void NAME(const T *restrict row, Py_ssize_t c,                                       \
                                  const double *restrict scales,                                \
                                  const int64_t *restrict offsets, uint32_t bins,               \
                                  uint32_t *restrict idx) {                                     \
        const double lim = 4611686018427387904.0; /* 2**62 */                                   \
        const uint32_t stride = CHANNEL_SLOTS(bins);                                            \
        for (Py_ssize_t j = 0; j < c; j++) {                                                    \
            T v = row[j];                                                                       \
            uint32_t finite = -(uint32_t)(ABS(v) <= (BIG));                                     \
            double f = (double)v * scales[j];                                                   \
            f = f > -lim ? f : -lim;                                                            \
            f = f < lim ? f : lim;                                                              \
            int64_t t = (int64_t)f;                                                             \
            t -= (f < (double)t);                                                               \
            uint64_t b64 = (uint64_t)(t - offsets[j]);                                          \
            uint32_t inside = -(uint32_t)(b64 < bins);                                          \
            uint32_t b = ((uint32_t)b64 & inside) | (bins & ~inside);                           \
            b = (b & finite) | ((bins + 1) & ~finite);                                          \
            idx[j] = (uint32_t)j * stride + b;                                                  \
        }                                                                                       \
    }

CHANNEL_INDEX_DOUBLE(channel_index_float_d, float, fabsf, FLT_MAX)
CHANNEL_INDEX_DOUBLE(channel_index_double, double, fabs, DBL_MAX)

/* mode 0: float32 data, float32 math; 1: float32 data, float64 math; 2: float64 data.
 * A chunk of CHANNEL_ROWS rows at a time: first the indices of all its values, then the
 * increments a block of CHANNEL_BLOCK channels at a time, so that the counters being
 * incremented (CHANNEL_BLOCK x 514 x 2 bytes) stay in L1; incrementing row by row across all
 * channels instead spread every row's increments over 1.6 MB and took twice as long. */
#define CHANNEL_ROWS 128
#define CHANNEL_BLOCK 32

static Py_ssize_t channel_hist(const void *x, int mode, Py_ssize_t rows, Py_ssize_t c,
                               const double *scales, const int64_t *offsets,
                               const float *scales_f, const int32_t *offsets_i, int64_t *counts,
                               uint32_t bins, uint16_t *restrict local, uint32_t *restrict idx) {
    Py_ssize_t outside = 0;
    const uint32_t stride = CHANNEL_SLOTS(bins);
    for (Py_ssize_t f0 = 0; f0 < rows; f0 += CHANNEL_FLUSH) {
        Py_ssize_t f1 = rows - f0 < CHANNEL_FLUSH ? rows : f0 + CHANNEL_FLUSH;
        memset(local, 0, sizeof(uint16_t) * (size_t)c * stride);
        for (Py_ssize_t r0 = f0; r0 < f1; r0 += CHANNEL_ROWS) {
            Py_ssize_t n = f1 - r0 < CHANNEL_ROWS ? f1 - r0 : CHANNEL_ROWS;
            for (Py_ssize_t i = 0; i < n; i++) {
                Py_ssize_t r = r0 + i;
                uint32_t *out = idx + (size_t)i * c;
                if (mode == 0) {
                    channel_index_float((const float *)x + r * c, c, scales_f, offsets_i, bins,
                                        out);
                } else if (mode == 1) {
                    channel_index_float_d((const float *)x + r * c, c, scales, offsets, bins,
                                          out);
                } else {
                    channel_index_double((const double *)x + r * c, c, scales, offsets, bins,
                                         out);
                }
            }
            for (Py_ssize_t c0 = 0; c0 < c; c0 += CHANNEL_BLOCK) {
                Py_ssize_t c1 = c - c0 < CHANNEL_BLOCK ? c : c0 + CHANNEL_BLOCK;
                for (Py_ssize_t i = 0; i < n; i++) {
                    const uint32_t *row = idx + (size_t)i * c;
                    for (Py_ssize_t j = c0; j < c1; j++) local[row[j]] += 1;
                }
            }
        }
        for (Py_ssize_t j = 0; j < c; j++) {
            const uint16_t *src = local + (size_t)j * stride;
            int64_t *dst = counts + (size_t)j * bins;
            for (uint32_t b = 0; b < bins; b++) dst[b] += src[b];
            outside += src[bins];
        }
    }
    return outside;
}

static PyObject *channel_histograms(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer x, scales, offsets, counts;
    int is_double;
    Py_ssize_t c;
    if (!PyArg_ParseTuple(args, "y*pny*y*w*", &x, &is_double, &c, &scales, &offsets, &counts)) {
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t item = is_double ? 8 : 4;
    if (c <= 0 || x.len % (item * c) != 0 || scales.len != 8 * c || offsets.len != 8 * c ||
        counts.len % (8 * c) != 0) {
        PyErr_SetString(PyExc_ValueError, "channel_histograms: buffer sizes do not match");
        goto done;
    }
    Py_ssize_t rows = x.len / (item * c), outside = 0;
    int64_t bins = (int64_t)(counts.len / (8 * c));
    if (bins <= 0 || c * CHANNEL_SLOTS(bins) > (int64_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "channel_histograms: too many counters");
        goto done;
    }
    uint16_t *local = malloc(sizeof(uint16_t) * (size_t)(c * CHANNEL_SLOTS(bins)));
    uint32_t *idx = malloc(sizeof(uint32_t) * (size_t)c * CHANNEL_ROWS);
    if (local == NULL || idx == NULL) {
        free(local);
        free(idx);
        PyErr_NoMemory();
        goto done;
    }
    const double *sc = (const double *)scales.buf;
    const int64_t *of = (const int64_t *)offsets.buf;
    int mode = is_double ? 2 : 0;
    for (Py_ssize_t j = 0; j < c && mode == 0; j++) {
        if (!(sc[j] >= 1.0) || of[j] > (1 << 24) || of[j] < -(1 << 24)) mode = 1;
    }
    float *sf = malloc(sizeof(float) * (size_t)c);
    int32_t *oi = malloc(sizeof(int32_t) * (size_t)c);
    if (sf == NULL || oi == NULL) {
        free(sf);
        free(oi);
        free(local);
        free(idx);
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < c; j++) {
        sf[j] = (float)sc[j]; /* a power of two >= 1 in mode 0: exact */
        oi[j] = (int32_t)of[j];
    }
    Py_BEGIN_ALLOW_THREADS;
    outside = channel_hist(x.buf, mode, rows, c, sc, of, sf, oi, (int64_t *)counts.buf,
                           (uint32_t)bins, local, idx);
    Py_END_ALLOW_THREADS;
    free(sf);
    free(oi);
    free(local);
    free(idx);
    result = PyLong_FromSsize_t(outside);
done:
    PyBuffer_Release(&x);
    PyBuffer_Release(&scales);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&counts);
    return result;
}

static PyMethodDef methods[] = {
    {"channel_extremes", channel_extremes, METH_VARARGS,
     "channel_extremes(x, is_double, channels, out_min, out_max) -> nonfinite count"},
    {"histogram", histogram, METH_VARARGS,
     "histogram(x, is_double, scale, offset, counts) -> count of values outside counts"},
    {"channel_histograms", channel_histograms, METH_VARARGS,
     "channel_histograms(x, is_double, channels, scales, offsets, counts) -> outside count"},
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
