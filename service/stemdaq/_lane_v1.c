/* The in-order lane, stream v1 (stemdaq._lane; see _lane.c and _v1.h): arm it with the patterns
 * of a usual v1 image (receiver/fast1.py, FastImageDecoder1.usual) and read an image's parts with
 * them. */
#include "_lane.h"

/* arm_v1((image, data, config), payload, n_parts) -> bool: take the v1 images these patterns
 * read (config None for three parts); payload as arm's. The times are nanoseconds. */
PyObject *stemdaq_lane_arm_v1(Lane *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "arm_v1(patterns, payload, n_parts) takes 3 arguments");
        return NULL;
    }
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Lane: not initialised");
        return NULL;
    }
    PyObject *pats = args[0], *pay = args[1];
    const long n_parts = PyLong_AsLong(args[2]);
    if (n_parts == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyTuple_Check(pats) || PyTuple_GET_SIZE(pats) != 3 || !PyTuple_Check(pay) ||
        PyTuple_GET_SIZE(pay) != 4 || (n_parts != 3 && n_parts != 4) ||
        (PyTuple_GET_ITEM(pats, 2) == Py_None) != (n_parts == 3)) {
        PyErr_SetString(PyExc_TypeError, "arm_v1((image, data, config or None), "
                                         "(header, n_blocks, bound, leftover), 3 or 4)");
        return NULL;
    }
    v1_pattern_t pat[3];
    memset(pat, 0, sizeof(pat));
    for (int i = 0; i < (int)n_parts - 1; i++) {
        if (v1_pattern_parse(PyTuple_GET_ITEM(pats, i), &pat[i]) < 0) {
            return NULL;
        }
    }
    PyObject *header = PyTuple_GET_ITEM(pay, 0);
    usual_t u;
    memset(&u, 0, sizeof(u));
    if (!PyBytes_Check(header)) {
        PyErr_SetString(PyExc_TypeError, "arm_v1: the payload header must be bytes");
        return NULL;
    }
    u.header = (const unsigned char *)PyBytes_AS_STRING(header);
    u.header_len = PyBytes_GET_SIZE(header);
    u.n_blocks = PyLong_AsSsize_t(PyTuple_GET_ITEM(pay, 1));
    u.bound = PyLong_AsLongLong(PyTuple_GET_ITEM(pay, 2));
    u.leftover = PyLong_AsSsize_t(PyTuple_GET_ITEM(pay, 3));
    if (PyErr_Occurred()) {
        return NULL;
    }
    int ints[3] = {0, 0, 0};
    for (int i = 0; i < (int)n_parts - 1; i++) {
        for (int j = 0; j < pat[i].n; j++) {
            ints[i] += pat[i].kind[j] == V1_INT;
        }
    }
    self->armed = 0;
    if (u.header_len != 12 || u.n_blocks < 0 || u.leftover < 0 || u.bound < 0 ||
        self->key >= 0 || ints[0] != 1 || ints[1] > 1 || (n_parts == 4 && ints[2] != 3)) {
        Py_RETURN_FALSE;
    }
    Py_INCREF(pats);
    Py_INCREF(pay);
    Py_XSETREF(self->layout, pats);
    Py_XSETREF(self->payload, pay);
    self->u = u;
    memcpy(self->pat, pat, sizeof(pat));
    self->v1 = 1;
    self->v1_parts = (int)n_parts;
    self->v1_size = ints[1];
    self->has_start = self->has_stop = self->has_real = n_parts == 4;
    self->armed = 1;
    Py_RETURN_TRUE;
}

/* The usual v1 image in the parts of views (3 or 4, as armed): 1 and r filled (value: image id,
 * start, stop and real time; start/stop: the data part's bounds) or 0. */
int stemdaq_lane_read_v1(Lane *self, const Py_buffer *views, usual_read_t *r)
{
    uint64_t size = 0, times[3] = {0, 0, 0};
    if (!v1_pattern_match(views[0].buf, views[0].len, &self->pat[0], &r->value[0], 1) ||
        !v1_pattern_match(views[1].buf, views[1].len, &self->pat[1], &size, self->v1_size) ||
        (self->v1_parts == 4 &&
         !v1_pattern_match(views[3].buf, views[3].len, &self->pat[2], times, 3))) {
        return 0;
    }
    const unsigned char *p = (const unsigned char *)views[2].buf;
    const Py_ssize_t len = views[2].len;
    if ((self->v1_size && size != (uint64_t)len) || len < 12 || memcmp(p, self->u.header, 12)) {
        return 0;
    }
    const Py_ssize_t walked = walk_blocks(p, len, 12, self->u.n_blocks, self->u.bound);
    if (walked < 0 || walked + self->u.leftover != len) {
        return 0;
    }
    r->value[1] = times[0];
    r->value[2] = times[1];
    r->value[3] = times[2];
    r->start = 0;
    r->stop = len;
    return 1;
}
