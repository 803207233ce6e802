/* stemdaq._lane: the in-order lane, one C call per usual frame (stemdaq.rank.lane). Stream v2
 * images are read as _hotpath.image reads them (_usual.h), stream v1 images with the patterns
 * of _v1.h (_lane_v1.c); the object's state is in _lane.h.
 *
 * While a series streams usual stream v2 images of one channel in scan order, the data
 * thread's Python work per frame (read the message, place the frame, hand it to the chunk
 * assembler, count it) is the same every time. Lane.push does it in one call: it reads the
 * message as _hotpath.image does (sections, integers, payload header, block walk: _usual.h),
 * takes the frame only if its scan position is not seen yet and is the next slot of the chunk
 * being filled (or the first slot of a chunk that is neither in the file nor waiting in the
 * Python chunk assembler; on the odd rows of a serpentine scan, which come last column first,
 * "next" and "first" go downwards), marks the position seen, and copies the frame's blocks into
 * the chunk (a reversed chunk is put in slot order once full).
 * Python writes the chunk when it is full (one write_direct_chunk, the Lane object is the
 * buffer) and then commit() marks the chunk's frames in the bookkeeping.
 *
 * push returns -1 for anything else, and the Python path (the reference: decoder, tracker,
 * RowChunker) takes the message; before it does, handover() gives it the frames of the chunk
 * being filled, so the Python path always sees every frame in arrival order. Tests run streams
 * through both paths and compare files, bookkeeping and counters (tests/test_lane.py).
 */
#include "_lane.h"

#include <time.h>


static double monotonic(void)
{
#if defined(CLOCK_MONOTONIC)
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
#endif
    return 0.0; /* no clock: the chunk looks old, Python hands it over at the next idle poll */
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t min_len,
                      const char *name)
{
    if (PyObject_GetBuffer(obj, view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        return -1;
    }
    if (view->len < min_len) {
        PyErr_Format(PyExc_ValueError, "Lane: %s holds %zd bytes, needs %zd", name, view->len,
                     min_len);
        PyBuffer_Release(view);
        view->obj = NULL;
        return -1;
    }
    return 0;
}

static void lane_release(Lane *self)
{
    Py_buffer *views[] = {&self->seen,    &self->in_file, &self->pending, &self->written,
                          &self->frame_id, &self->t_start, &self->t_stop,  &self->t_real,
                          &self->grid};
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) {
        if (views[i]->obj != NULL) {
            PyBuffer_Release(views[i]);
            views[i]->obj = NULL;
        }
    }
}

