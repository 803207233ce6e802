/* The bitshuffle-LZ4 / LZ4 block walk in C: stemdaq.receiver.blockwalk.walk.
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

#define PREFETCH_AHEAD 1024
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(addr) __builtin_prefetch((addr), 0, 3)
#else
#define PREFETCH(addr) ((void)0)
#endif

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
    const unsigned char *p = (const unsigned char *)view.buf;
    const Py_ssize_t end = view.len;
    Py_ssize_t result = -1;
    if (at >= 0 && n >= 0) {
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
        if (i == n) {
            result = at;
        }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(result);
}

static PyMethodDef methods[] = {
    {"walk", (PyCFunction)(void (*)(void))walk, METH_FASTCALL,
     "walk(buffer, start, n_blocks, bound) -> offset after the blocks, or -1"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_blockwalk", "The compressed-block walk of stemdaq's framing check.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__blockwalk(void) { return PyModule_Create(&module); }
