/* stemdaq's per-frame work in C: the block walk of the framing check (walk) and the stream v2
 * fast path's reading of a usual image message (image). Each has its Python reference, which
 * also runs where this module was not built (no C compiler); tests compare both.
 *
 * walk: stemdaq.receiver.blockwalk.walk.
 *
 * A bitshuffle-LZ4 (HDF5 filter 32008) or LZ4 (32004) chunk is a 12-byte header followed by
 * blocks, each a big-endian u32 compressed size and that many bytes. The framing check of every
 * detector-compressed frame walks those sizes; in Python that costs ~0.1 us a block (77 us for
 * a 1024x1024 uint32 frame of 512 blocks), here ~0.01 us. The Python loop in blockwalk.py is the
 * reference and the fallback where this module was not built; tests compare both.
 *
 * A frame fresh from the network is not in this core's caches, and each size says where the next
 * one is: a chain of dependent loads, one memory latency (~160 ns here) per block: 10 us for a
 * 512x512 frame, 61 us for a 1024x1024 uint32 one (bench/walk.py --cold). So the walk asks for
 * the lines up to PREFETCH_AHEAD bytes ahead of where it is: they arrive while it walks
 * (512x512 10.6 -> 2.1 us, 1024x1024 uint32 69 -> 6.8 us), and the copy of the frame into its
 * chunk that follows finds them in the cache. Measured 512 to 4096 bytes ahead: 1024 is best.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PREFETCH_AHEAD 1024
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(addr) __builtin_prefetch((addr), 0, 3)
#else
#define PREFETCH(addr) ((void)0)
#endif

/* The offset after n blocks from at, or -1 (see walk below). */
static Py_ssize_t walk_blocks(const unsigned char *p, Py_ssize_t end, Py_ssize_t at, Py_ssize_t n,
                              long long bound)
{
    if (at < 0 || n < 0) {
        return -1;
    }
    Py_ssize_t i = 0;
    Py_ssize_t ahead = at - at % 64; /* the next line not yet asked for */
    for (; i < n; i++) {
        const Py_ssize_t until = at < end - PREFETCH_AHEAD ? at + PREFETCH_AHEAD : end;
        for (; ahead < until; ahead += 64) {
            PREFETCH(p + ahead);
        }
        if (at > end - 4) {
            break;
        }
        const uint32_t size = ((uint32_t)p[at] << 24) | ((uint32_t)p[at + 1] << 16) |
                              ((uint32_t)p[at + 2] << 8) | (uint32_t)p[at + 3];
        if (size == 0 || (long long)size > bound) {
            break;
        }
        if ((uint64_t)size > (uint64_t)(PY_SSIZE_T_MAX - 4 - at)) {
            break; /* past any buffer (only reachable where Py_ssize_t is 32 bits) */
        }
        at += 4 + (Py_ssize_t)size;
    }
    return i == n ? at : -1;
}

/* walk(buffer, start, n_blocks, bound) -> int: the offset after n_blocks blocks starting at
 * start, or -1 when a size is 0 or above bound, or a size field lies past the buffer's end.
 * The blocks themselves may end past the buffer: the caller compares the offset with the
 * payload's end, as the Python walk does. */
static PyObject *walk(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "walk(buffer, start, n_blocks, bound) takes 4 arguments");
        return NULL;
    }
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    Py_ssize_t n = PyLong_AsSsize_t(args[2]);
    long long bound = PyLong_AsLongLong(args[3]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t result = walk_blocks((const unsigned char *)view.buf, view.len, at, n, bound);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(result);
}