static void lane_dealloc(Lane *self)
{
    lane_release(self);
    Py_XDECREF(self->zero);
    Py_XDECREF(self->layout);
    Py_XDECREF(self->payload);
    PyMem_Free(self->slot_id);
    PyMem_Free(self->slot_start);
    PyMem_Free(self->slot_stop);
    PyMem_Free(self->slot_real);
    PyMem_Free(self->slot_off);
    PyMem_Free(self->buf);
    PyMem_Free(self->rev);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Lane(k, n_k, n_pos, serpentine, seen, in_file, pending, written, frame_id, t_start, t_stop,
 *      t_real, header, zero, grid) */
static int lane_init(Lane *self, PyObject *args, PyObject *kwds)
{
    (void)kwds;
    Py_ssize_t k, n_k, n_pos;
    int serpentine;
    PyObject *seen, *in_file, *pending, *written, *fid, *t0, *t1, *tr, *zero, *grid;
    const char *header;
    Py_ssize_t header_len;
    if (self->k) {
        PyErr_SetString(PyExc_RuntimeError, "Lane: initialised twice");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "nnnpOOOOOOOOy#SO:Lane", &k, &n_k, &n_pos, &serpentine, &seen,
                          &in_file, &pending, &written, &fid, &t0, &t1, &tr, &header,
                          &header_len, &zero, &grid)) {
        return -1;
    }
    if (k < 2 || k > (1 << 20) || n_k < 1 || n_pos < n_k || n_pos % n_k ||
        n_pos > PY_SSIZE_T_MAX / 16 || header_len != 12) {
        PyErr_SetString(PyExc_ValueError,
                        "Lane: 2 <= k <= 2**20, n_pos a multiple of n_k, 12-byte header");
        return -1;
    }
    self->k = k;
    self->n_k = n_k;
    self->n_pos = n_pos;
    self->per_row = (n_k + k - 1) / k;
    self->n_keys = (n_pos / n_k) * self->per_row;
    self->serpentine = serpentine;
    memcpy(self->header, header, 12);
    const Py_ssize_t n8 = 8 * n_pos;
    if (get_buffer(seen, &self->seen, 1, n_pos, "seen") < 0 ||
        get_buffer(in_file, &self->in_file, 0, self->n_keys, "in_file") < 0 ||
        get_buffer(pending, &self->pending, 0, self->n_keys, "pending") < 0 ||
        get_buffer(written, &self->written, 1, n_pos, "written") < 0 ||
        get_buffer(fid, &self->frame_id, 1, n8, "frame_id") < 0 ||
        get_buffer(t0, &self->t_start, 1, n8, "t_start") < 0 ||
        get_buffer(t1, &self->t_stop, 1, n8, "t_stop") < 0 ||
        get_buffer(tr, &self->t_real, 1, n8, "t_real") < 0) {
        return -1;
    }
    if (grid != Py_None) {
        if (get_buffer(grid, &self->grid, 0, n_pos, "grid") < 0) {
            return -1;
        }
        self->have_grid = 1;
    }
    Py_INCREF(zero);
    self->zero = zero;
    self->slot_id = PyMem_New(int64_t, k);
    self->slot_start = PyMem_New(uint64_t, k);
    self->slot_stop = PyMem_New(uint64_t, k);
    self->slot_real = PyMem_New(uint64_t, k);
    self->slot_off = PyMem_New(Py_ssize_t, k + 1);
    if (!self->slot_id || !self->slot_start || !self->slot_stop || !self->slot_real ||
        !self->slot_off) {
        PyErr_NoMemory();
        return -1;
    }
    self->ready = 1;
    return 0;
}

static PyObject *lane_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    Lane *self = (Lane *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->key = -1; /* no chunk; nothing works until __init__ completed (ready) */
    }
    return (PyObject *)self;
}

/* arm(layout, payload, start_den, stop_den, real_time) -> bool: take the images of this
 * layout (fast2's _Fixed.layout and _Template.payload); the denominators 0 and real_time None
 * where the series does not give them. False (not armed) where a value is not exact in a double
 * or the payload header is not the usual 12 bytes. */
