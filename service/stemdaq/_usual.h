/* The C lines shared by stemdaq._hotpath and stemdaq._lane: the walk over a compressed frame's
 * block table and the read of a usual stream v2 image message (see _hotpath.c for both, and
 * receiver/fast2.py for the Python reference of the read). Header-only: each module gets its
 * own static copy.
 */
#ifndef STEMDAQ_USUAL_H
#define STEMDAQ_USUAL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A frame fresh from the network is not in this core's caches, and each block size says where
 * the next one is: a chain of dependent loads, one memory latency (~160 ns here) per block. So
 * the walk asks for the lines up to PREFETCH_AHEAD bytes ahead of where it is (measured 512 to
 * 4096 bytes ahead: 1024 is best; bench/walk.py --cold). */
#define PREFETCH_AHEAD 1024
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(addr) __builtin_prefetch((addr), 0, 3)
#else
#define PREFETCH(addr) ((void)0)
#endif

/* The offset after n blocks from at, or -1 when a size is 0 or above bound, or a size field
 * lies past end. The blocks themselves may end past end: the caller compares the offset. */
static inline Py_ssize_t walk_blocks(const unsigned char *p, Py_ssize_t end, Py_ssize_t at,
                                     Py_ssize_t n, long long bound)
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

/* A big-endian unsigned integer of len (1, 2, 4 or 8) bytes. */
static inline uint64_t be_uint(const unsigned char *p, Py_ssize_t len)
{
    uint64_t v = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* The usual image of a series: fast2's _Fixed.layout and _Template.payload, unpacked. The
 * pointers point into the bytes objects of those tuples: whoever holds a usual_t holds them. */
typedef struct {
    const unsigned char *c[4];
    Py_ssize_t clen[4];
    Py_ssize_t o[4];
    Py_ssize_t length_at, size;
    const unsigned char *header;
    Py_ssize_t header_len;
    Py_ssize_t n_blocks, leftover;
    long long bound;
} usual_t;

/* What a usual image holds: image id, start and stop numerators, the payload's bounds. */
typedef struct {
    uint64_t value[4]; /* image id, start and stop numerators (v1: and real time) */
    Py_ssize_t start, stop;
} usual_read_t;

/* Unpack layout (c1, o2, c2, o3, c3, o4, c4, length_at, size) and payload (header, n_blocks,
 * bound, leftover); -1 with a TypeError or ValueError set when they are not that. */
static inline int usual_parse(PyObject *lay, PyObject *pay, usual_t *u)
{
    if (!PyTuple_Check(lay) || PyTuple_GET_SIZE(lay) != 9 || !PyTuple_Check(pay) ||
        PyTuple_GET_SIZE(pay) != 4) {
        PyErr_SetString(PyExc_TypeError, "layout (c1, o2, c2, o3, c3, o4, c4, length_at, size) "
                                         "and payload (header, n_blocks, bound, leftover)");
        return -1;
    }
    for (int k = 0; k < 4; k++) {
        PyObject *c = PyTuple_GET_ITEM(lay, 2 * k);
        if (!PyBytes_Check(c) || PyBytes_GET_SIZE(c) < 1) {
            PyErr_SetString(PyExc_TypeError, "image: sections must be non-empty bytes");
            return -1;
        }
        u->c[k] = (const unsigned char *)PyBytes_AS_STRING(c);
        u->clen[k] = PyBytes_GET_SIZE(c);
    }
    PyObject *header = PyTuple_GET_ITEM(pay, 0);
    if (!PyBytes_Check(header)) {
        PyErr_SetString(PyExc_TypeError, "image: the payload header must be bytes");
        return -1;
    }
    u->header = (const unsigned char *)PyBytes_AS_STRING(header);
    u->header_len = PyBytes_GET_SIZE(header);
    u->o[0] = 0;
    u->o[1] = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 1));
    u->o[2] = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 3));
    u->o[3] = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 5));
    u->length_at = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 7));
    u->size = PyLong_AsSsize_t(PyTuple_GET_ITEM(lay, 8));
    u->n_blocks = PyLong_AsSsize_t(PyTuple_GET_ITEM(pay, 1));
    u->bound = PyLong_AsLongLong(PyTuple_GET_ITEM(pay, 2));
    u->leftover = PyLong_AsSsize_t(PyTuple_GET_ITEM(pay, 3));
    return PyErr_Occurred() ? -1 : 0;
}

/* True when the len bytes of want lie at p[at] within the first limit bytes. */
static inline int has_at(const unsigned char *p, Py_ssize_t limit, Py_ssize_t at,
                         const unsigned char *want, Py_ssize_t len)
{
    return at >= 0 && at <= limit - len && memcmp(p + at, want, len) == 0;
}

/* 1 and r filled when the end bytes at p are a usual image of u, else 0: the sections match,
 * each integer fills 1, 2, 4 or 8 bytes, the payload's length is a definite byte string
 * header, the payload starts with the usual header and lies within the message, and its blocks
 * walk to its end. Only the first size bytes are looked at for the head, as fast2 does. */
static inline int usual_read(const unsigned char *p, Py_ssize_t end, const usual_t *u,
                             usual_read_t *r)
{
    const Py_ssize_t limit = end < u->size ? end : u->size;
    for (int k = 0; k < 4; k++) {
        if (!has_at(p, limit, u->o[k], u->c[k], u->clen[k])) {
            return 0;
        }
    }
    for (int k = 0; k < 3; k++) { /* each integer fills the bytes between a section and the next */
        const Py_ssize_t from = u->o[k] + u->clen[k], len = u->o[k + 1] - from;
        if (len != 1 && len != 2 && len != 4 && len != 8) {
            return 0;
        }
        r->value[k] = be_uint(p + from, len);
    }
    const Py_ssize_t at = u->length_at;
    if (at < 0 || at >= limit) {
        return 0;
    }
    const unsigned char h = p[at];
    Py_ssize_t n = 0, bytes = 0;
    if (h >= 0x40 && h <= 0x57) {
        n = 1;
        bytes = h - 0x40;
    } else if (h >= 0x58 && h <= 0x5A) {
        n = h == 0x58 ? 2 : h == 0x59 ? 3 : 5;
        if (at + n > limit) {
            return 0;
        }
        bytes = (Py_ssize_t)be_uint(p + at + 1, n - 1);
    } else {
        return 0;
    }
    const Py_ssize_t start = at + n;
    if (bytes < 0 || !has_at(p, limit, start, u->header, u->header_len) || bytes > end - start) {
        return 0;
    }
    const Py_ssize_t stop = start + bytes;
    const Py_ssize_t walked = walk_blocks(p, end, start + 12, u->n_blocks, u->bound);
    if (walked < 0 || walked + u->leftover != stop) {
        return 0;
    }
    r->start = start;
    r->stop = stop;
    return 1;
}

#endif
