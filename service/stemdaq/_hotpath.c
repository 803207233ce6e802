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
 *
 * The walk and the image read live in _usual.h, shared with stemdaq._lane (the in-order lane).
 */
#include "_usual.h"

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
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "image(buffer, layout, payload) takes 3 arguments");
        return NULL;
    }
    usual_t u;
    if (usual_parse(args[1], args[2], &u) < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    usual_read_t r;
    const int ok = usual_read((const unsigned char *)view.buf, view.len, &u, &r);
    PyBuffer_Release(&view);
    if (!ok) {
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(KKKnn)", (unsigned long long)r.value[0], (unsigned long long)r.value[1],
                         (unsigned long long)r.value[2], r.start, r.stop);
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