static PyObject *lane_arm(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "arm(layout, payload, start_den, stop_den, real_time) takes 5 arguments");
        return NULL;
    }
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Lane: not initialised");
        return NULL;
    }
    usual_t u;
    if (usual_parse(args[0], args[1], &u) < 0) {
        return NULL;
    }
    const unsigned long long sd = PyLong_AsUnsignedLongLong(args[2]);
    const unsigned long long td = PyLong_AsUnsignedLongLong(args[3]);
    double real = 0.0;
    if (args[4] != Py_None) {
        real = PyFloat_AsDouble(args[4]);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    self->armed = 0;
    if (u.header_len != 12 || u.n_blocks < 0 || u.leftover < 0 || u.bound < 0 ||
        sd > MAX_EXACT || td > MAX_EXACT || self->key >= 0) {
        Py_RETURN_FALSE; /* a chunk being filled keeps the layout it was read with */
    }
    Py_INCREF(args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(self->layout, args[0]);
    Py_XSETREF(self->payload, args[1]);
    self->u = u;
    self->has_start = sd != 0;
    self->has_stop = td != 0;
    self->start_den = (double)sd;
    self->stop_den = (double)td;
    self->has_real = args[4] != Py_None;
    self->real_time = real;
    self->v1 = 0;
    self->armed = 1;
    Py_RETURN_TRUE;
}

static PyObject *lane_disarm(Lane *self, PyObject *unused)
{
    (void)unused;
    self->armed = 0;
    Py_RETURN_NONE;
}

/* room for total bytes in *buf of *cap; 0 when it cannot grow (exported, or no memory) */
static int reserve(Lane *self, unsigned char **buf, Py_ssize_t *cap, Py_ssize_t total)
{
    if (total <= *cap) {
        return 1;
    }
    if (self->exports > 0 || total > PY_SSIZE_T_MAX / 4) {
        return 0;
    }
    unsigned char *grown = PyMem_Realloc(*buf, 2 * total);
    if (grown == NULL) {
        return 0;
    }
    *buf = grown;
    *cap = 2 * total;
    return 1;
}

static long take(Lane *self, const usual_read_t *r, const unsigned char *p);

/* push(message) -> int: -1 not taken (the Python path reads it); else taken, with bit 1 set
 * when the chunk is full (write it, then commit()) and bit 2 when the summary wants the frame
 * (last() says which). message: one part (stream v2) or the list of a v1 image's parts. */
static PyObject *lane_push(Lane *self, PyObject *msg)
{
    if (!self->ready || !self->armed || self->exports > 0) {
        return PyLong_FromLong(-1);
    }
    Py_buffer views[4];
    memset(views, 0, sizeof(views));
    int nv = 0;
    usual_read_t r;
    memset(&r, 0, sizeof(r));
    long flags = -1;
    if (self->v1) {
        if (!PyList_CheckExact(msg) || PyList_GET_SIZE(msg) != self->v1_parts) {
            goto done;
        }
        for (; nv < self->v1_parts; nv++) {
            if (nv >= PyList_GET_SIZE(msg) || /* a buffer export may run Python code */
                PyObject_GetBuffer(PyList_GET_ITEM(msg, nv), &views[nv], PyBUF_SIMPLE) < 0) {
                PyErr_Clear(); /* not a byte buffer: the Python path says what it is */
                goto done;
            }
        }
        if (stemdaq_lane_read_v1(self, views, &r)) {
            flags = take(self, &r, views[2].buf);
        }
    } else {
        if (PyList_Check(msg) || PyObject_GetBuffer(msg, &views[0], PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            goto done;
        }
        nv = 1;
        /* bytes after the payload: fast2's own rule sends the message the Python path */
        if (usual_read(views[0].buf, views[0].len, &self->u, &r) && r.stop == views[0].len) {
            flags = take(self, &r, views[0].buf);
        }
    }
done:
    for (int i = 0; i < nv; i++) {
        PyBuffer_Release(&views[i]);
    }
    return PyLong_FromLong(flags);
}

/* Take the frame r read from p (its payload at p[r->start:r->stop]) into the chunk: the flags
 * push returns, or -1 when it is not the lane's (see the module comment). */
static long take(Lane *self, const usual_read_t *r, const unsigned char *p)
{
    long flags = -1;
    if (r->value[0] >= (uint64_t)self->n_pos ||
        (self->has_start && r->value[1] > MAX_EXACT) ||
        (self->has_stop && r->value[2] > MAX_EXACT) ||
        (self->v1 && self->has_real && r->value[3] > MAX_EXACT)) {
        goto done;
    }
    Py_ssize_t pos = (Py_ssize_t)r->value[0];
    if (self->serpentine) {
        const Py_ssize_t row = pos / self->n_k, col = pos % self->n_k;
        if (row & 1) {
            pos = row * self->n_k + (self->n_k - 1 - col);
        }
    }
    unsigned char *seen = (unsigned char *)self->seen.buf;
    if (seen[pos]) {
        goto done; /* a duplicate: the Python path counts it */
    }
    const Py_ssize_t row = pos / self->n_k, col = pos % self->n_k;
    const Py_ssize_t c = col / self->k, j = col % self->k;
    const Py_ssize_t blocks = r->stop - r->start - 12;
    if (blocks < 0) {
        goto done;
    }
    /* the chunk this frame would go into: the one being filled, or a new one; nothing of the
     * lane's state changes until the frame is taken */
    const int fresh = self->key < 0;
    const int dir = self->serpentine && (row & 1) ? -1 : 1;
    Py_ssize_t need = self->need, used = self->used;
    if (fresh) {
        /* a chunk in the file or waiting in RowChunker holds a frame already, so the lane
         * could never fill it: decline its frames now rather than hand them over later */
        const Py_ssize_t key = row * self->per_row + c;
        need = self->n_k - c * self->k < self->k ? self->n_k - c * self->k : self->k;
        if (j != (dir > 0 ? 0 : need - 1) || ((const unsigned char *)self->in_file.buf)[key] ||
            ((const unsigned char *)self->pending.buf)[key]) {
            goto done;
        }
        used = 12;
    } else if (self->filled == self->need || pos != self->first + self->dir * self->filled) {
        goto done; /* full and not committed yet, or not the next slot */
    }
    const Py_ssize_t filled = fresh ? 0 : self->filled;
    const int last = filled + 1 == need;
    const Py_ssize_t zeros = last ? (self->k - need) * PyBytes_GET_SIZE(self->zero) : 0;
    if (!reserve(self, &self->buf, &self->cap, used + blocks + (dir > 0 ? zeros : 0)) ||
        (dir < 0 && last && !reserve(self, &self->rev, &self->rev_cap, used + blocks + zeros))) {
        goto done;
    }
    if (fresh) {
        self->key = row * self->per_row + c;
        self->pos0 = row * self->n_k + c * self->k;
        self->first = pos;
        self->dir = dir;
        self->need = need;
        self->filled = 0;
        memcpy(self->buf, self->header, 12);
        self->used = 12;
        self->t0 = monotonic();
    }
    const Py_ssize_t f = self->filled;
    self->slot_off[f] = self->used;
    memcpy(self->buf + self->used, p + r->start + 12, blocks);
    self->used += blocks;
    self->slot_off[f + 1] = self->used;
    self->slot_id[f] = (int64_t)r->value[0];
    self->slot_start[f] = r->value[1];
    self->slot_stop[f] = r->value[2];
    self->slot_real[f] = r->value[3];
    self->filled = f + 1;
    seen[pos] = 1;
    self->frames += 1;
    self->bytes += r->stop - r->start;
    self->last_pos = pos;
    self->last_start = r->start;
    self->last_stop = r->stop;
    memcpy(self->last_value, r->value, sizeof(self->last_value));
    flags = 0;
    if (self->have_grid) {
        if (((const unsigned char *)self->grid.buf)[pos] >= self->min_class) {
            flags |= 2;
        } else {
            self->unwanted += 1;
        }
    }
    if (self->filled == self->need) {
        const Py_ssize_t zlen = PyBytes_GET_SIZE(self->zero);
        unsigned char *out = self->buf;
        Py_ssize_t at = self->used;
        if (self->dir < 0) { /* the blocks in slot order: the frames came last slot first */
            out = self->rev;
            memcpy(out, self->header, 12);
            at = 12;
            for (Py_ssize_t g = self->filled - 1; g >= 0; g--) {
                const Py_ssize_t len = self->slot_off[g + 1] - self->slot_off[g];
                memcpy(out + at, self->buf + self->slot_off[g], len);
                at += len;
            }
        }
        for (Py_ssize_t z = self->need; z < self->k; z++) {
            memcpy(out + at, PyBytes_AS_STRING(self->zero), zlen);
            at += zlen;
        }
        self->out = out;
        self->out_len = at;
        flags |= 1;
    }
done:
    return flags;
}

static void reset_chunk(Lane *self)
{
    self->key = -1;
    self->filled = 0;
    self->used = 0;
}

/* commit() -> (pos0, n, new): the full chunk is in the file: mark its n frames in the
 * bookkeeping (new: those not marked before) and start a new chunk. */
static PyObject *lane_commit(Lane *self, PyObject *unused)
{
    (void)unused;
    if (self->key < 0 || self->filled != self->need) {
        PyErr_SetString(PyExc_RuntimeError, "commit() without a full chunk");
        return NULL;
    }
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "commit() while the chunk is exported");
        return NULL;
    }
    unsigned char *written = (unsigned char *)self->written.buf;
    int64_t *fid = (int64_t *)self->frame_id.buf;
    double *t0 = (double *)self->t_start.buf, *t1 = (double *)self->t_stop.buf;
    double *tr = (double *)self->t_real.buf;
    Py_ssize_t fresh = 0;
    for (Py_ssize_t j = 0; j < self->filled; j++) {
        fresh += !written[self->first + self->dir * j];
    }
    PyObject *out = Py_BuildValue("(nnn)", self->pos0, self->filled, fresh);
    if (out == NULL) {
        return NULL; /* nothing marked: the chunk can still be committed or handed over */
    }
    for (Py_ssize_t j = 0; j < self->filled; j++) {
        const Py_ssize_t i = self->first + self->dir * j;
        written[i] = 1;
        fid[i] = self->slot_id[j];
        if (self->v1) { /* nanoseconds, as fast1: int * 1e-9 (exact ints below 2**53) */
            if (self->has_start) {
                t0[i] = (double)self->slot_start[j] * 1e-9;
                t1[i] = (double)self->slot_stop[j] * 1e-9;
                tr[i] = (double)self->slot_real[j] * 1e-9;
            }
            continue;
        }
        if (self->has_start) {
            t0[i] = (double)self->slot_start[j] / self->start_den;
        }
        if (self->has_stop) {
            t1[i] = (double)self->slot_stop[j] / self->stop_den;
        }
        if (self->has_real) {
            tr[i] = self->real_time;
        }
    }
    reset_chunk(self);
    return out;
}