/* A big-endian unsigned integer of len (1, 2, 4 or 8) bytes. */
static uint64_t be_uint(const unsigned char *p, Py_ssize_t len)
{
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* True when the len bytes of want lie at p[at] within the first limit bytes. */
static int has_at(const unsigned char *p, Py_ssize_t limit, Py_ssize_t at, PyObject *want)
{
    const Py_ssize_t len = PyBytes_GET_SIZE(want);
    return at >= 0 && at <= limit - len && memcmp(p + at, PyBytes_AS_STRING(want), len) == 0;
}

/* image(buffer, layout, payload) -> (image_id, start_num, stop_num, payload_start, payload_end)
 * or None: the stream v2 fast path's usual case (receiver/fast2.py, FastImageDecoder.decode,
 * whose Python lines are the reference and read every image this returns None for).
 *
 * layout: (c1, o2, c2, o3, c3, o4, c4, length_at, size), a _Fixed: the series-constant sections
 * c1..c4 at offsets 0, o2, o3, o4 of the message (each ending with the header byte of the
 * integer after it, whose value fills the bytes up to the next section), the payload's byte
 * string header at length_at; only the first size bytes are looked at, as the Python copy does.
 * payload: (header, n_blocks, bound, leftover): the usual 12-byte bitshuffle-LZ4 header of the
 * series and its walk. None unless the sections match, the payload's length is a definite
 * byte string header, the payload starts with the usual header and lies within the message,
 * and its blocks walk to its end. */
static PyObject *image(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyTuple_Check(args[1]) || PyTuple_GET_SIZE(args[1]) != 9 ||
        !PyTuple_Check(args[2]) || PyTuple_GET_SIZE(args[2]) != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "image(buffer, (c1, o2, c2, o3, c3, o4, c4, length_at, size), "
                        "(header, n_blocks, bound, leftover))");
        return NULL;
    }
    PyObject *lay = args[1], *pay = args[2];
    PyObject *c[4] = {PyTuple_GET_ITEM(lay, 0), PyTuple_GET_ITEM(lay, 2), PyTuple_GET_ITEM(lay, 4),
                      PyTuple_GET_ITEM(lay, 6)};
    PyObject *header = PyTuple_GET_ITEM(pay, 0);
    for (int k = 0; k < 4; k++) {
        if (!PyBytes_Check(c[k]) || PyBytes_GET_SIZE(c[k]) < 1) {
            PyErr_SetString(PyExc_TypeError, "image: sections must be non-empty bytes");
            return NULL;
        }
    }
    if (!PyBytes_Check(header)) {
        PyErr_SetString(PyExc_TypeError, "image: the payload header must be bytes");
        return NULL;
    }
    Py_ssize_t o[4] = {0, PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 1)),
                       PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 3)),
                       PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 5))};
    Py_ssize_t length_at = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 7));
    Py_ssize_t size = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 8));
    Py_ssize_t n_blocks = PyLong_AsSsize_t(PyTuple_GET_ITEM(pay, 1));
    long long bound = PyLong_AsLongLong(PyTuple_GET_ITEM(pay, 2));
    Py_ssize_t leftover = PyLong_AsSsize_t(PyTuple_GET_ITEM(pay, 3));
    if (PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf;
    const Py_ssize_t end = view.len;
    const Py_ssize_t limit = end < size ? end : size;
    uint64_t value[3];
    Py_ssize_t start = -1, stop = -1;
    int ok = 1;
    for (int k = 0; k < 4 && ok; k++) {
        ok = has_at(p, limit, o[k], c[k]);
    }
    if (ok) { /* each integer fills the bytes between a section and the next: 1, 2, 4 or 8 */
        for (int k = 0; k < 3 && ok; k++) {
            const Py_ssize_t from = o[k] + PyBytes_GET_SIZE(c[k]), len = o[k + 1] - from;
            ok = len == 1 || len == 2 || len == 4 || len == 8;
            if (ok) {
                value[k] = be_uint(p + from, len);
            }
        }
    }
    if (ok && length_at >= 0 && length_at < limit) {
        const unsigned char h = p[length_at];
        Py_ssize_t n = 0, bytes = 0;
        if (h >= 0x40 && h <= 0x57) {
            n = 1;
            bytes = h - 0x40;
        } else if (h >= 0x58 && h <= 0x5A) {
            n = h == 0x58 ? 2 : h == 0x59 ? 3 : 5;
            if (length_at + n <= limit) {
                bytes = (Py_ssize_t)be_uint(p + length_at + 1, n - 1);
            } else {
                n = 0;
            }
        }
        start = length_at + n;
        if (n && bytes >= 0 && has_at(p, limit, start, header) && bytes <= end - start) {
            stop = start + bytes;
            const Py_ssize_t at = walk_blocks(p, end, start + 12, n_blocks, bound);
            if (at < 0 || at + leftover != stop) {
                stop = -1;
            }
        }
    }
    PyBuffer_Release(&view);
    if (stop < 0) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(KKKnn)", (unsigned long long)value[0], (unsigned long long)value[1],
                         (unsigned long long)value[2], start, stop);
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "walk(buffer, start, n_blocks, bound) -> offset after the blocks, or -1"},
    {"image", (PyCFunction)(void (*)(void))image, METH_FASTCALL,
     "image(buffer, layout, payload) -> (image_id, start, stop, payload_start, payload_end) "
     "or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hotpath", "stemdaq's per-frame work in C (see stemdaq.receiver).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__hotpath(void) { return PyModule_Create(&module); }