/* handover() -> [(position, image_id, start, stop, real, payload bytes)]: the frames of the
 * chunk being filled, for the Python path; the lane starts a new chunk. */
static PyObject *lane_handover(Lane *self, PyObject *unused)
{
    (void)unused;
    if (self->exports > 0) {
        PyErr_SetString(PyExc_BufferError, "handover() while the chunk is exported");
        return NULL;
    }
    const Py_ssize_t n = self->key < 0 ? 0 : self->filled;
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        return NULL;
    }
    const unsigned char *frame_header = self->u.header;
    for (Py_ssize_t j = 0; j < n; j++) {
        const Py_ssize_t len = self->slot_off[j + 1] - self->slot_off[j];
        PyObject *payload = PyBytes_FromStringAndSize(NULL, 12 + len);
        if (payload == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        memcpy(PyBytes_AS_STRING(payload), frame_header, 12);
        memcpy(PyBytes_AS_STRING(payload) + 12, self->buf + self->slot_off[j], len);
        PyObject *item = Py_BuildValue("(nLKKKN)", self->first + self->dir * j,
                                       (long long)self->slot_id[j],
                                       (unsigned long long)self->slot_start[j],
                                       (unsigned long long)self->slot_stop[j],
                                       (unsigned long long)self->slot_real[j], payload);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, item);
    }
    reset_chunk(self);
    return out;
}

/* take_counts() -> (frames, bytes, unwanted) since the last call: frames taken, their payload
 * bytes, and how many of them the summary did not want. */
static PyObject *lane_take_counts(Lane *self, PyObject *unused)
{
    (void)unused;
    PyObject *out = Py_BuildValue("(LLL)", self->frames, self->bytes, self->unwanted);
    if (out != NULL) {
        self->frames = self->bytes = self->unwanted = 0;
    }
    return out;
}

/* last() -> (position, image_id, start, stop, real, payload_start, payload_end) of the last
 * frame taken (the payload in its message; v1: in the data part). */
static PyObject *lane_last(Lane *self, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("(nKKKKnn)", self->last_pos, (unsigned long long)self->last_value[0],
                         (unsigned long long)self->last_value[1],
                         (unsigned long long)self->last_value[2],
                         (unsigned long long)self->last_value[3], self->last_start,
                         self->last_stop);
}

static PyObject *lane_get_filled(Lane *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->key < 0 ? 0 : self->filled);
}

static PyObject *lane_get_pos0(Lane *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->key < 0 ? -1 : self->pos0);
}

static PyObject *lane_get_nbytes(Lane *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->key >= 0 && self->filled == self->need ? self->out_len
                                                                             : self->used);
}

static PyObject *lane_get_t0(Lane *self, void *closure)
{
    (void)closure;
    return PyFloat_FromDouble(self->t0);
}

static PyObject *lane_get_armed(Lane *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->armed);
}

static PyObject *lane_get_min_class(Lane *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(self->min_class);
}

static int lane_set_min_class(Lane *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "min_class cannot be deleted");
        return -1;
    }
    const long v = PyLong_AsLong(value);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    self->min_class = v < 0 ? 0 : v > 256 ? 256 : (int)v;
    return 0;
}

/* The buffer protocol: the full chunk (header and K block tables), for write_direct_chunk. */
static int lane_getbuffer(Lane *self, Py_buffer *view, int flags)
{
    if (self->key < 0 || self->filled != self->need) {
        PyErr_SetString(PyExc_BufferError, "Lane: no full chunk");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->out, self->out_len, 1, flags) <
        0) {
        view->obj = NULL;
        return -1;
    }
    self->exports++;
    return 0;
}

static void lane_releasebuffer(Lane *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static PyBufferProcs lane_as_buffer = {
    (getbufferproc)lane_getbuffer,
    (releasebufferproc)lane_releasebuffer,
};

static PyMethodDef lane_methods[] = {
    {"arm", (PyCFunction)(void (*)(void))lane_arm, METH_FASTCALL,
     "arm(layout, payload, start_den, stop_den, real_time) -> bool"},
    {"arm_v1", (PyCFunction)(void (*)(void))stemdaq_lane_arm_v1, METH_FASTCALL,
     "arm_v1((image, data, config or None), payload, n_parts) -> bool"},
    {"disarm", (PyCFunction)lane_disarm, METH_NOARGS, "take nothing until armed again"},
    {"push", (PyCFunction)lane_push, METH_O, "push(message) -> -1 (not taken) or flags"},
    {"commit", (PyCFunction)lane_commit, METH_NOARGS, "commit() -> (pos0, n, new)"},
    {"handover", (PyCFunction)lane_handover, METH_NOARGS,
     "handover() -> [(position, image_id, start, stop, real, payload)]"},
    {"take_counts", (PyCFunction)lane_take_counts, METH_NOARGS,
     "take_counts() -> (frames, bytes, unwanted)"},
    {"last", (PyCFunction)lane_last, METH_NOARGS,
     "last() -> (position, image_id, start, stop, real, payload_start, payload_end)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef lane_getset[] = {
    {"filled", (getter)lane_get_filled, NULL, "frames in the chunk being filled", NULL},
    {"pos0", (getter)lane_get_pos0, NULL, "the scan position of its slot 0 (-1: none)", NULL},
    {"nbytes", (getter)lane_get_nbytes, NULL, "its bytes so far (full: the chunk's)", NULL},
    {"t0", (getter)lane_get_t0, NULL, "time.monotonic() of its first frame", NULL},
    {"armed", (getter)lane_get_armed, NULL, "push takes frames", NULL},
    {"min_class", (getter)lane_get_min_class, (setter)lane_set_min_class,
     "the summary wants frames whose grid class is >= this", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "stemdaq._lane.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_dealloc = (destructor)lane_dealloc,
    .tp_as_buffer = &lane_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The in-order lane: one C call per usual frame (see stemdaq.rank.lane).",
    .tp_methods = lane_methods,
    .tp_getset = lane_getset,
    .tp_init = (initproc)lane_init,
    .tp_new = lane_new,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_lane", "The in-order lane (see stemdaq.rank.lane).", -1, NULL,
};

PyMODINIT_FUNC PyInit__lane(void)
{
    if (PyType_Ready(&LaneType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&LaneType);
    if (PyModule_AddObject(m, "Lane", (PyObject *)&LaneType) < 0) {
        Py_DECREF(&LaneType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
